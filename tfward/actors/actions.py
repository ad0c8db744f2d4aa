"""The actions a caller takes on a run — cancel, force-cancel, confirm, discard — one function
each, for the API and the release executor alike.

Each records the request in the store, in one transaction, through the pure state machine
(`runs/model.py`): a compare-and-set on the run, so of two conflicting requests (confirm and
discard) the first wins and the second is refused with the reason, and a read after the answer
shows the request. Then it tells the run's workspace actor, which owns the run task: the actor
interrupts terraform, hands the waiting pipeline its decision, or finishes a queued run. The
run becomes terminal only in the termination funnel (docs/architecture.md §4).
"""

from __future__ import annotations

from sqlalchemy import Connection

from tfward.ids import now
from tfward.runs import model
from tfward.runs.model import Run
from tfward.store import audit as audit_store
from tfward.store import runs as run_store
from tfward.store import workspaces as ws_store

from .handle import Decision
from .supervisor import Supervisor
from .workspace import Cancel, Decide


async def cancel_run(
    supervisor: Supervisor,
    run_id: str,
    *,
    force: bool = False,
    audit: audit_store.Attempt | None = None,
) -> Run:
    """Record a cancel (or a force-cancel) and tell the run's actor. Raises InvalidTransition
    when the state machine refuses (the run ended, or a force-cancel before any cancel) and
    NotFound for an unknown run or a workspace without an actor (removed from the config).
    `audit` (an admin's force-cancel) is recorded in the same transaction."""

    def tx(conn: Connection) -> Run:
        _, after = run_store.transition(conn, run_id, lambda r: model.cancel(r, now(), force=force))
        if audit is not None:
            where = {"status": str(after.status), "stage": after.stage and str(after.stage)}
            audit_store.record(conn, audit, detail={"workspace": after.workspace, **where})
        return after

    run = await supervisor.rt.store.write(tx)
    supervisor.tell(run.workspace, Cancel(run_id, force))
    return run


async def confirm_run(supervisor: Supervisor, run_id: str, *, by: str | None) -> Run:
    """Record a confirm (idempotent; refused once discarded, once the plan expired, or when
    the run no longer holds the workspace lock: seed M7) and tell the run's actor."""

    def tx(conn: Connection) -> Run:
        run = run_store.get_run(conn, run_id)
        lock = ws_store.get_lock(conn, run_store.workspace_id_of(conn, run_id))
        after = model.confirm(run, now(), by=by, lock_holder=lock.run_id if lock else None)
        return run_store.save(conn, run, after, whole=True)

    run = await supervisor.rt.store.write(tx)
    supervisor.tell(run.workspace, Decide(run_id, Decision.CONFIRM))
    return run


async def discard_run(
    supervisor: Supervisor, run_id: str, *, by: str | None, reason: str | None = None
) -> Run:
    """Record a discard (idempotent; refused once confirmed) and tell the run's actor, whose
    pipeline then ends the run `discarded` through the funnel."""

    def tx(conn: Connection) -> Run:
        return run_store.transition(
            conn, run_id, lambda r: model.discard(r, now(), by=by, reason=reason)
        )[1]

    run = await supervisor.rt.store.write(tx)
    supervisor.tell(run.workspace, Decide(run_id, Decision.DISCARD, run.discard_reason))
    return run
