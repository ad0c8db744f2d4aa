"""Run events: each log chunk records the byte offset in the run's log where it starts.

A follower of a run's event stream names the byte offset it has read up to (`Last-Event-ID`);
`log_offset` finds the chunk holding it without reading the log from the start. Chunks already
stored get their offsets here, counted run by run in `seq` order. The column stays nullable:
making it NOT NULL would make SQLite copy every stored log into a new table at the first start
(time, and as much free disk again); the store writes it on every new chunk.

Revision ID: 0011_events
Revises: 0010_storage
Create Date: 2026-12-01 12:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_events"
down_revision = "0010_storage"
branch_labels = None
depends_on = None

_BATCH = 500  # chunks per UPDATE round trip while counting offsets

chunks = sa.table(
    "run_log_chunks",
    sa.column("run_id", sa.String),
    sa.column("seq", sa.Integer),
    sa.column("data", sa.LargeBinary),
    sa.column("log_offset", sa.BigInteger),
)


def upgrade() -> None:
    with op.batch_alter_table("run_log_chunks") as batch:
        batch.add_column(sa.Column("log_offset", sa.BigInteger(), nullable=True))
    conn = op.get_bind()
    sizes = conn.execute(
        sa.select(chunks.c.run_id, chunks.c.seq, sa.func.length(chunks.c.data)).order_by(
            chunks.c.run_id, chunks.c.seq
        )
    )
    update = (
        sa.update(chunks)
        .where(chunks.c.run_id == sa.bindparam("r"), chunks.c.seq == sa.bindparam("s"))
        .values(log_offset=sa.bindparam("o"))
    )
    pending: list[dict[str, object]] = []
    run_id, offset = None, 0
    for rid, seq, size in sizes.all():
        if rid != run_id:
            run_id, offset = rid, 0
        pending.append({"r": rid, "s": seq, "o": offset})
        offset += int(size or 0)
        if len(pending) >= _BATCH:
            conn.execute(update, pending)
            pending = []
    if pending:
        conn.execute(update, pending)


def downgrade() -> None:
    with op.batch_alter_table("run_log_chunks") as batch:
        batch.drop_column("log_offset")
