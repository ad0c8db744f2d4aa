"""The termination funnel: the one function every run ends through (seed O1).

Success, terraform error, an exception in our code, cancel, force-cancel, stage timeout, a
mandatory run-task failure, daemon shutdown, discard, plan expiry, crash recovery: whatever
ends a run calls `finish_run`, shielded, and it does every step of the termination contract
(docs/architecture.md §4):

  1. on apply paths, whatever state terraform left in the run directory, even partial, becomes
     a state version before anything else (seed C2); if it cannot be stored the run is
     `applied_state_error` and keeps the workspace lock (seed O5);
  2. the full log is stored (seed H3);
  3. the working directory is removed (C2, H2);
  4. in ONE transaction, the moment the outcome becomes visible: status and stage become
     terminal (seed H1), the workspace lock is released unless the outcome keeps it (C2),
     run-task tokens are revoked (C4/C5), the notification for the outcome is put in the
     outbox (M5) — after an apply that stored a state, with its run triggers and drift clear
     (H5); for a plan recorded without its JSON, `show -json` after the run (planjson.py) —
     the process record is cleared;
  5. the run's live log is retired; housekeeping nothing waits for (`Ending.after_record`:
     the state backups' pruning) is done.
Everything is done before step 4 commits, so a client that sees the run terminal can rely on
every other step having happened.
Critical sections are context managers in the pipeline and are exited before this runs (C1).

Storage faults (docs/architecture.md §10): the funnel never destroys the only copy. Steps 1, 2
and 4 wait out a storage fault (backoff, woken by recovery) instead of failing; meanwhile the
run stays non-terminal, its directory stays and the workspace stays locked. Only when storage
is back are the outcome recorded and the directory removed. A state refused for what it is
(another lineage, an older serial, not a state) is no storage fault: the run is
`applied_state_error` at once, keeps the lock, and the backup file keeps the state. If the
daemon gives up waiting (`Runtime.give_up`: a hard stop, or the end of the shutdown grace)
the run is left as it is — directory, lock, status — for recovery at the next start. Another
error in a step is logged and does not stop the later steps, except that a log that could not
be stored keeps the directory (its output files hold the lines; recovery appends them).

Fencing (docs/architecture.md §15): every write here checks the workspace's lease (the actor's
fence). A daemon that lost the workspace gets FencedOut at its first write: the funnel stops
there, writes nothing, keeps the directory (the new owner's recovery reads it if it can reach
it) and returns None. A run that ends `failed` / `owner_lost` keeps the workspace locked, with
the lock's reason saying what to check before unlocking.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import trio
from sqlalchemy import Connection

from tfward.errors import FencedOut, StorageUnavailable
from tfward.ids import now
from tfward.runs import model
from tfward.runs.classify import class_of_kind
from tfward.runs.model import ErrorClass, ErrorKind, Run, Status
from tfward.store import credentials, followups, tasks
from tfward.store import outbox as outbox_store
from tfward.store import runs as run_store
from tfward.store import workspaces as ws_store
from tfward.store.health import patient

from . import workdir
from .runlog import RunLog
from .runtime import Runtime

log = logging.getLogger(__name__)

TX_ATTEMPTS = 3

TRIGGERS = {
    Status.PLANNED_AND_FINISHED: "run:completed",
    Status.APPLIED: "run:completed",
    Status.DISCARDED: "run:completed",
    Status.APPLIED_STATE_ERROR: "run:errored",
    Status.FAILED: "run:errored",
    Status.CANCELLED: "run:cancelled",
    Status.FORCE_CANCELLED: "run:cancelled",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended. `status` is terminal, or None with `requeue` (plan again) or `detach`
    (daemon shutdown while the run waits for confirmation: it stays `apply_pending`).
    `error_class` is what runs/classify.py made of a terraform failure; None: by the kind."""

    status: Status | None
    error_kind: ErrorKind | None = None
    error_message: str | None = None
    requeue: str | None = None
    detach: bool = False
    warning: str | None = None
    error_class: ErrorClass | None = None

    @classmethod
    def requeued(cls, reason: str) -> Outcome:
        return cls(None, requeue=reason)

    @classmethod
    def failed(
        cls, kind: ErrorKind, message: str, error_class: ErrorClass | None = None
    ) -> Outcome:
        return cls(Status.FAILED, kind, message, error_class=error_class)

    def describe(self) -> str:
        if self.requeue:
            return f"back to pending, to be planned again: {self.requeue}"
        if self.detach:
            return "left as it is: the daemon is stopping"
        text = str(self.status)
        if self.error_kind:
            text += f" ({self.error_kind})"
        return text + (f": {self.error_message}" if self.error_message else "")


@dataclass
class Ending:
    """What the funnel needs to know about the run being finished."""

    run_id: str
    workspace: str
    workspace_id: str
    log: RunLog
    run_dir: Path
    # Set once `terraform apply` was started: its state must be kept, whatever happened.
    apply_started: bool = False
    state_saved: bool = False
    # The plan was recorded without its JSON: the final transaction queues `show -json` after
    # the run (planjson.py).
    plan_json_after: bool = False
    # Housekeeping that nothing waits for (the state backups' pruning): done, best effort,
    # after the outcome is recorded.
    after_record: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


class StateKeeper(Protocol):
    """Stores the state terraform left in a run directory (the pipeline is one)."""

    async def keep_state(self, ending: Ending, kind: str) -> None: ...


async def finish_run(
    rt: Runtime, ending: Ending, outcome: Outcome, keeper: StateKeeper | None = None
) -> Run | None:
    """Finish a run. Shielded from cancellation; storage faults are waited out until
    `rt.give_up` is set. Returns the final run, or None when the daemon gave up waiting for
    storage (recovery at the next start finishes the run)."""
    final: Run | None = None
    with trio.CancelScope(shield=True), patient(rt.give_up):
        try:
            outcome = await _keep_state(ending, outcome, keeper)
            ending.log.note(f"run finished: {outcome.describe()}")
            log_stored = await _store_log(ending)
            if not outcome.detach and log_stored:
                await _remove_dir(ending)
            final = await _record(rt, ending, outcome)
            for step in ending.after_record:
                await step()
        except StorageUnavailable as exc:
            log.error(
                "run %s of %s left unfinished, its directory and lock kept for recovery at the "
                "next start: %s",
                ending.run_id,
                ending.workspace,
                exc,
            )
            return None
        except FencedOut as exc:
            log.warning(
                "run %s of %s left to the daemon that took the workspace over (its directory "
                "kept): %s",
                ending.run_id,
                ending.workspace,
                exc,
            )
            return None
        finally:
            rt.live_logs.pop(ending.run_id, None)
        log.info("run %s of %s finished: %s", ending.run_id, ending.workspace, outcome.describe())
    return final


async def _keep_state(ending: Ending, outcome: Outcome, keeper: StateKeeper | None) -> Outcome:
    if not ending.apply_started or ending.state_saved or keeper is None:
        return outcome
    kind = "apply" if outcome.status is Status.APPLIED else "partial"
    try:
        await keeper.keep_state(ending, kind)
    except (StorageUnavailable, FencedOut):
        raise  # storage did not come back before the daemon gave up, or we lost the workspace
    except Exception as exc:  # a refused state (or a bug): the outcome records it (seed O5)
        log.exception("run %s: could not store the state terraform left", ending.run_id)
        ending.log.note(
            f"could not store the state terraform wrote: {exc}; the workspace stays "
            f"locked; a copy is in the state backups"
        )
        return Outcome(
            Status.APPLIED_STATE_ERROR,
            ErrorKind.STATE,
            f"terraform changed infrastructure but the state could not be stored: "
            f"{exc}"
            + (
                f" (run outcome was: {outcome.describe()})"
                if outcome.status is not Status.APPLIED
                else ""
            ),
        )
    if outcome.status is Status.APPLIED_STATE_ERROR:
        # The pipeline's own save failed but this one worked: the state is safe.
        return Outcome(Status.APPLIED, warning="the state was stored on a second attempt")
    return outcome


async def _store_log(ending: Ending) -> bool:
    """Store the whole log; False (logged) when it failed for something else than storage."""
    try:
        await ending.log.close()
    except (StorageUnavailable, FencedOut):
        raise
    except Exception:  # the directory stays: its output files hold what the log lacks
        log.exception("run %s: failed to store the log", ending.run_id)
        return False
    return True


async def _remove_dir(ending: Ending) -> None:
    try:
        await trio.to_thread.run_sync(workdir.remove, ending.run_dir)
    except OSError:  # recovery removes what is left of a finished run's directory
        log.exception("run %s: failed to remove the run directory", ending.run_id)


async def _record(rt: Runtime, ending: Ending, outcome: Outcome) -> Run | None:
    """The one transaction that makes the outcome visible. Storage faults are waited out (a
    patient write); another error is retried a few times, then recovery finishes the run."""
    downstream = _downstream(rt, ending.workspace)

    def wanted(trigger: str, run: Run) -> bool:  # a row no destination wants is written done
        return rt.notifies(ending.workspace, trigger, refresh_only=run.refresh_only)

    for attempt in range(TX_ATTEMPTS):
        try:
            return await rt.store.write(
                lambda c: _record_tx(c, ending, outcome, downstream, wanted)
            )
        except (StorageUnavailable, FencedOut):
            raise
        except Exception:  # retried; recovery finishes the run if all fail
            log.exception(
                "run %s: recording the outcome failed (attempt %d)", ending.run_id, attempt + 1
            )
        await trio.sleep(min(5.0, 0.2 * 2**attempt))
    log.critical(
        "run %s: could not record its outcome; recovery will finish it at next start", ending.run_id
    )
    return None


def _downstream(rt: Runtime, workspace: str) -> tuple[str, ...]:
    """The workspaces an apply of `workspace` triggers runs in (`triggers_runs_in`)."""
    try:
        return rt.config.workspace(workspace).triggers_runs_in
    except KeyError:
        return ()


def _record_tx(
    conn: Connection,
    ending: Ending,
    outcome: Outcome,
    downstream: tuple[str, ...] = (),
    wanted: Callable[[str, Run], bool] = lambda trigger, run: True,
) -> Run:
    when = now()
    run = before = run_store.get_run(conn, ending.run_id)
    if run.status.is_terminal:
        return run  # finished already (a retried transaction that had committed)
    if outcome.detach:
        return run
    if outcome.requeue is not None:
        final = model.requeue(run, when, reason=outcome.requeue, nothing_applied=True)
        run_store.save(conn, run, final, whole=True)
    else:
        assert outcome.status is not None
        if outcome.warning:
            run = model.add_warning(run, outcome.warning)
        final = model.finish(
            run,
            when,
            outcome.status,
            error_kind=outcome.error_kind,
            error_message=outcome.error_message,
            error_class=outcome.error_class
            or (class_of_kind(outcome.error_kind) if outcome.error_kind else None),
        )
        run_store.save_final(conn, before, final, whole=True)
    run_store.set_process(conn, run.id, None, None)
    if outcome.error_kind is ErrorKind.OWNER_LOST:
        ws_store.keep_lock_for(conn, ending.workspace_id, run.id, outcome.error_message or "")
    elif outcome.status is not Status.APPLIED_STATE_ERROR:
        # A run releases only its own lock; a user's lock stays.
        lock = ws_store.get_lock(conn, ending.workspace_id)
        if lock is not None and lock.run_id == run.id:
            ws_store.release_lock(conn, ending.workspace_id, run_id=run.id)
    tasks.revoke_for_run(conn, run.id, when)
    credentials.revoke_for_run(conn, run.id, when)
    _notify(conn, ending, run, final, outcome, wanted)
    # An apply that stored a new state: run triggers downstream and drift clear (seed H5).
    followups.after_finish(conn, final, ending.workspace_id, downstream)
    if ending.plan_json_after and outcome.requeue is None:
        followups.plan_json(conn, final)
    return final


def _notify(
    conn: Connection,
    ending: Ending,
    before: Run,
    final: Run,
    outcome: Outcome,
    wanted: Callable[[str, Run], bool],
) -> None:
    if outcome.requeue is not None:
        if before.status is Status.PLANNING:
            return  # a shutdown re-queue: nothing for a human to do
        trigger, key = "run:needs_attention", f"notify:{final.id}:requeue:{now().isoformat()}"
    else:
        trigger, key = TRIGGERS[final.status], f"notify:{final.id}:final"
    outbox_store.notify(
        conn,
        trigger,
        key=key,
        workspace_id=ending.workspace_id,
        workspace=ending.workspace,
        run=final,
        message=outcome.describe(),
        wanted=wanted(trigger, final),
    )
