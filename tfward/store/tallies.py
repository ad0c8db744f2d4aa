"""Counts the database already knows, read in one transaction for `GET /metrics`.

Runs by status, queue depth per workspace, outbox rows, run-task results and notification
delivery attempts are facts in the tables, not events the daemon has to remember: reading them
at scrape time means they survive restarts and can never drift from what the API shows.
Every query is a grouped count over an indexed column or a small table.
"""

from __future__ import annotations

from sqlalchemy import Connection, and_, case, func, select

from tfward.obs.metrics import Tallies
from tfward.runs.model import Status

from . import outbox as outbox_store
from .tables import notification_deliveries, outbox, run_task_results, runs, workspaces


def read(conn: Connection) -> Tallies:
    """Everything in one read transaction (`Store.read` gives it one snapshot)."""
    return Tallies(
        runs=_runs(conn),
        queued=_queued(conn),
        outbox=_outbox(conn),
        run_tasks=_run_tasks(conn),
        deliveries=_deliveries(conn),
    )


def _runs(conn: Connection) -> dict[str, int]:
    found = {str(status): 0 for status in Status}
    rows = conn.execute(select(runs.c.status, func.count()).group_by(runs.c.status))
    found.update({status: int(n) for status, n in rows})
    return found


def _queued(conn: Connection) -> dict[str, int]:
    """Pending runs of each configured workspace; the outer join keeps idle ones at zero."""
    pending = and_(runs.c.workspace_id == workspaces.c.id, runs.c.status == str(Status.PENDING))
    rows = conn.execute(
        select(workspaces.c.name, func.count(runs.c.id))
        .select_from(workspaces.outerjoin(runs, pending))
        .where(workspaces.c.configured)
        .group_by(workspaces.c.name)
    )
    return {name: int(n) for name, n in rows}


def _outbox(conn: Connection) -> dict[tuple[str, str], int]:
    rows = conn.execute(
        select(outbox.c.kind, outbox.c.status, func.count()).group_by(
            outbox.c.kind, outbox.c.status
        )
    ).all()
    found = {(kind, status): 0 for kind in {r[0] for r in rows} for status in outbox_store.STATUSES}
    found.update({(kind, status): int(n) for kind, status, n in rows})
    return found


def _run_tasks(conn: Connection) -> dict[tuple[str, str], int]:
    r = run_task_results
    rows = conn.execute(
        select(r.c.task_name, r.c.status, func.count()).group_by(r.c.task_name, r.c.status)
    )
    return {(task, status): int(n) for task, status, n in rows}


def _deliveries(conn: Connection) -> dict[str, tuple[int, int]]:
    d = notification_deliveries
    failed = func.sum(case((d.c.delivered, 0), else_=1))
    rows = conn.execute(select(d.c.destination, func.count(), failed).group_by(d.c.destination))
    return {destination: (int(n), int(bad or 0)) for destination, n, bad in rows}
