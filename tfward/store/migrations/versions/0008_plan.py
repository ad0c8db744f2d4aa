"""Error classes of failed runs, and the audit trail of admin actions.

`runs.error_class` says whether a failure is `transient` or `permanent`; `audit_events` is the
append-only record of what admins did (who, when, what, the outcome).

Revision ID: 0008_plan
Revises: 0007_security
Create Date: 2026-11-30 08:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_plan"
down_revision = "0007_security"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("error_class", sa.String(length=16), nullable=True))
    op.create_table(
        "audit_events",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=256), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
        sa.UniqueConstraint("seq", name=op.f("uq_audit_events_seq")),
    )
    with op.batch_alter_table("audit_events") as batch:
        batch.create_index("ix_audit_events_action", ["action"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_index("ix_audit_events_action")
    op.drop_table("audit_events")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("error_class")
