"""The web page: server-side sessions, and the timeline of each run's statuses and stages.

`web_sessions` holds one row per signed-in browser: the SHA-256 of the random id its cookie
carries (never the id), the API token it signed in with (its SHA-256, name and role), when it
was created, last seen and when it ends at the latest. `run_timeline` holds one row per change
of a run's status or stage, written in the transaction that saves the change, so the run page
can show each stage with its duration.

Revision ID: 0013_web
Revises: 0011_events
Create Date: 2026-12-01 09:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_web"
down_revision = "0011_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id_sha256", sa.String(length=64), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("token_name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("last_seen_at", sa.String(length=32), nullable=False),
        sa.Column("expires_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id_sha256", name=op.f("pk_web_sessions")),
    )
    with op.batch_alter_table("web_sessions") as batch:
        batch.create_index("ix_web_sessions_token", ["token_sha256"], unique=False)
    op.create_table(
        "run_timeline",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("stage", sa.String(length=24), nullable=True),
        sa.Column("at", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_run_timeline_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_timeline")),
    )
    with op.batch_alter_table("run_timeline") as batch:
        batch.create_index("ix_run_timeline_run", ["run_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("run_timeline") as batch:
        batch.drop_index("ix_run_timeline_run")
    op.drop_table("run_timeline")
    with op.batch_alter_table("web_sessions") as batch:
        batch.drop_index("ix_web_sessions_token")
    op.drop_table("web_sessions")
