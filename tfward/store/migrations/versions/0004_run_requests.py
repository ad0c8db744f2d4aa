"""Discard requests recorded on the run; joins the two schema branches into one head.

A discard is recorded by the request that makes it (compare-and-set on the run, like confirm),
so the first of confirm and discard wins and a read after the answer shows it. The termination
funnel still makes the run `discarded`.

Revision ID: 0004_run_requests
Revises: 0002_followups, 0003_releases
Create Date: 2026-11-30 06:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_run_requests"
down_revision = ("0002_followups", "0003_releases")
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("discard_requested_at", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("discard_requested_by", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("discard_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("discard_reason")
        batch.drop_column("discard_requested_by")
        batch.drop_column("discard_requested_at")
