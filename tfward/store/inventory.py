"""Persistence of the resource inventory: the resources of each workspace's newest synced state.

A state the daemon stores itself (after an apply, for terraform's http backend) is synced in
the transaction that stores it (`sync`): the inventory never lags behind it. Any other (a
rollback, a state whose resources could not be read there) is synced by an `inventory_sync`
job, in two short transactions around the parsing: `begin_sync` marks the workspace `syncing`
with `started_at` and a lease, `complete_sync` replaces the workspace's resources and marks it
`synced`. A sync for a state older than (or the same as) the one already synced does
nothing, so a late or retried sync never overwrites a newer inventory. A `syncing` mark whose
lease ran out is shown as `interrupted`, and the outbox re-runs the job: nothing stays
`syncing` (seed H6).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from .changes import Key, touch
from .tables import inventory_resources, inventory_syncs, workspaces
from .workspaces import WorkspaceIds

SYNCING, SYNCED, FAILED, INTERRUPTED = "syncing", "synced", "failed", "interrupted"


@dataclass(frozen=True, slots=True)
class Resource:
    address: str
    mode: str
    type: str
    name: str
    module: str | None
    provider: str
    index_key: int | str | None
    resource_id: str | None


# Built once: every stored state reads it (and the workspace view).
_STATUS_ROW = select(inventory_syncs).where(inventory_syncs.c.workspace_id == bindparam("ws_id"))


def _status_row(conn: Connection, ws_id: str) -> Any:
    return conn.execute(_STATUS_ROW, {"ws_id": ws_id}).first()


def _synced_since(row: Any, serial: int) -> bool:
    """Whether the status `row` shows a state at least as new as `serial` synced."""
    return row is not None and row.synced_serial is not None and row.synced_serial >= serial


def begin_sync(
    conn: Connection, ws_id: str, sv_id: str, serial: int, when: datetime, lease_until: datetime
) -> bool:
    """Mark the workspace `syncing` state `sv_id`. False when a state at least as new is
    already synced (nothing to do)."""
    row = _status_row(conn, ws_id)
    touch(conn, Key.workspace(ws_id))  # the workspace shows its inventory's sync status
    values = {
        "status": SYNCING,
        "syncing_state_version_id": sv_id,
        "syncing_serial": serial,
        "started_at": when,
        "lease_expires_at": lease_until,
        "error": None,
    }
    if row is None:
        conn.execute(insert(inventory_syncs).values(workspace_id=ws_id, **values))
        return True
    if _synced_since(row, serial):
        return False
    conn.execute(
        update(inventory_syncs).where(inventory_syncs.c.workspace_id == ws_id).values(**values)
    )
    return True


def complete_sync(
    conn: Connection,
    ws_id: str,
    sv_id: str,
    serial: int,
    resources: Sequence[Resource],
    when: datetime,
) -> bool:
    """Replace the workspace's resources with those of state `sv_id`, unless a newer state was
    synced meanwhile. Returns whether the inventory now shows `sv_id`."""
    touch(conn, Key.workspace(ws_id))
    row = _status_row(conn, ws_id)
    if _synced_since(row, serial):
        _end_syncing(conn, ws_id, sv_id, SYNCED, None)
        return False
    _replace(conn, ws_id, sv_id, serial, resources, when)
    return True


def sync(
    conn: Connection,
    ws_id: str,
    sv_id: str,
    serial: int,
    resources: Sequence[Resource],
    when: datetime,
) -> bool:
    """Sync the inventory to state `sv_id` in the caller's transaction — the one that stores
    that state, so no job and no `syncing` mark are needed. False (nothing changed) when a
    state at least as new is synced already."""
    touch(conn, Key.workspace(ws_id))
    row = _status_row(conn, ws_id)
    if _synced_since(row, serial):
        return False
    if row is None:
        conn.execute(insert(inventory_syncs), {"workspace_id": ws_id, "status": SYNCED})
    _replace(conn, ws_id, sv_id, serial, resources, when, started=when)
    return True


def _replace(
    conn: Connection,
    ws_id: str,
    sv_id: str,
    serial: int,
    resources: Sequence[Resource],
    when: datetime,
    *,
    started: datetime | None = None,
) -> None:
    """The workspace's resources become `resources` (of state `sv_id`), marked `synced`
    (`started`: when the sync started, if not recorded by `begin_sync`)."""
    conn.execute(delete(inventory_resources).where(inventory_resources.c.workspace_id == ws_id))
    if resources:
        conn.execute(
            insert(inventory_resources),
            [
                {
                    "workspace_id": ws_id,
                    "address": r.address,
                    "state_version_id": sv_id,
                    "serial": serial,
                    "mode": r.mode,
                    "type": r.type,
                    "name": r.name,
                    "module": r.module,
                    "provider": r.provider,
                    "index_key": r.index_key,
                    "resource_id": r.resource_id,
                    "synced_at": when,
                }
                for r in resources
            ],
        )
    conn.execute(
        update(inventory_syncs)
        .where(inventory_syncs.c.workspace_id == ws_id)
        .values(
            status=SYNCED,
            synced_state_version_id=sv_id,
            synced_serial=serial,
            synced_at=when,
            syncing_state_version_id=None,
            syncing_serial=None,
            lease_expires_at=None,
            error=None,
            **({"started_at": started} if started is not None else {}),
        )
    )


def fail_sync(conn: Connection, ws_id: str, sv_id: str, error: str) -> None:
    """Record that syncing `sv_id` failed (the outbox retries it)."""
    _end_syncing(conn, ws_id, sv_id, FAILED, error[:4000])


def _end_syncing(conn: Connection, ws_id: str, sv_id: str, status: str, error: str | None) -> None:
    touch(conn, Key.workspace(ws_id))
    conn.execute(
        update(inventory_syncs)
        .where(
            inventory_syncs.c.workspace_id == ws_id,
            inventory_syncs.c.syncing_state_version_id == sv_id,
        )
        .values(status=status, lease_expires_at=None, error=error)
    )


def sync_status(conn: Connection, ws_id: str, when: datetime) -> dict[str, Any] | None:
    """The workspace's sync status for the API; a `syncing` mark past its lease reads
    `interrupted` (the job will run again)."""
    row = _status_row(conn, ws_id)
    return None if row is None else _status_view(row, when)


def sync_status_of_each(
    conn: Connection, ws_ids: WorkspaceIds, when: datetime
) -> dict[str, dict[str, Any]]:
    """`sync_status` of each of the workspaces `ws_ids` that has one, in one statement."""
    rows = conn.execute(select(inventory_syncs).where(inventory_syncs.c.workspace_id.in_(ws_ids)))
    return {row.workspace_id: _status_view(row, when) for row in rows}


def _status_view(row: Any, when: datetime) -> dict[str, Any]:
    status = row.status
    if status == SYNCING and (row.lease_expires_at is None or row.lease_expires_at <= when):
        status = INTERRUPTED
    return {
        "status": status,
        "state_version_id": row.synced_state_version_id,
        "serial": row.synced_serial,
        "synced_at": row.synced_at,
        "syncing_state_version_id": row.syncing_state_version_id,
        "started_at": row.started_at,
        "lease_expires_at": row.lease_expires_at,
        "error": row.error,
    }


def list_resources(
    conn: Connection,
    *,
    workspace_id: str | None = None,
    type_: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Resources with their workspace name, by workspace then address."""
    r = inventory_resources
    query = select(r, workspaces.c.name.label("workspace")).join(
        workspaces, workspaces.c.id == r.c.workspace_id
    )
    if workspace_id is not None:
        query = query.where(r.c.workspace_id == workspace_id)
    else:
        query = query.where(workspaces.c.configured.is_(True))
    if type_ is not None:
        query = query.where(r.c.type == type_)
    query = query.order_by(workspaces.c.name, r.c.address).limit(limit)
    return [dict(row._mapping) for row in conn.execute(query)]
