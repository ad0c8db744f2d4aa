"""Speed: `terraform show -json` beside the apply (issue 15).

An auto-applied run that nothing reviews before its apply starts the apply while `terraform
show -json` runs beside it (docs/architecture.md §3). Its plan is stored before the JSON exists,
so `plan_artifacts.plan_json` (and its sha256) may be NULL: the JSON has not been stored yet, or
`show -json` was stopped with its run. `runs.plan_json_error` says why a run went on without its
plan JSON (a speculative plan's, or one beside the apply, whose `show -json` failed).
(Later `show -json` moved after the run, as the outbox job `plan_json`; these columns serve it
unchanged: NULL until the job stored the JSON.)

Revision ID: 0013_speed
Revises: 0012_web
Create Date: 2026-11-30 16:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_speed"
down_revision = "0012_web"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("plan_json_error", sa.Text(), nullable=True))
    with op.batch_alter_table("plan_artifacts") as batch:
        batch.alter_column("plan_json", existing_type=sa.LargeBinary(), nullable=True)
        batch.alter_column("plan_json_sha256", existing_type=sa.String(length=64), nullable=True)


def downgrade() -> None:
    # A plan whose JSON never came is given the document a failed `show -json` leaves: null.
    plan_artifacts = sa.table(
        "plan_artifacts",
        sa.column("plan_json", sa.LargeBinary()),
        sa.column("plan_json_sha256", sa.String(length=64)),
    )
    op.execute(
        plan_artifacts.update()
        .where(plan_artifacts.c.plan_json.is_(None))
        .values(
            plan_json=b"null",
            # sha256(b"null")
            plan_json_sha256="74234e98afe7498fb5daf1f36ac2d78acc339464f950703b8c019892f982b90b",
        )
    )
    with op.batch_alter_table("plan_artifacts") as batch:
        batch.alter_column("plan_json_sha256", existing_type=sa.String(length=64), nullable=False)
        batch.alter_column("plan_json", existing_type=sa.LargeBinary(), nullable=False)
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("plan_json_error")
