"""Persistence of outbox jobs: claim with a lease, finish, retry later, dead-letter, list.

A row is `queued` (waiting for `next_attempt_at`), `running` (claimed until
`lease_expires_at`), `done` or `dead`. Claiming is a compare-and-set in one short write
transaction and counts an attempt; every later write about the attempt checks the row is still
`running` with that attempt count, so a worker whose lease expired (and whose row another
worker re-claimed) can never overwrite the newer attempt. A row with a workspace is claimable
only when no earlier row of that workspace is `queued` or `running`: follow-ups of one
workspace run in creation order (seed H5).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)

from tfward.errors import InvalidTransition, NotFound
from tfward.ids import new_id, now
from tfward.runs.model import Run

from .changes import OUTBOX, touch
from .tables import outbox, workspaces

QUEUED, RUNNING, DONE, DEAD = "queued", "running", "done", "dead"
STATUSES = (QUEUED, RUNNING, DONE, DEAD)


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed row: what the worker runs. `attempts` counts this attempt."""

    id: str
    seq: int
    kind: str
    payload: dict[str, Any]
    run_id: str | None
    workspace_id: str | None
    attempts: int
    lease_expires_at: datetime
    idempotency_key: str
    created_at: datetime


# ---- writing rows (in the caller's transaction) ---------------------------------------------

# Built once, with bind parameters: every run writes several rows and the worker looks at the
# queue after every burst of commits; building these statements cost more than running them.
_BY_KEY = select(outbox.c.id).where(outbox.c.idempotency_key == bindparam("key"))
_NEXT_SEQ = select(func.coalesce(func.max(outbox.c.seq), 0) + 1)
_INSERT = insert(outbox)


def enqueue(
    conn: Connection,
    kind: str,
    payload: dict[str, Any],
    *,
    key: str,
    run_id: str | None = None,
    workspace_id: str | None = None,
    done: bool = False,
) -> bool:
    """Add an outbox row in the caller's transaction. The idempotency key makes a repeat a
    no-op; returns whether a row was added. `done`: there is nothing to do (a notification no
    destination wants): the row is written `done`, a record of the event the worker never
    claims."""
    if conn.execute(_BY_KEY, {"key": key}).first():
        return False
    seq = conn.execute(_NEXT_SEQ).scalar_one()
    created = now()
    conn.execute(
        _INSERT,
        {
            "id": new_id("ob"),
            "seq": seq,
            "kind": kind,
            "payload": payload,
            "run_id": run_id,
            "workspace_id": workspace_id,
            "status": DONE if done else QUEUED,
            "attempts": 0,
            "next_attempt_at": created,
            "idempotency_key": key,
            "created_at": created,
            "done_at": created if done else None,
        },
    )
    if not done:
        touch(conn, OUTBOX)  # due now: the worker looks
    return True


def notification(
    trigger: str,
    *,
    workspace: str | None = None,
    run: Run | None = None,
    run_id: str | None = None,
    message: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The payload of a `notify` row, the one shape every notification has: the trigger, the
    workspace, the run's id, status, kind of error and message when there is a run, and a
    human `message` (the outcome, a run-task finding, what drifted). `extra` adds fields of a
    trigger's own (a release's counts, drifted addresses)."""
    return {
        "trigger": trigger,
        "workspace": workspace if workspace is not None else (run.workspace if run else None),
        "run_id": run.id if run is not None else run_id,
        "run_status": str(run.status) if run is not None else None,
        "error_kind": str(run.error_kind) if run is not None and run.error_kind else None,
        "run_message": run.message if run is not None else None,
        "message": message,
        **extra,
    }


def notify(
    conn: Connection,
    trigger: str,
    *,
    key: str,
    workspace_id: str | None = None,
    workspace: str | None = None,
    run: Run | None = None,
    run_id: str | None = None,
    message: str | None = None,
    wanted: bool = True,
    **extra: Any,
) -> bool:
    """Queue a notification (a `notify` row, fanned out to destinations by the worker) in the
    caller's transaction; see `notification` for the payload. Returns whether a row was added
    (the idempotency `key` makes a repeat a no-op). `wanted` False: no destination wants it
    (`Config.notifies`): the row records the event, `done` at once, with nothing to send."""
    payload = notification(
        trigger, workspace=workspace, run=run, run_id=run_id, message=message, **extra
    )
    return enqueue(
        conn,
        "notify",
        payload,
        key=key,
        run_id=run.id if run is not None else run_id,
        workspace_id=workspace_id,
        done=not wanted,
    )


def notify_status(
    conn: Connection, run: Run, workspace_id: str, trigger: str, *, wanted: bool = True
) -> bool:
    """A run reached a status a destination may watch (`run:planning`, `run:needs_attention`,
    `run:applying`); one row per status change (`wanted`: see `notify`)."""
    changed = run.status_changed_at.isoformat() if run.status_changed_at else None
    return notify(
        conn,
        trigger,
        key=f"notify:{run.id}:{trigger}:{changed}",
        workspace_id=workspace_id,
        run=run,
        wanted=wanted,
    )


def _due(when: Any) -> Any:
    return or_(
        and_(outbox.c.status == QUEUED, outbox.c.next_attempt_at <= when),
        # A lease that ran out: the process that held it died or hung (seed H6).
        and_(outbox.c.status == RUNNING, outbox.c.lease_expires_at <= when),
    )


def _in_order() -> Any:
    earlier = outbox.alias("earlier")
    blocked = exists().where(
        earlier.c.workspace_id == outbox.c.workspace_id,
        earlier.c.seq < outbox.c.seq,
        earlier.c.status.in_((QUEUED, RUNNING)),
    )
    return or_(outbox.c.workspace_id.is_(None), ~blocked)


# The worker's look at the queue, built once: `when` and the rows to leave out (`exclude`, the
# worker's own jobs in flight) are bound at each call.
_CLAIMABLE = (
    _due(bindparam("when")),
    _in_order(),
    outbox.c.id.not_in(bindparam("exclude", expanding=True)),
)
_HAS_DUE = select(outbox.c.id).where(*_CLAIMABLE).limit(1)
_DUE_ROWS = select(outbox).where(*_CLAIMABLE).order_by(outbox.c.seq).limit(bindparam("limit"))
_DUE_ROWS_LOCKED = _DUE_ROWS.with_for_update(skip_locked=True, of=outbox)
_NEXT_RETRY = select(func.min(outbox.c.next_attempt_at)).where(
    outbox.c.status == QUEUED, _in_order()
)
_NEXT_LEASE_END = select(func.min(outbox.c.lease_expires_at)).where(
    outbox.c.status == RUNNING, outbox.c.id.not_in(bindparam("exclude", expanding=True))
)
# Built once, as those above (every job is claimed and ended): a claim's compare-and-set (its SET
# from the parameters' other keys), and "the row is still this attempt's" for later writes.
_CLAIM = update(outbox).where(
    outbox.c.id == bindparam("b_id"),
    outbox.c.status == bindparam("b_status"),
    outbox.c.attempts == bindparam("b_attempts"),
)
_MINE = and_(
    outbox.c.id == bindparam("b_id"),
    outbox.c.status == RUNNING,
    outbox.c.attempts == bindparam("b_attempts"),
)
_UPDATE_MINE = update(outbox).where(_MINE)
_STILL_MINE = select(outbox.c.id).where(_MINE)


def has_due(conn: Connection, when: datetime, exclude: frozenset[str] = frozenset()) -> bool:
    """Whether some row could be claimed now (a cheap read before a write)."""
    found = conn.execute(_HAS_DUE, {"when": when, "exclude": sorted(exclude)}).first()
    return found is not None


def next_due(conn: Connection, exclude: frozenset[str] = frozenset()) -> datetime | None:
    """When the next row becomes claimable by time alone: the earliest retry of a row not
    waiting behind an earlier one, or the earliest lease end of a row not in `exclude` (the
    caller's own jobs in flight)."""
    retry = conn.execute(_NEXT_RETRY).scalar()
    lease = conn.execute(_NEXT_LEASE_END, {"exclude": sorted(exclude)}).scalar()
    # min() keeps the column's type: these come back as aware datetimes.
    found: list[datetime] = [v for v in (retry, lease) if v is not None]
    return min(found) if found else None


def claim(
    conn: Connection,
    when: datetime,
    limit: int,
    lease: float,
    exclude: frozenset[str] = frozenset(),
    claimed_by: str | None = None,
) -> list[Job]:
    """Claim up to `limit` due rows, oldest first, each by compare-and-set: status `running`,
    one more attempt, lease until `when + lease`, `claimed_by` this daemon. On PostgreSQL the
    rows are read `FOR UPDATE SKIP LOCKED`: daemons claiming at once take different rows
    instead of queueing behind each other (docs/architecture.md §15)."""
    query = _DUE_ROWS_LOCKED if conn.dialect.name == "postgresql" else _DUE_ROWS
    rows = conn.execute(query, {"when": when, "exclude": sorted(exclude), "limit": limit}).all()
    until = when + timedelta(seconds=lease)
    claimed: list[Job] = []
    for row in rows:
        result = conn.execute(
            _CLAIM,
            {
                "b_id": row.id, "b_status": row.status, "b_attempts": row.attempts,
                "status": RUNNING, "attempts": row.attempts + 1, "lease_expires_at": until,
                "claimed_by": claimed_by,
            },
        )  # fmt: skip
        if result.rowcount == 1:
            claimed.append(
                Job(
                    row.id,
                    row.seq,
                    row.kind,
                    dict(row.payload),
                    row.run_id,
                    row.workspace_id,
                    row.attempts + 1,
                    until,
                    row.idempotency_key,
                    row.created_at,
                )
            )
    return claimed


def _attempt(job: Job) -> dict[str, Any]:
    """The parameters of `_MINE` for `job`'s attempt."""
    return {"b_id": job.id, "b_attempts": job.attempts}


def finish(conn: Connection, job: Job, when: datetime) -> bool:
    """Mark the attempt done. False when the row is no longer this attempt's."""
    values = {"status": DONE, "done_at": when, "lease_expires_at": None, "last_error": None}
    return conn.execute(_UPDATE_MINE, {**_attempt(job), **values}).rowcount == 1


def fail(conn: Connection, job: Job, error: str, retry_at: datetime | None) -> bool:
    """Record a failed attempt: queued again for `retry_at`, or `dead` when it is None."""
    values: dict[str, Any] = {"lease_expires_at": None, "last_error": error[:4000]}
    if retry_at is None:
        values["status"] = DEAD
    else:
        values.update(status=QUEUED, next_attempt_at=retry_at)
    return conn.execute(_UPDATE_MINE, {**_attempt(job), **values}).rowcount == 1


def still_mine(conn: Connection, job: Job) -> bool:
    return conn.execute(_STILL_MINE, _attempt(job)).first() is not None


def reclaim_running(conn: Connection, when: datetime, node_id: str | None = None) -> int:
    """At daemon start no process of this daemon holds any row: every `running` row it (or
    a daemon before claims were signed) claimed goes back to the queue now instead of waiting
    for its lease; other daemons' rows keep theirs. The interrupted attempt still counts."""
    query = update(outbox).where(outbox.c.status == RUNNING)
    if node_id is not None:
        query = query.where(or_(outbox.c.claimed_by == node_id, outbox.c.claimed_by.is_(None)))
    result = conn.execute(
        query.values(status=QUEUED, next_attempt_at=when, lease_expires_at=None)
    )
    if result.rowcount:
        touch(conn, OUTBOX)
    return int(result.rowcount)


def retry_dead(conn: Connection, row_id: str, when: datetime) -> dict[str, Any]:
    """Put a dead row back in the queue with a fresh set of attempts. 409 unless dead."""
    row = get_row(conn, row_id)
    if row["status"] != DEAD:
        raise InvalidTransition(
            f"cannot retry outbox row {row_id}: it is {row['status']}; only dead rows are retried"
        )
    conn.execute(
        update(outbox)
        .where(outbox.c.id == row_id, outbox.c.status == DEAD)
        .values(status=QUEUED, attempts=0, next_attempt_at=when, lease_expires_at=None)
    )
    touch(conn, OUTBOX)
    return get_row(conn, row_id)


def _select() -> Any:
    return select(outbox, workspaces.c.name.label("workspace")).outerjoin(
        workspaces, workspaces.c.id == outbox.c.workspace_id
    )


def get_row(conn: Connection, row_id: str) -> dict[str, Any]:
    row = conn.execute(_select().where(outbox.c.id == row_id)).first()
    if row is None:
        raise NotFound(f"outbox row {row_id} not found")
    return dict(row._mapping)


def list_rows(
    conn: Connection,
    *,
    status: str | None = None,
    kind: str | None = None,
    run_id: str | None = None,
    limit: int | None = 100,
) -> list[dict[str, Any]]:
    """Rows with their workspace name, oldest first (`limit=None`: all of them)."""
    query = _select()
    if status is not None:
        query = query.where(outbox.c.status == status)
    if kind is not None:
        query = query.where(outbox.c.kind == kind)
    if run_id is not None:
        query = query.where(outbox.c.run_id == run_id)
    return [dict(r._mapping) for r in conn.execute(query.order_by(outbox.c.seq).limit(limit))]


def counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status))
    found = {status: 0 for status in STATUSES}
    found.update({status: int(n) for status, n in rows})
    return found


def prune_done(conn: Connection, before: datetime, limit: int) -> int:
    """Delete up to `limit` rows done before `before`; how many. Queued, running and dead rows
    are never pruned: they are work, or wait for an operator."""
    oldest = (
        select(outbox.c.id)
        .where(outbox.c.status == DONE, outbox.c.done_at < before)
        .order_by(outbox.c.done_at)
        .limit(limit)
    )
    return conn.execute(delete(outbox).where(outbox.c.id.in_(oldest))).rowcount
