"""The database schema as SQLAlchemy Core tables.

Alembic migrations (`migrations/versions/`) create and change these tables; this module is what
the code queries against. Times are stored as ISO-8601 UTC text so the file stays readable with
the sqlite3 shell, and come back as aware datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime stored as ISO-8601 text (sorts correctly as text)."""

    impl = String(32)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use datetime.now(UTC)")
        return value.astimezone(UTC).isoformat(timespec="microseconds")

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return datetime.fromisoformat(value)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

workspaces = Table(
    "workspaces",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    # Set while the workspace is in the config; a removed workspace keeps its history.
    Column("configured", Boolean, nullable=False, default=True),
)

# One row while a workspace is locked: taking the lock is an INSERT, so two takers can never both
# win; releasing it is a DELETE.
workspace_locks = Table(
    "workspace_locks",
    metadata,
    Column("workspace_id", String(32), ForeignKey("workspaces.id"), primary_key=True),
    Column("run_id", String(32), ForeignKey("runs.id"), nullable=True),
    Column("locked_by", String(128), nullable=False),
    Column("reason", Text, nullable=True),
    Column("locked_at", UTCDateTime, nullable=False),
)

configuration_versions = Table(
    "configuration_versions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("workspace_id", String(32), ForeignKey("workspaces.id"), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", Integer, nullable=False),
    Column("file_count", Integer, nullable=False),
    Column("archive", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("workspace_id", "sha256", name="uq_configuration_versions_workspace_sha"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    # Autoincrementing order of creation: the FIFO queue of a workspace.
    Column("seq", Integer, nullable=False, unique=True),
    Column("workspace_id", String(32), ForeignKey("workspaces.id"), nullable=False),
    Column("operation", String(16), nullable=False),
    Column("auto_apply", Boolean, nullable=False),
    Column("message", Text, nullable=False, default=""),
    Column("targets", JSON, nullable=False),
    Column("replace", JSON, nullable=False),
    Column("status", String(24), nullable=False),
    Column("stage", String(24), nullable=True),
    Column("error_kind", String(24), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("has_changes", Boolean, nullable=True),
    Column("add_count", Integer, nullable=False, default=0),
    Column("change_count", Integer, nullable=False, default=0),
    Column("destroy_count", Integer, nullable=False, default=0),
    Column("plan_hash", String(64), nullable=True),
    Column("configuration_version_id", String(32), ForeignKey("configuration_versions.id")),
    # The state version the plan was made against: a plan for an older state is stale.
    Column("planned_state_version_id", String(32), nullable=True),
    Column("pid", Integer, nullable=True),
    Column("pid_stage", String(24), nullable=True),
    Column("warnings", JSON, nullable=False),
    Column("created_by", String(128), nullable=True),
    Column("confirmed_by", String(128), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("planned_at", UTCDateTime),
    Column("plan_expires_at", UTCDateTime),
    Column("confirmed_at", UTCDateTime),
    Column("apply_started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("cancel_requested_at", UTCDateTime),
    Column("force_cancel_requested_at", UTCDateTime),
    Column("status_changed_at", UTCDateTime),
    # Migration 0002: the run whose apply queued this one (run triggers), and drift checks.
    Column("source_run_id", String(32), nullable=True),
    Column("refresh_only", Boolean, nullable=False, default=False, server_default=false()),
    Index("ix_runs_workspace_status", "workspace_id", "status"),
    Index("ix_runs_source_run_id", "source_run_id"),
    Index("ix_runs_status", "status"),
)

# Logs are kept as chunks of whole lines: one row per chunk keeps capture far above terraform's
# output rate (one row per line would cap it at a few thousand lines a second).
run_log_chunks = Table(
    "run_log_chunks",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # Terraform output in this chunk came from this output file of the run directory, and with
    # it the log holds that file up to `source_end` (a byte offset): recovery appends the rest.
    Column("source", String(128)),
    Column("source_end", Integer),
    # Migration 0011: the byte offset in the run's log where this chunk starts (the id of a
    # log event: a follower resumes from an offset). Nullable only so the migration need not
    # copy the table; every chunk written has it.
    Column("log_offset", BigInteger),
)

# One row, rewritten by the storage probe while storage fails: a write that reaches the file.
storage_probe = Table(
    "storage_probe",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("probed_at", UTCDateTime, nullable=False),
)

plan_artifacts = Table(
    "plan_artifacts",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id"), primary_key=True),
    Column("plan_file", LargeBinary, nullable=False),
    Column("plan_sha256", String(64), nullable=False),
    # NULL until `terraform show -json` after the run stored it (migration 0013; the outbox job
    # `plan_json`, docs/architecture.md §3).
    Column("plan_json", LargeBinary, nullable=True),
    Column("plan_json_sha256", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)

state_versions = Table(
    "state_versions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("workspace_id", String(32), ForeignKey("workspaces.id"), nullable=False),
    Column("serial", Integer, nullable=False),
    Column("lineage", String(64), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("state", LargeBinary, nullable=False),
    # Migration 0007: the shown outputs' JSON, sealed like the state (store/sealing.py).
    Column("outputs", LargeBinary, nullable=False),
    Column("resource_count", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("run_id", String(32), ForeignKey("runs.id"), nullable=True),
    Column("rolled_back_from", String(32), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("workspace_id", "serial", name="uq_state_versions_workspace_serial"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("seq", Integer, nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("run_id", String(32), nullable=True),
    Column("workspace_id", String(32), nullable=True),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("idempotency_key", String(200), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("done_at", UTCDateTime, nullable=True),
    Index("ix_outbox_status_next", "status", "next_attempt_at"),
)

# Run-task results (HCP-compatible). The access token is kept only AES-GCM encrypted and is
# cleared when the result is final or its run ends (termination contract step 6).
run_task_results = Table(
    "run_task_results",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("run_id", String(32), ForeignKey("runs.id"), nullable=False),
    Column("workspace_id", String(32), ForeignKey("workspaces.id"), nullable=False),
    Column("task_name", String(64), nullable=False),
    Column("stage", String(16), nullable=False),
    Column("enforcement", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("message", Text, nullable=True),
    Column("url", Text, nullable=True),
    Column("outcomes", JSON, nullable=False),
    Column("token_ciphertext", LargeBinary, nullable=True),
    Column("token_jti", String(64), nullable=True),
    Column("token_expires_at", UTCDateTime, nullable=True),
    Column("token_revoked_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("last_progress_at", UTCDateTime, nullable=True),
    Index("ix_run_task_results_run", "run_id"),
)

# ---- releases (migration 0003_releases) ------------------------------------------------------

# A release rolls one change through ordered batches of workspaces. `version` goes up with every
# change and guards each save (compare-and-set); the counts are written in the same transaction
# as the item statuses they count.
releases = Table(
    "releases",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("total", Integer, nullable=False),
    Column("succeeded", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("skipped", Integer, nullable=False),
    Column("cancelled", Integer, nullable=False),
    # What it rolls out: a configuration version (copied into each workspace by content), and
    # variables merged over each workspace's; neither: the current source.
    Column("configuration_version_id", String(32), ForeignKey("configuration_versions.id")),
    Column("configuration_sha256", String(64), nullable=True),
    Column("variables", JSON(none_as_null=True), nullable=True),
    Column("error", Text, nullable=True),
    Column("created_by", String(128), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("cancel_requested_at", UTCDateTime),
    Index("ix_releases_status", "status"),
)

# One row per workspace of a release. An item is claimed by a compare-and-set on `status`
# (pending -> running) in the same transaction that creates its run and stores `run_id`.
release_items = Table(
    "release_items",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("release_id", String(32), ForeignKey("releases.id"), nullable=False),
    Column("batch", Integer, nullable=False),
    Column("position", Integer, nullable=False),
    Column("workspace_id", String(32), ForeignKey("workspaces.id"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("run_id", String(32), ForeignKey("runs.id"), nullable=True),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("error", Text, nullable=True),
    UniqueConstraint("release_id", "workspace_id", name="uq_release_items_release_workspace"),
    UniqueConstraint("run_id", name="uq_release_items_run_id"),
    Index("ix_release_items_release_batch", "release_id", "batch"),
)

# Columns 0003_releases adds to `runs`, appended here so the `runs` definition above stays as
# it is. `release_item_id` is unique (NULLs are distinct): one run per release item, enforced by
# the database as well. No foreign key: SQLite cannot add one to an existing table.
runs.append_column(Column("release_item_id", String(32), nullable=True))
runs.append_column(Column("pinned_configuration_version_id", String(32), nullable=True))
runs.append_column(Column("variable_overrides", JSON(none_as_null=True), nullable=True))
Index("uq_runs_release_item_id", runs.c.release_item_id, unique=True)

# Migration 0004: a discard recorded by the request that makes it (the funnel finishes the run).
runs.append_column(Column("discard_requested_at", UTCDateTime, nullable=True))
runs.append_column(Column("discard_requested_by", String(128), nullable=True))
runs.append_column(Column("discard_reason", Text, nullable=True))

# Migration 0013: why the run has no plan JSON (`terraform show -json` failed for a
# speculative plan, or after an auto-applied run: docs/architecture.md §3).
runs.append_column(Column("plan_json_error", Text, nullable=True))

# ---- migration 0002: follow-ups (delivery log, inventory, drift) ----------------------------

# Every attempt to deliver a notification, successful or not (seed M4).
notification_deliveries = Table(
    "notification_deliveries",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("outbox_id", String(32), nullable=False),
    Column("destination", String(64), nullable=False),
    Column("trigger", String(32), nullable=False),
    Column("run_id", String(32), nullable=True),
    Column("workspace_id", String(32), nullable=True),
    Column("attempt", Integer, nullable=False),
    Column("delivered", Boolean, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("latency_ms", Integer, nullable=False),
    Column("error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_notification_deliveries_created", "created_at"),
    Index("ix_notification_deliveries_outbox", "outbox_id"),
)

# The resources of each workspace's latest synced state (a CMDB view, seed H5/H6).
inventory_resources = Table(
    "inventory_resources",
    metadata,
    Column("workspace_id", String(32), ForeignKey("workspaces.id"), primary_key=True),
    Column("address", String(512), primary_key=True),
    Column("state_version_id", String(32), nullable=False),
    Column("serial", Integer, nullable=False),
    Column("mode", String(16), nullable=False),
    Column("type", String(128), nullable=False),
    Column("name", String(128), nullable=False),
    Column("module", String(256), nullable=True),
    Column("provider", String(256), nullable=False),
    Column("index_key", JSON, nullable=True),
    Column("resource_id", String(512), nullable=True),
    Column("synced_at", UTCDateTime, nullable=False),
    Index("ix_inventory_resources_type", "type"),
)

# One row per workspace: which state the inventory shows, and the sync in progress. A sync
# has `started_at` and a lease (the outbox row's), so `syncing` can never stick (seed H6).
inventory_syncs = Table(
    "inventory_syncs",
    metadata,
    Column("workspace_id", String(32), ForeignKey("workspaces.id"), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("synced_state_version_id", String(32), nullable=True),
    Column("synced_serial", Integer, nullable=True),
    Column("synced_at", UTCDateTime, nullable=True),
    Column("syncing_state_version_id", String(32), nullable=True),
    Column("syncing_serial", Integer, nullable=True),
    Column("started_at", UTCDateTime, nullable=True),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("error", Text, nullable=True),
)

# The last drift check of each workspace (a refresh-only plan) and what it found.
workspace_drift = Table(
    "workspace_drift",
    metadata,
    Column("workspace_id", String(32), ForeignKey("workspaces.id"), primary_key=True),
    Column("drifted", Boolean, nullable=False),
    Column("addresses", JSON, nullable=False),
    Column("checked_at", UTCDateTime, nullable=True),
    Column("check_run_id", String(32), nullable=True),
    # The state version the check compared against: an apply of a newer one clears the flag.
    Column("state_version_id", String(32), nullable=True),
    Column("state_serial", Integer, nullable=True),
    Column("detected_at", UTCDateTime, nullable=True),
    Column("cleared_at", UTCDateTime, nullable=True),
    Column("cleared_by_run_id", String(32), nullable=True),
)

# ---- migration 0008_plan: error classes, the audit trail ------------------------------------

# Whether a failed run's cause is `transient` or `permanent` (runs/classify.py).
runs.append_column(Column("error_class", String(16), nullable=True))

# What admins did (force-unlock, force-cancel, state rollback, raw state download, outbox
# retry, release create and cancel, config reload): append-only, store/audit.py has no update
# and no delete. `seq` is the order of writing.
audit_events = Table(
    "audit_events",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("seq", Integer, nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(32), nullable=False),
    Column("target", String(256), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    Column("detail", JSON, nullable=False),
    Index("ix_audit_events_action", "action"),
)

# ---- migration 0009_backend: terraform's http backend -----------------------------------

# A lock taken through the backend keeps terraform's lock ID and lock info (protocols.md §8).
workspace_locks.append_column(Column("lock_id", String(128), nullable=True))
workspace_locks.append_column(Column("operation", String(64), nullable=True))
workspace_locks.append_column(Column("who", String(256), nullable=True))
workspace_locks.append_column(Column("info", Text, nullable=True))

# The API token that wrote a state version (a POST to the backend, a rollback).
state_versions.append_column(Column("created_by", String(128), nullable=True))

# The credential each run gets to read the state of the workspaces its workspace may read
# (`remote_state_from`): only the token's SHA-256 is kept; revoked when the run ends.
run_credentials = Table(
    "run_credentials",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("run_id", String(32), ForeignKey("runs.id"), nullable=False),
    Column("workspace_id", String(32), ForeignKey("workspaces.id"), nullable=False),
    Column("scope", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Index("ix_run_credentials_run", "run_id"),
)

# ---- migration 0012_web: the web page --------------------------------------------------

# One row per signed-in browser (daemon/web/sessions.py): the cookie carries a random id, the
# database only its SHA-256, with the API token the session was started with (its SHA-256,
# name and role). A session ends `session_idle` after it was last seen, `session_max` after it
# began (`expires_at`), at logout, or when its token leaves the config.
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id_sha256", String(64), primary_key=True),
    Column("token_sha256", String(64), nullable=False),
    Column("token_name", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_web_sessions_token", "token_sha256"),
)

# Every status or stage a run entered, and when: written by the transaction that saves the
# change (store/runs.py), read by the run page's timeline.
run_timeline = Table(
    "run_timeline",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), ForeignKey("runs.id"), nullable=False),
    Column("status", String(24), nullable=False),
    Column("stage", String(24), nullable=True),
    Column("at", UTCDateTime, nullable=False),
    Index("ix_run_timeline_run", "run_id", "id"),
)

# ---- migration 0014_cluster: several daemons on one database ------------------------------

# One row per daemon that ever joined (docs/architecture.md §15): its heartbeat says it lives.
# `host` and `data_dir` tell a survivor whether the run directories of a dead daemon are
# reachable from where it runs (the same host, or a data dir shared at the same path).
cluster_nodes = Table(
    "cluster_nodes",
    metadata,
    Column("node_id", String(200), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("data_dir", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("api_url", Text, nullable=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    # Set when the daemon left cleanly (its leases released): not live, nothing to recover.
    Column("left_at", UTCDateTime, nullable=True),
)

# One row per workspace: which daemon drives it. `epoch` goes up with every change of owner,
# never down; every write of the workspace's execution checks owner and epoch in its own
# transaction (store/fencing.py). `owner` NULL: released, free to take.
workspace_leases = Table(
    "workspace_leases",
    metadata,
    Column("workspace_id", String(32), ForeignKey("workspaces.id"), primary_key=True),
    Column("owner", String(200), nullable=True),
    Column("epoch", Integer, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("acquired_at", UTCDateTime, nullable=True),
    # The owner before this one, when it did not release the lease (it died or was fenced):
    # its runs in flight are the new owner's to recover.
    Column("taken_from", String(200), nullable=True),
)

# The daemon whose outbox worker claimed a row: a restarting daemon re-queues only its own.
outbox.append_column(Column("claimed_by", String(200), nullable=True))
