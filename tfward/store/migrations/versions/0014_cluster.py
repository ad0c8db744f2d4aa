"""Several daemons on one database: daemons and their heartbeats, workspace leases (owner,
epoch, expiry), and which daemon claimed an outbox row (docs/architecture.md §15).

Revision ID: 0014_cluster
Revises: 0013_speed
Create Date: 2026-11-30 13:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0014_cluster"
down_revision = "0013_speed"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cluster_nodes",
        sa.Column("node_id", sa.String(length=200), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("data_dir", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("api_url", sa.Text(), nullable=True),
        sa.Column("started_at", sa.String(length=32), nullable=False),
        sa.Column("heartbeat_at", sa.String(length=32), nullable=False),
        sa.Column("left_at", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_cluster_nodes")),
    )
    op.create_table(
        "workspace_leases",
        sa.Column("workspace_id", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=True),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.String(length=32), nullable=True),
        sa.Column("acquired_at", sa.String(length=32), nullable=True),
        sa.Column("taken_from", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_workspace_leases_workspace_id_workspaces"),
        ),
        sa.PrimaryKeyConstraint("workspace_id", name=op.f("pk_workspace_leases")),
    )
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("claimed_by")
    op.drop_table("workspace_leases")
    op.drop_table("cluster_nodes")
