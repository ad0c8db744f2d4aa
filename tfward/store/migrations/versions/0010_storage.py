"""Storage faults: how far each log chunk got into its output file, and the storage probe.

A run's log is stored in chunks; a chunk holding terraform output now records the output file
it came from (`source`, a name in the run directory's `.tfward/`) and the byte offset the log
holds that file up to (`source_end`), so a log that had to drop lines from memory while the
database was down, and recovery after a crash, append exactly the rest of the file: no line
lost, none twice. `storage_probe` is one row the storage probe rewrites while storage fails.

Revision ID: 0010_storage
Revises: 0009_backend
Create Date: 2026-11-30 12:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_storage"
down_revision = "0009_backend"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run_log_chunks") as batch:
        batch.add_column(sa.Column("source", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("source_end", sa.Integer(), nullable=True))
    op.create_table(
        "storage_probe",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("probed_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_storage_probe")),
    )


def downgrade() -> None:
    op.drop_table("storage_probe")
    with op.batch_alter_table("run_log_chunks") as batch:
        batch.drop_column("source_end")
        batch.drop_column("source")
