"""Terraform's http backend: lock IDs and lock info on workspace locks, who wrote a state
version, and the per-run credentials that read other workspaces' state.

A lock taken through the backend keeps terraform's lock ID (only that ID may write the state
or unlock) and its lock info (operation, who, info). `state_versions.created_by` names the API
token that posted a state. `run_credentials` holds one row per credential a run was given:
the SHA-256 of the token (never the token), the workspaces it may read, and when it was revoked.

Revision ID: 0009_backend
Revises: 0008_plan
Create Date: 2026-11-30 09:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_backend"
down_revision = "0008_plan"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workspace_locks") as batch:
        batch.add_column(sa.Column("lock_id", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("operation", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("who", sa.String(length=256), nullable=True))
        batch.add_column(sa.Column("info", sa.Text(), nullable=True))
    with op.batch_alter_table("state_versions") as batch:
        batch.add_column(sa.Column("created_by", sa.String(length=128), nullable=True))
    op.create_table(
        "run_credentials",
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("workspace_id", sa.String(length=32), nullable=False),
        sa.Column("scope", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("revoked_at", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_credentials_run_id_runs")
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_run_credentials_workspace_id_workspaces"),
        ),
        sa.PrimaryKeyConstraint("token_sha256", name=op.f("pk_run_credentials")),
    )
    with op.batch_alter_table("run_credentials") as batch:
        batch.create_index("ix_run_credentials_run", ["run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("run_credentials") as batch:
        batch.drop_index("ix_run_credentials_run")
    op.drop_table("run_credentials")
    with op.batch_alter_table("state_versions") as batch:
        batch.drop_column("created_by")
    with op.batch_alter_table("workspace_locks") as batch:
        batch.drop_column("info")
        batch.drop_column("who")
        batch.drop_column("operation")
        batch.drop_column("lock_id")
