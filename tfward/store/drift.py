"""Persistence of workspace drift: what the last drift check (a refresh-only plan) found.

`record_check` runs in the transaction that records the check's plan, and queues the
`assessment:drifted` notification in that same transaction. A check planned against a state
that is no longer current is ignored (an apply finished meanwhile). `clear` runs from the
`drift_clear` job an apply queues, and only clears drift found in an older state.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from tfward.runs.model import ACTIVE, TERMINAL, Operation, Status

from . import outbox as outbox_store
from . import runs as run_store
from . import states
from .changes import Key, touch
from .tables import runs, workspace_drift
from .workspaces import WorkspaceIds


def _row(conn: Connection, ws_id: str) -> Any:
    return conn.execute(
        select(workspace_drift).where(workspace_drift.c.workspace_id == ws_id)
    ).first()


def record_check(
    conn: Connection,
    ws_id: str,
    workspace: str,
    run_id: str,
    addresses: Sequence[str],
    when: datetime,
) -> bool | None:
    """Record a drift check's result; returns whether the workspace is drifted, or None when
    the result was ignored because the state moved since the check was planned. Newly found
    drift (or a different set of drifted resources) queues `assessment:drifted`."""
    planned = run_store.planned_state_version(conn, run_id)
    current = states.current(conn, ws_id)
    if (current.id if current else None) != planned:
        return None
    found = sorted(set(addresses))
    before = _row(conn, ws_id)
    was = (bool(before.drifted), list(before.addresses)) if before is not None else (False, [])
    drifted = bool(found)
    values: dict[str, Any] = {
        "drifted": drifted,
        "addresses": found,
        "checked_at": when,
        "check_run_id": run_id,
        "state_version_id": current.id if current else None,
        "state_serial": current.serial if current else None,
    }
    if drifted and was != (True, found):
        values.update(detected_at=when, cleared_at=None, cleared_by_run_id=None)
    if not drifted and was[0]:
        values.update(cleared_at=when, cleared_by_run_id=None)
    if before is None:
        conn.execute(insert(workspace_drift).values(workspace_id=ws_id, **values))
    else:
        conn.execute(
            update(workspace_drift).where(workspace_drift.c.workspace_id == ws_id).values(**values)
        )
    touch(conn, Key.workspace(ws_id))
    if drifted and was != (True, found):
        shown = ", ".join(found[:10]) + (f" and {len(found) - 10} more" if len(found) > 10 else "")
        outbox_store.notify(
            conn,
            "assessment:drifted",
            key=f"notify:{run_id}:assessment:drifted",
            workspace_id=ws_id,
            workspace=workspace,
            run_id=run_id,
            message=f"Drift detected in {len(found)} resource(s): {shown}",
            addresses=found,
        )
    return drifted


def clear(conn: Connection, ws_id: str, run_id: str, serial: int, when: datetime) -> bool:
    """An apply stored state `serial`: drift found in an older state is gone. Returns whether
    a drifted flag was cleared."""
    row = _row(conn, ws_id)
    if row is None or not row.drifted:
        return False
    if row.state_serial is not None and row.state_serial >= serial:
        return False
    conn.execute(
        update(workspace_drift)
        .where(workspace_drift.c.workspace_id == ws_id)
        .values(drifted=False, addresses=[], cleared_at=when, cleared_by_run_id=run_id)
    )
    touch(conn, Key.workspace(ws_id))
    return True


def view(conn: Connection, ws_id: str) -> dict[str, Any] | None:
    row = _row(conn, ws_id)
    return None if row is None else _view(row)


def view_of_each(conn: Connection, ws_ids: WorkspaceIds) -> dict[str, dict[str, Any]]:
    """`view` of each of the workspaces `ws_ids` that was ever checked, in one statement."""
    rows = conn.execute(select(workspace_drift).where(workspace_drift.c.workspace_id.in_(ws_ids)))
    return {row.workspace_id: _view(row) for row in rows}


def _view(row: Any) -> dict[str, Any]:
    return {
        "drifted": bool(row.drifted),
        "addresses": list(row.addresses),
        "checked_at": row.checked_at,
        "check_run_id": row.check_run_id,
        "state_version_id": row.state_version_id,
        "detected_at": row.detected_at,
        "cleared_at": row.cleared_at,
        "cleared_by_run_id": row.cleared_by_run_id,
    }


def apply_in_flight(conn: Connection, ws_id: str) -> bool:
    """Whether a run that may change the state is planning, waiting or applying."""
    row = conn.execute(
        select(runs.c.id)
        .where(
            runs.c.workspace_id == ws_id,
            runs.c.operation != str(Operation.PLAN),
            runs.c.status.in_([str(s) for s in (*ACTIVE, Status.APPLY_PENDING)]),
        )
        .limit(1)
    ).first()
    return row is not None


def last_check(conn: Connection, ws_id: str) -> tuple[datetime, bool] | None:
    """The newest drift-check run of the workspace: (created_at, still running), or None."""
    row = conn.execute(
        select(runs.c.created_at, runs.c.status)
        .where(runs.c.workspace_id == ws_id, runs.c.refresh_only.is_(True))
        .order_by(runs.c.seq.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return row.created_at, row.status not in {str(s) for s in TERMINAL}
