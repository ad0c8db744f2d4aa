"""The workspaces at a glance, for the web page's list (daemon/web/pages_workspaces.py).

Everything the list shows of every configured workspace — its latest run, lock, queue depth,
drift flag, last apply and resource count — is read with a fixed number of grouped queries,
however many workspaces there are: never one query per workspace (a test counts them with
1,000 workspaces).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, func, select

from tfward.runs.model import Operation, Status

from . import workspaces as ws_store
from .tables import runs, state_versions, workspace_drift, workspaces
from .workspaces import Lock


@dataclass(frozen=True, slots=True)
class LatestRun:
    id: str
    status: Status
    operation: Operation
    created_at: datetime


@dataclass(frozen=True, slots=True)
class WorkspaceSummary:
    id: str
    name: str
    latest_run: LatestRun | None
    lock: Lock | None
    queued: int
    drifted: bool
    last_applied_at: datetime | None
    resource_count: int | None  # None: no state yet
    state_serial: int | None


def summaries(conn: Connection) -> list[WorkspaceSummary]:
    """Every configured workspace, by name, in seven queries."""
    names = conn.execute(
        select(workspaces.c.id, workspaces.c.name)
        .where(workspaces.c.configured.is_(True))
        .order_by(workspaces.c.name)
    ).all()
    latest = _latest_runs(conn)
    locks = ws_store.all_locks(conn)
    queued = _queued(conn)
    drifted = {
        row.workspace_id
        for row in conn.execute(
            select(workspace_drift.c.workspace_id).where(workspace_drift.c.drifted.is_(True))
        )
    }
    applied = _last_applied(conn)
    states = _current_states(conn)
    return [
        WorkspaceSummary(
            id=ws_id,
            name=name,
            latest_run=latest.get(ws_id),
            lock=locks.get(ws_id),
            queued=queued.get(ws_id, 0),
            drifted=ws_id in drifted,
            last_applied_at=applied.get(ws_id),
            resource_count=states[ws_id][0] if ws_id in states else None,
            state_serial=states[ws_id][1] if ws_id in states else None,
        )
        for ws_id, name in names
    ]


def _latest_runs(conn: Connection) -> dict[str, LatestRun]:
    newest = select(func.max(runs.c.seq).label("seq")).group_by(runs.c.workspace_id).subquery()
    rows = conn.execute(
        select(
            runs.c.workspace_id, runs.c.id, runs.c.status, runs.c.operation, runs.c.created_at
        ).join(newest, runs.c.seq == newest.c.seq)
    )
    return {
        row.workspace_id: LatestRun(
            row.id, Status(row.status), Operation(row.operation), row.created_at
        )
        for row in rows
    }


def _queued(conn: Connection) -> dict[str, int]:
    rows = conn.execute(
        select(runs.c.workspace_id, func.count())
        .where(runs.c.status == str(Status.PENDING))
        .group_by(runs.c.workspace_id)
    )
    return {ws_id: int(n) for ws_id, n in rows}


def _last_applied(conn: Connection) -> dict[str, datetime]:
    rows = conn.execute(
        select(runs.c.workspace_id, func.max(runs.c.finished_at).label("at"))
        .where(runs.c.status == str(Status.APPLIED))
        .group_by(runs.c.workspace_id)
    )
    return {ws_id: at for ws_id, at in rows if at is not None}


def _current_states(conn: Connection) -> dict[str, tuple[int, int]]:
    """Workspace id -> (resource count, serial) of its current state version."""
    newest = (
        select(
            state_versions.c.workspace_id.label("ws"), func.max(state_versions.c.serial).label("s")
        )
        .group_by(state_versions.c.workspace_id)
        .subquery()
    )
    rows = conn.execute(
        select(
            state_versions.c.workspace_id, state_versions.c.resource_count, state_versions.c.serial
        ).join(
            newest,
            and_(
                state_versions.c.workspace_id == newest.c.ws,
                state_versions.c.serial == newest.c.s,
            ),
        )
    )
    return {row.workspace_id: (int(row.resource_count), int(row.serial)) for row in rows}
