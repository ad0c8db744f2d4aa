"""Follow-ups: notification delivery log, inventory, workspace drift, run-trigger links and
refresh-only (drift check) runs.

Revision ID: 0002_followups
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_followups"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification_deliveries",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("outbox_id", sa.String(length=32), nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("workspace_id", sa.String(length=32), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("delivered", sa.Boolean(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_deliveries")),
    )
    with op.batch_alter_table("notification_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_notification_deliveries_created", ["created_at"], unique=False)
        batch_op.create_index("ix_notification_deliveries_outbox", ["outbox_id"], unique=False)

    op.create_table(
        "inventory_resources",
        sa.Column("workspace_id", sa.String(length=32), nullable=False),
        sa.Column("address", sa.String(length=512), nullable=False),
        sa.Column("state_version_id", sa.String(length=32), nullable=False),
        sa.Column("serial", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("type", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("module", sa.String(length=256), nullable=True),
        sa.Column("provider", sa.String(length=256), nullable=False),
        sa.Column("index_key", sa.JSON(), nullable=True),
        sa.Column("resource_id", sa.String(length=512), nullable=True),
        sa.Column("synced_at", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_inventory_resources_workspace_id_workspaces"),
        ),
        sa.PrimaryKeyConstraint("workspace_id", "address", name=op.f("pk_inventory_resources")),
    )
    with op.batch_alter_table("inventory_resources", schema=None) as batch_op:
        batch_op.create_index("ix_inventory_resources_type", ["type"], unique=False)

    op.create_table(
        "inventory_syncs",
        sa.Column("workspace_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("synced_state_version_id", sa.String(length=32), nullable=True),
        sa.Column("synced_serial", sa.Integer(), nullable=True),
        sa.Column("synced_at", sa.String(length=32), nullable=True),
        sa.Column("syncing_state_version_id", sa.String(length=32), nullable=True),
        sa.Column("syncing_serial", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.String(length=32), nullable=True),
        sa.Column("lease_expires_at", sa.String(length=32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_inventory_syncs_workspace_id_workspaces"),
        ),
        sa.PrimaryKeyConstraint("workspace_id", name=op.f("pk_inventory_syncs")),
    )

    op.create_table(
        "workspace_drift",
        sa.Column("workspace_id", sa.String(length=32), nullable=False),
        sa.Column("drifted", sa.Boolean(), nullable=False),
        sa.Column("addresses", sa.JSON(), nullable=False),
        sa.Column("checked_at", sa.String(length=32), nullable=True),
        sa.Column("check_run_id", sa.String(length=32), nullable=True),
        sa.Column("state_version_id", sa.String(length=32), nullable=True),
        sa.Column("state_serial", sa.Integer(), nullable=True),
        sa.Column("detected_at", sa.String(length=32), nullable=True),
        sa.Column("cleared_at", sa.String(length=32), nullable=True),
        sa.Column("cleared_by_run_id", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_workspace_drift_workspace_id_workspaces"),
        ),
        sa.PrimaryKeyConstraint("workspace_id", name=op.f("pk_workspace_drift")),
    )

    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_run_id", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("refresh_only", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.create_index("ix_runs_source_run_id", ["source_run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_source_run_id")
        batch_op.drop_column("refresh_only")
        batch_op.drop_column("source_run_id")
    op.drop_table("workspace_drift")
    op.drop_table("inventory_syncs")
    with op.batch_alter_table("inventory_resources", schema=None) as batch_op:
        batch_op.drop_index("ix_inventory_resources_type")
    op.drop_table("inventory_resources")
    with op.batch_alter_table("notification_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_notification_deliveries_outbox")
        batch_op.drop_index("ix_notification_deliveries_created")
    op.drop_table("notification_deliveries")
