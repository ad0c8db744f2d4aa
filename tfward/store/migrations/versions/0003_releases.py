"""Releases: releases, release items, and what a run created by a release carries.

Revision ID: 0003_releases
Revises: 0001
Create Date: 2026-11-24 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_releases"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "releases",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("succeeded", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("cancelled", sa.Integer(), nullable=False),
        sa.Column("configuration_version_id", sa.String(length=32), nullable=True),
        sa.Column("configuration_sha256", sa.String(length=64), nullable=True),
        sa.Column("variables", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.String(length=32), nullable=True),
        sa.Column("finished_at", sa.String(length=32), nullable=True),
        sa.Column("cancel_requested_at", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["configuration_version_id"],
            ["configuration_versions.id"],
            name=op.f("fk_releases_configuration_version_id_configuration_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_releases")),
    )
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.create_index("ix_releases_status", ["status"], unique=False)

    op.create_table(
        "release_items",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("release_id", sa.String(length=32), nullable=False),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("started_at", sa.String(length=32), nullable=True),
        sa.Column("finished_at", sa.String(length=32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["release_id"], ["releases.id"], name=op.f("fk_release_items_release_id_releases")
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_release_items_run_id_runs")),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_release_items_workspace_id_workspaces"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_release_items")),
        sa.UniqueConstraint(
            "release_id", "workspace_id", name="uq_release_items_release_workspace"
        ),
        sa.UniqueConstraint("run_id", name="uq_release_items_run_id"),
    )
    with op.batch_alter_table("release_items", schema=None) as batch_op:
        batch_op.create_index(
            "ix_release_items_release_batch", ["release_id", "batch"], unique=False
        )

    # Plain ADD COLUMNs (nullable, no foreign key): SQLite does them without copying `runs`.
    op.add_column("runs", sa.Column("release_item_id", sa.String(length=32), nullable=True))
    op.add_column(
        "runs", sa.Column("pinned_configuration_version_id", sa.String(length=32), nullable=True)
    )
    op.add_column("runs", sa.Column("variable_overrides", sa.JSON(), nullable=True))
    op.create_index("uq_runs_release_item_id", "runs", ["release_item_id"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_runs_release_item_id", table_name="runs")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("variable_overrides")
        batch_op.drop_column("pinned_configuration_version_id")
        batch_op.drop_column("release_item_id")
    with op.batch_alter_table("release_items", schema=None) as batch_op:
        batch_op.drop_index("ix_release_items_release_batch")
    op.drop_table("release_items")
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.drop_index("ix_releases_status")
    op.drop_table("releases")
