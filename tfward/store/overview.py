"""What an overview page shows of each workspace, for many workspaces in a few statements.

One row per workspace (`Summary`): its newest run and the run holding its slot (status,
stage), how many runs wait in its queue, its lock, its drift, its latest state version, when
it last applied. The event stream `GET /api/v1/events` reads these for the workspaces a change
named (docs/architecture.md §13), the web page's list for all of them (§14); seven statements
whatever the number of workspaces, never one per workspace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from tfward.runs.model import Status

from .tables import runs, state_versions, workspace_drift, workspaces
from .workspaces import Lock, lock_of_each

_SLOT = (Status.PLANNING, Status.APPLY_PENDING, Status.APPLYING)


@dataclass(frozen=True, slots=True)
class RunBrief:
    id: str
    operation: str
    status: str
    stage: str | None
    error_kind: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class Summary:
    id: str
    name: str
    configured: bool
    latest_run: RunBrief | None = None
    current_run: RunBrief | None = None
    queued_runs: int = 0
    lock: Lock | None = None
    drift: dict[str, Any] | None = None
    latest_state: dict[str, Any] | None = None
    last_applied_at: datetime | None = None


def summaries(conn: Connection, ws_ids: Sequence[str] | None = None) -> list[Summary]:
    """The summary of the workspaces `ws_ids` (None: every workspace, configured or not),
    ordered by name. Unknown ids are left out."""
    query = select(workspaces.c.id, workspaces.c.name, workspaces.c.configured)
    if ws_ids is not None:
        query = query.where(workspaces.c.id.in_(ws_ids))
    rows = conn.execute(query.order_by(workspaces.c.name)).all()
    ids = [str(row.id) for row in rows]
    latest, current = _runs(conn, ids)
    queued: dict[str, int] = dict(
        conn.execute(
            select(runs.c.workspace_id, func.count())
            .where(runs.c.workspace_id.in_(ids), runs.c.status == str(Status.PENDING))
            .group_by(runs.c.workspace_id)
        ).all()
    )
    locks = lock_of_each(conn, ids)
    drift = {
        row.workspace_id: {
            "drifted": bool(row.drifted),
            "checked_at": row.checked_at,
            "detected_at": row.detected_at,
        }
        for row in conn.execute(
            select(workspace_drift).where(workspace_drift.c.workspace_id.in_(ids))
        )
    }
    states = _latest_states(conn, ids)
    applied = _last_applied(conn, ids)
    return [
        Summary(
            id=ws_id,
            name=str(row.name),
            configured=bool(row.configured),
            latest_run=latest.get(ws_id),
            current_run=current.get(ws_id),
            queued_runs=int(queued.get(ws_id, 0)),
            lock=locks.get(ws_id),
            drift=drift.get(ws_id),
            latest_state=states.get(ws_id),
            last_applied_at=applied.get(ws_id),
        )
        for ws_id, row in zip(ids, rows, strict=True)
    ]


def _brief(row: Any) -> RunBrief:
    return RunBrief(
        row.id,
        row.operation,
        row.status,
        row.stage,
        row.error_kind,
        row.created_at,
        row.finished_at,
    )


def _runs(conn: Connection, ids: list[str]) -> tuple[dict[str, RunBrief], dict[str, RunBrief]]:
    """Each workspace's newest run, and the oldest run in its slot (the current one)."""
    columns = (
        runs.c.id,
        runs.c.workspace_id,
        runs.c.operation,
        runs.c.status,
        runs.c.stage,
        runs.c.error_kind,
        runs.c.created_at,
        runs.c.finished_at,
    )
    newest = (
        select(func.max(runs.c.seq))
        .where(runs.c.workspace_id.in_(ids))
        .group_by(runs.c.workspace_id)
    )
    latest = {
        row.workspace_id: _brief(row)
        for row in conn.execute(select(*columns).where(runs.c.seq.in_(newest)))
    }
    current: dict[str, RunBrief] = {}
    slot = (
        select(*columns)
        .where(runs.c.workspace_id.in_(ids), runs.c.status.in_([str(s) for s in _SLOT]))
        .order_by(runs.c.seq.desc())
    )
    for row in conn.execute(slot):
        current[row.workspace_id] = _brief(row)  # the oldest comes last and stays
    return latest, current


def _last_applied(conn: Connection, ids: list[str]) -> dict[str, datetime]:
    """When each workspace's newest applied run finished."""
    rows = conn.execute(
        select(runs.c.workspace_id, func.max(runs.c.finished_at))
        .where(runs.c.workspace_id.in_(ids), runs.c.status == str(Status.APPLIED))
        .group_by(runs.c.workspace_id)
    )
    return {ws_id: at for ws_id, at in rows if at is not None}


def _latest_states(conn: Connection, ids: list[str]) -> dict[str, dict[str, Any]]:
    highest = (
        select(state_versions.c.workspace_id, func.max(state_versions.c.serial).label("serial"))
        .where(state_versions.c.workspace_id.in_(ids))
        .group_by(state_versions.c.workspace_id)
        .subquery()
    )
    rows = conn.execute(
        select(
            state_versions.c.id,
            state_versions.c.workspace_id,
            state_versions.c.serial,
            state_versions.c.resource_count,
            state_versions.c.created_at,
        ).join(
            highest,
            (highest.c.workspace_id == state_versions.c.workspace_id)
            & (highest.c.serial == state_versions.c.serial),
        )
    )
    return {
        row.workspace_id: {
            "id": row.id,
            "serial": row.serial,
            "resource_count": row.resource_count,
            "created_at": row.created_at,
        }
        for row in rows
    }
