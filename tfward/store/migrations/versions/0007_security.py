"""State outputs sealed at rest.

`state_versions.outputs` was a JSON column, stored as shown: an output holding a secret value
that terraform was never told is sensitive sat in the database (and its WAL) in clear. It
becomes a binary column holding the outputs' JSON sealed with AES-256-GCM, like the state
itself (store/sealing.py, purpose `state_outputs`). A migration has no key, so this one copies
each row's JSON as plain bytes; the daemon seals them at its next start (`seal_plain_rows`), as
it does for states and plans written before sealing existed.

Downgrade brings the JSON column back from plain rows; a sealed row cannot be opened here and
comes back as `{}` (its state, sealed, still holds the outputs).

Revision ID: 0007_security
Revises: 0004_run_requests
Create Date: 2026-11-30 12:00:00.000000
"""

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007_security"
down_revision = "0004_run_requests"
branch_labels = None
depends_on = None

_MAGIC = b"tfw-sealed-v1:"  # store/sealing.py MAGIC, frozen here with the migration


def _table(*columns: sa.ColumnClause[Any]) -> sa.TableClause:
    return sa.table("state_versions", sa.column("id", sa.String(32)), *columns)


def upgrade() -> None:
    with op.batch_alter_table("state_versions") as batch:
        batch.add_column(sa.Column("outputs_sealed", sa.LargeBinary(), nullable=True))
    table = _table(sa.column("outputs", sa.JSON()), sa.column("outputs_sealed", sa.LargeBinary()))
    bind = op.get_bind()
    for row in bind.execute(sa.select(table.c.id, table.c.outputs)).all():
        plain = json.dumps(row.outputs or {}, ensure_ascii=False).encode()
        bind.execute(sa.update(table).where(table.c.id == row.id).values(outputs_sealed=plain))
    with op.batch_alter_table("state_versions") as batch:
        batch.drop_column("outputs")
        batch.alter_column(
            "outputs_sealed",
            new_column_name="outputs",
            existing_type=sa.LargeBinary(),
            nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("state_versions") as batch:
        batch.add_column(sa.Column("outputs_json", sa.JSON(), nullable=True))
    table = _table(sa.column("outputs", sa.LargeBinary()), sa.column("outputs_json", sa.JSON()))
    bind = op.get_bind()
    for row in bind.execute(sa.select(table.c.id, table.c.outputs)).all():
        blob = bytes(row.outputs)
        shown = {} if blob.startswith(_MAGIC) else json.loads(blob)
        bind.execute(sa.update(table).where(table.c.id == row.id).values(outputs_json=shown))
    with op.batch_alter_table("state_versions") as batch:
        batch.drop_column("outputs")
        batch.alter_column(
            "outputs_json", new_column_name="outputs", existing_type=sa.JSON(), nullable=False
        )
