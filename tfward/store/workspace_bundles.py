"""Everything the API shows of a workspace, for many workspaces in a fixed number of statements.

A `Bundle` holds what the API's workspace view is built from: the run in the workspace's slot,
its queue, its latest state version, its lock and owner, its inventory sync and its drift.
`GET /api/v1/workspaces` reads the bundles of every configured workspace; the workspace's own
GET and the lock actions read the bundle of one, through the same function, so the list and
the show cannot disagree (daemon/api/routes_workspaces.py). Eight statements whatever the
number of workspaces, never one per workspace (docs/architecture.md §12); each fact is read by
the store function that reads it for one workspace, in its `..._of_each` form, so the rules
(which run is current, how outputs are unsealed, when a sync reads `interrupted`) are written
once.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from tfward.ids import now
from tfward.runs.model import Run, Status

from . import cluster, drift, inventory, states
from . import runs as run_store
from .states import StateVersion
from .tables import workspaces
from .workspaces import Lock, WorkspaceIds, configured_ids, lock_of_each

# The runs that hold a workspace's slot; the oldest of them is its current run.
SLOT = (Status.PLANNING, Status.APPLY_PENDING, Status.APPLYING)


@dataclass(frozen=True, slots=True)
class Bundle:
    """One workspace's facts as the API shows them (daemon/api/routes_workspaces.py)."""

    id: str
    name: str
    current_run: Run | None  # the oldest run in SLOT
    queued_runs: int  # runs pending in its queue
    latest_state: StateVersion | None  # `states.current`: outputs unsealed
    lock: Lock | None
    owner: str | None  # the daemon that drives it now (docs/architecture.md §15)
    inventory: dict[str, Any] | None  # `inventory.sync_status`
    drift: dict[str, Any] | None  # `drift.view`: None when never checked


def bundles(
    conn: Connection, ws_ids: Collection[str] | None = None, when: datetime | None = None
) -> list[Bundle]:
    """The bundles of the workspaces `ws_ids` (None: every configured one), ordered by name;
    unknown ids are left out. `when` (default: now) is what an inventory sync's lease is
    compared with. Eight statements, however many workspaces; a database error propagates."""
    wanted: WorkspaceIds = configured_ids() if ws_ids is None else list(ws_ids)
    rows = conn.execute(
        select(workspaces.c.id, workspaces.c.name)
        .where(workspaces.c.id.in_(wanted))
        .order_by(workspaces.c.name)
    ).all()
    current = run_store.oldest_of_each(conn, wanted, SLOT)
    queued = run_store.count_of_each(conn, wanted, Status.PENDING)
    latest = states.current_of_each(conn, wanted)
    locks = lock_of_each(conn, wanted)
    owners = cluster.owner_of_each(conn, wanted)
    synced = inventory.sync_status_of_each(conn, wanted, now() if when is None else when)
    drifts = drift.view_of_each(conn, wanted)
    return [
        Bundle(
            id=ws_id,
            name=str(name),
            current_run=current.get(ws_id),
            queued_runs=queued.get(ws_id, 0),
            latest_state=latest.get(ws_id),
            lock=locks.get(ws_id),
            owner=owners.get(ws_id),
            inventory=synced.get(ws_id),
            drift=drifts.get(ws_id),
        )
        for ws_id, name in rows
    ]
