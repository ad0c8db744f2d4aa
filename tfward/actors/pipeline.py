"""The run pipeline: one task per run, from `pending` to the termination funnel.

    plan phase:   fetching -> init -> pre_plan -> planning -> saving_plan -> post_plan
    (apply_pending: wait for confirm, discard or plan expiry, workspace locked)
    apply phase:  restoring_plan -> pre_apply -> applying -> saving_state -> post_apply

At `pre_plan`, `post_plan`, `pre_apply` and `post_apply` the workspace's script hooks run
(hooks.py), then its run tasks (gate.py).

Each stage runs under its own timeout. The whole run runs inside the handle's cancel scope:
cancel, force-cancel and daemon shutdown cancel it, and terraform is then stopped by the driver
(SIGINT, grace, SIGKILL). Whatever happens, `RunPipeline.run` ends by calling the termination
funnel exactly once, shielded.

The run is patient with storage (docs/architecture.md §10): a store call that meets a storage
fault waits for storage and tries again instead of failing the run, so only a user, a timeout
or the daemon's shutdown stops terraform — never the database or the disk.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import trio
from sqlalchemy import Connection

from tfward.config import WorkspaceConfig
from tfward.errors import FencedOut, PlanUnusable, StageFailed, StorageUnavailable
from tfward.ids import now
from tfward.obs import logs
from tfward.obs.metrics import PlanReason
from tfward.runs import model
from tfward.runs.model import (
    CRITICAL_STAGES,
    ErrorClass,
    ErrorKind,
    Run,
    Stage,
    Status,
)
from tfward.runtasks.enforcement import tasks_at
from tfward.store import artifacts, states
from tfward.store import outbox as outbox_store
from tfward.store import runs as run_store
from tfward.store.health import patient

from . import rundir, workdir
from .children import RunChildren
from .context import RunContext
from .funnel import Ending, Outcome, finish_run
from .gate import RunTaskGate
from .handle import Decision, Phase, RunHandle, StopReason
from .hooks import StageHooks
from .planner import Planner
from .remote_state import RemoteStateAccess, new_token
from .rundir import RunDirectory
from .runlog import RunLog
from .runtime import Runtime
from .statekeeper import RunStateKeeper

log = logging.getLogger(__name__)


# Stages whose time limit is for terraform: it runs on while storage fails, and so does the
# limit. The limits of tfward's own stages do not run while storage fails.
_TERRAFORM_STAGES = frozenset({Stage.INIT, Stage.PLANNING, Stage.APPLYING})

# Run-task (and hook) stages: without a task or hook they pass in memory only.
_TASK_STAGES = frozenset({Stage.PRE_PLAN, Stage.POST_PLAN, Stage.PRE_APPLY, Stage.POST_APPLY})
# Not recorded on its own: the plan's one write, milliseconds, and nothing reads it after a
# crash (recovery plans a `planning` run again whatever its stage). The run shows `planning`
# until the plan's record says `apply_pending` or `restoring_plan`. (`saving_state` is written
# when it begins: for a large state, it is the step an operator watches on the run's page.)
_IN_MEMORY_STAGES = frozenset({Stage.SAVING_PLAN})


@dataclass(frozen=True, slots=True)
class _Start:
    """What the run's first transaction found: the run, where its log goes on, and for a run
    that starts planning now what `fetching` needs from the store."""

    run: Run
    log_end: tuple[int, int]  # the next chunk's seq, the stored log's length
    inputs: rundir.Inputs | None


class RunPipeline:
    def __init__(self, rt: Runtime, handle: RunHandle, ws: WorkspaceConfig) -> None:
        self.rt = rt
        self.handle = handle
        self.ws = ws
        self.ws_id = rt.workspace_ids[ws.name]
        self.run_id = handle.run_id
        self.run_dir = rt.run_dir(self.run_id)
        self.stage: Stage | None = None
        self._recorded_stage: Stage | None = None  # the stage the database shows
        self.phase = Phase.PENDING
        token = new_token()  # the run's remote-state credential, masked like a secret
        self.log = RunLog(self.run_id, rt.store, [*ws.sensitive_values(), token])
        self.ctx = RunContext(rt, ws, self.ws_id, self.run_id, self.log)
        self.remote_state = RemoteStateAccess(self.ctx, token)
        self.ending = Ending(self.run_id, ws.name, self.ws_id, self.log, self.run_dir)
        self.keeper = RunStateKeeper(self.ctx)
        self.tasks = RunTaskGate(self.ctx)
        self.children = RunChildren(
            self.ctx, handle.control, lambda: self.stage, self.remote_state
        )
        self.hooks = StageHooks(self.ctx, self.children)
        self.dir = RunDirectory(
            self.ctx,
            workdir.cli_config_text(rt.config.terraform, rt.dev_mirror),
            self.children,
        )
        self.planner = Planner(self.ctx, self.children)
        # The plan's record checked it for an apply in this directory: the problem, or "".
        self._in_place: str | None = None

    # ---- the task -------------------------------------------------------------------------

    async def run(self) -> Run | None:
        """Drive the run to its end. Never raises for run failures: they become the outcome.
        If the daemon itself cancels this task, the funnel still runs (shielded) first."""
        outcome: Outcome | None = None
        self.rt.live_logs[self.run_id] = self.log
        logs.bind(run_id=self.run_id, workspace=self.ws.name, stage=None)
        try:
            with patient(self.rt.give_up):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.log.flusher, name=f"log-flusher-{self.run_id}")
                    outcome = await self._guarded()
                    nursery.cancel_scope.cancel()
        finally:
            if outcome is None:
                outcome = self._stopped_outcome()
            with trio.CancelScope(shield=True):
                final = await finish_run(self.rt, self.ending, outcome, keeper=self.keeper)
        return final

    async def _guarded(self) -> Outcome:
        try:
            with self.handle.scope:
                return await self._lifecycle()
            return self._stopped_outcome()
        except Exception as exc:  # noqa: BLE001 — every failure becomes an outcome
            return self._classify(_leaf(exc))

    def _classify(self, exc: BaseException) -> Outcome:
        where = f" in stage {self.stage}" if self.stage else ""
        if isinstance(exc, StorageUnavailable):
            # Only once the daemon gave up waiting for storage (it is stopping for good).
            return self._stopped_outcome()
        if isinstance(exc, FencedOut):
            # Another daemon took the workspace over; the funnel's first write stops too,
            # leaving the run (and its directory) to the new owner (docs/architecture.md §15).
            log.warning("run %s: %s", self.run_id, exc)
            return Outcome(None, detach=True)
        if isinstance(exc, PlanUnusable):
            self.log.note(f"the saved plan cannot be applied: {exc}; planning again")
            return Outcome.requeued(str(exc))
        if self.ending.state_saved:
            # The apply happened and its state is stored: a later failure does not undo that.
            self.log.note(f"after the apply{where}: {exc}")
            return Outcome(Status.APPLIED, warning=f"after the apply{where}: {exc}")
        if isinstance(exc, StageFailed):
            if self.stage is Stage.SAVING_STATE:
                return Outcome(Status.APPLIED_STATE_ERROR, ErrorKind.STATE, exc.message)
            error_class = ErrorClass(exc.error_class) if exc.error_class else None
            return Outcome.failed(ErrorKind(exc.kind), exc.message, error_class)
        log.error("run %s: internal error%s", self.run_id, where, exc_info=exc)
        self.log.note(f"internal error{where}: {type(exc).__name__}: {exc}")
        if self.stage is Stage.SAVING_STATE:
            return Outcome(
                Status.APPLIED_STATE_ERROR,
                ErrorKind.INTERNAL,
                f"internal error while saving the state: {exc}",
            )
        return Outcome.failed(
            ErrorKind.INTERNAL, f"internal error{where}: {type(exc).__name__}: {exc}"
        )

    def _stopped_outcome(self) -> Outcome:
        """The outcome when the run's scope was cancelled (or the daemon cancelled the task)."""
        if self.ending.state_saved:
            return Outcome(
                Status.APPLIED, warning="a stop request arrived after the apply finished"
            )
        if self.handle.stop_reason is StopReason.CANCEL:
            forced = self.handle.control.force.is_set()
            return Outcome(
                Status.FORCE_CANCELLED if forced else Status.CANCELLED,
                error_message=f"cancelled in stage {self.stage}" if self.stage else None,
            )
        if self.ending.apply_started:
            return Outcome.failed(
                ErrorKind.INTERRUPTED, f"the daemon stopped during stage {self.stage}"
            )
        if self.phase in (Phase.PENDING, Phase.WAITING):
            return Outcome(None, detach=True)  # not started, or waiting for confirmation
        return Outcome.requeued(f"the daemon stopped during stage {self.stage}")

    # ---- lifecycle --------------------------------------------------------------------------

    async def _lifecycle(self) -> Outcome:
        start = await self._begin()
        run = start.run
        if start.inputs is not None:
            run = await self._plan_phase(run, start.inputs)
            if run.status is Status.PLANNING:
                return Outcome(Status.PLANNED_AND_FINISHED)
        if run.status is Status.APPLY_PENDING:
            self.stage, self.phase = None, Phase.WAITING
            if not await self._wait_for_confirmation(run):
                return Outcome(Status.DISCARDED, error_message=self.handle.decision_reason)
            run = await self._transition(lambda r: model.begin_apply(r, now()), "run:applying")
        if run.status is not Status.APPLYING:
            raise StageFailed(
                ErrorKind.INTERNAL, f"run {self.run_id} cannot continue from {run.status}"
            )
        return await self._apply_phase(run)

    async def _begin(self) -> _Start:
        """The run's first transaction: the run as stored and where its log goes on; for a
        pending run also the start of its plan phase — `planning` (stage `fetching`), its
        `run:planning` notification, its remote-state credential — and what `fetching`
        reads (the current state, a pinned configuration). One write on the way from "run
        accepted" to "terraform started" instead of three reads and two writes. Cancellation:
        the write commits or rolls back before this returns."""
        ws_id, run_id = self.ws_id, self.run_id

        def tx(conn: Connection) -> _Start:
            end = artifacts.log_end(conn, run_id)
            run = run_store.get_run(conn, run_id)
            if run.status is not Status.PENDING:
                return _Start(run, end, None)
            planning = run_store.save(conn, run, model.start_planning(run, now()), whole=True)
            outbox_store.notify_status(
                conn, planning, ws_id, "run:planning", wanted=self._notifies(run, "run:planning")
            )
            self.remote_state.issue_in(conn)
            pinned = run.pinned_configuration_version_id
            return _Start(planning, end, rundir.read_inputs(conn, ws_id, pinned))

        start = await self.rt.store.write(tx)
        await self.log.open(start.log_end)
        if start.inputs is not None:
            self.remote_state.issued = True
            self.phase = Phase.PLANNING
        self._recorded_stage = start.run.stage
        return start

    async def _plan_phase(self, run: Run, inputs: rundir.Inputs) -> Run:
        """From `fetching` to the recorded plan. The stage `init` is recorded with the
        configuration version (the last write of `fetching`)."""
        self.log.note(f"run {run.id}: {run.operation} of workspace {self.ws.name}")
        async with self._stage(Stage.FETCHING):
            cv_sha = await self.dir.fetch(run, inputs, self._entering(Stage.INIT))
            self._recorded_stage = Stage.INIT
        async with self._stage(Stage.INIT):
            await self.dir.init(cv_sha)
        async with self._stage(Stage.PRE_PLAN):
            await self._checks(Stage.PRE_PLAN)
        async with self._stage(Stage.PLANNING):
            has_changes = await self.planner.plan(run)
            reviewed = self.planner.reviewed_before_apply(run, has_changes)
            # Nothing reads the plan JSON during the run: `show -json` runs after it.
            plan_json = await self.planner.show(run) if reviewed else None
        async with self._stage(Stage.SAVING_PLAN):
            plan_hash, also = await self._save_plan(plan_json, inputs.state_id)
        async with self._stage(Stage.POST_PLAN):
            await self._checks(Stage.POST_PLAN)
        self.stage = None
        run = await self.planner.record(has_changes, plan_hash, plan_json, also=also)
        self.children.forgotten()
        self._recorded_stage = run.stage  # an auto-apply: `restoring_plan`, entered with it
        if plan_json is None and run.status is Status.APPLYING:
            # The funnel queues it (planjson.py), whatever the outcome.
            self.ending.plan_json_after = True
            self.log.note("the plan JSON is made after the run: nothing reviews it before")
        return run

    async def _save_plan(
        self, plan_json: bytes | None, planned_state: str | None
    ) -> tuple[str, Callable[[Connection, Run], Run]]:
        """The plan file's hash, and what the transaction recording the plan also does: clear
        the ended process; when no `post_plan` check could read the plan before, store it (one
        write fewer; with checks it is stored here, before them); for a run that applies by
        itself, next, `_apply_here`."""
        plan_file = await trio.to_thread.run_sync((self.run_dir / workdir.PLAN_FILE).read_bytes)
        checked = self._checked(Stage.POST_PLAN)
        if checked:
            await self.rt.store.write(
                lambda c: artifacts.put_plan(c, self.run_id, plan_file, plan_json)
            )

        def also(conn: Connection, run: Run) -> Run:
            if not checked:
                artifacts.put_plan(conn, self.run_id, plan_file, plan_json)
            self.children.forget_process(conn)
            if run.status is Status.APPLYING:
                return self._apply_here(conn, run, planned_state)
            return run

        return artifacts.plan_sha256(plan_file), also

    def _apply_here(self, conn: Connection, run: Run, planned_state: str | None) -> Run:
        """In the plan's record, for a run that applies by itself next, in this directory (it
        holds the plan just hashed and stored, and its init): `restore_plan`'s check that the
        state has not moved since the plan, made here (`_in_place`: the problem, or ""); and,
        with no `pre_apply` check to pass first, `applying` entered too. So one transaction
        lies between terraform plan's exit and terraform apply's start."""
        current = states.current(conn, self.ws_id)
        moved = (current.id if current else None) != planned_state
        self._in_place = artifacts.STATE_MOVED if moved else ""
        if moved or self._checked(Stage.PRE_APPLY):
            return run
        return run_store.save(conn, run, model.enter_stage(run, Stage.APPLYING), whole=True)

    async def _apply_phase(self, run: Run) -> Outcome:
        self.phase = Phase.APPLYING
        async with self._stage(Stage.RESTORING_PLAN):
            if self._in_place is None:
                await self.dir.restore_plan(run)
            else:  # checked in the plan's record (`_apply_here`)
                self.dir.apply_in_place(self._in_place)
        async with self._stage(Stage.PRE_APPLY):
            await self._checks(Stage.PRE_APPLY)
        async with self._stage(Stage.APPLYING):
            self.ending.apply_started = True
            code = await self.children(
                ["apply", "-input=false", "-no-color", "-auto-approve", workdir.PLAN_FILE]
            )
            if code != 0:
                if self.log.parser.facts.stale_plan:
                    self.rt.metrics.plan_unusable(PlanReason.TERRAFORM_STALE)
                    raise PlanUnusable("terraform says the saved plan is stale")
                raise self.children.failed(ErrorKind.APPLY, "terraform apply", code)
        async with self._stage(Stage.SAVING_STATE):
            await self.keeper.keep_state(self.ending, "apply")
        async with self._stage(Stage.POST_APPLY):
            await self._checks(Stage.POST_APPLY)
        self.stage = None
        return Outcome(Status.APPLIED)

    # ---- stages -------------------------------------------------------------------------------

    async def _checks(self, stage: Stage) -> None:
        """A check stage: the workspace's script hooks, then its run tasks."""
        await self.hooks.run(stage)
        await self.tasks.pass_stage(stage)

    def _checked(self, stage: Stage) -> bool:
        """Whether the check stage `stage` has a run task or a hook to pass."""
        return any(str(stage) in a.stages for a in self.ws.run_tasks) or bool(self.hooks.at(stage))

    @contextlib.asynccontextmanager
    async def _stage(self, stage: Stage) -> AsyncIterator[None]:
        """Enter `stage` (recorded on the run), under its timeout; critical stages are counted
        and shielded from cancel requests so they finish (seed C1). A check stage with no
        task or hook, and `saving_plan`, pass without a database write of their own, and so does
        a stage the database is past already (`_recorded_past`). The timeout of a stage of
        tfward's own does not run while storage fails."""
        recorded = stage not in _IN_MEMORY_STAGES and (
            stage not in _TASK_STAGES or self._checked(stage)
        )
        if stage is not self._recorded_stage and recorded and not self._recorded_past(stage):
            if stage is Stage.PLANNING:
                self.children.entering = stage  # written with terraform plan's PID
            else:
                await self._transition(lambda r: model.enter_stage(r, stage))
        self.stage = stage
        logs.bind(stage=str(stage))
        timeout = self._timeout(stage)
        critical = stage in (Stage.SAVING_STATE, Stage.SAVING_PLAN)
        # Timed outside the timeout, so a stage that times out is observed as one.
        with self.rt.metrics.stage(str(stage)):
            with contextlib.ExitStack() as stack:
                if stage in CRITICAL_STAGES:
                    stack.enter_context(self.rt.critical.enter(self.run_id, stage))
                # Saving is shielded from cancel and shutdown; terraform apply is not (a cancel
                # must reach terraform), but shutdown waits for it (see daemon shutdown).
                stack.enter_context(trio.CancelScope(shield=critical))
                with trio.move_on_after(timeout) as deadline, self._pausing(stage, deadline):
                    await self.rt.faults.at(self.run_id, stage)
                    yield
            if deadline.cancelled_caught:
                raise StageFailed(ErrorKind.TIMEOUT, f"stage {stage} timed out after {timeout:g}s")

    def _recorded_past(self, stage: Stage) -> bool:
        """Whether the database shows a later stage of the apply already (`applying`, entered
        with the plan's record: `_apply_here`)."""
        order, recorded = model.APPLY_STAGES, self._recorded_stage
        return stage in order and recorded in order and order.index(recorded) > order.index(stage)

    def _pausing(
        self, stage: Stage, deadline: trio.CancelScope
    ) -> contextlib.AbstractContextManager[object]:
        if stage in _TERRAFORM_STAGES:  # its time is terraform's, not ours
            return contextlib.nullcontext()
        return self.rt.store.health.paused_while_failing(deadline)

    def _timeout(self, stage: Stage) -> float:
        """init/planning/applying: the workspace's timeouts; our own stages: `stage_timeout`,
        or their phase's timeout when shorter."""
        phase = self.ws.apply_timeout if stage in model.APPLY_STAGES else self.ws.plan_timeout
        timeout = {
            Stage.INIT: self.ws.init_timeout,
            Stage.PLANNING: self.ws.plan_timeout,
            Stage.APPLYING: self.ws.apply_timeout,
        }.get(stage, min(phase, self.rt.config.terraform.stage_timeout))
        # A check stage waits as long as its hooks and tasks may take (each hook its timeout
        # and its stop, each task its delivery and its timeout).
        tasks = tasks_at(self.rt.config, self.ws.run_tasks, str(stage)).budget()
        return max(timeout, self.hooks.budget(stage) + tasks)

    async def _wait_for_confirmation(self, run: Run) -> bool:
        """Wait in `apply_pending` for confirm (True), discard or plan expiry (False). A
        decision recorded before this run task started (a restart) counts at once."""
        if run.confirmed_at is not None:
            return True
        if run.discard_requested_at is not None:
            self.handle.decide(Decision.DISCARD, run.discard_reason)
            return False
        self.log.note("waiting for confirmation")
        deadline = run.plan_expires_at.timestamp() if run.plan_expires_at else float("inf")
        with trio.move_on_after(max(0.0, deadline - now().timestamp())):
            await self.handle.decided.wait()
        if self.handle.decision is None:
            self.handle.decide(Decision.DISCARD, f"the plan expired at {run.plan_expires_at}")
        return self.handle.decision is Decision.CONFIRM

    # ---- helpers ------------------------------------------------------------------------------

    async def _transition(self, fn: Callable[[Run], Run], trigger: str | None = None) -> Run:
        """One transition of the run (load, transition, save), with its notification; a PID
        recorded for a child that has ended is cleared in the same transaction."""

        def tx(conn: Connection) -> Run:
            _, after = run_store.transition(conn, self.run_id, fn)
            if trigger:
                wanted = self._notifies(after, trigger)
                outbox_store.notify_status(conn, after, self.ws_id, trigger, wanted=wanted)
            self.children.forget_process(conn)
            return after

        run = await self.rt.store.write(tx)
        self.children.forgotten()
        self._recorded_stage = run.stage
        return run

    def _notifies(self, run: Run, trigger: str) -> bool:
        return self.rt.notifies(self.ws.name, trigger, refresh_only=run.refresh_only)

    def _entering(self, stage: Stage) -> Callable[[Connection], object]:
        """`stage` entered in another write's transaction (its caller records it as the
        stage the database shows once that committed)."""

        def tx(conn: Connection) -> object:
            run_store.transition(conn, self.run_id, lambda r: model.enter_stage(r, stage))
            self.children.forget_process(conn)
            return None

        return tx


def _leaf(exc: BaseException) -> BaseException:
    """The single exception inside nested one-member exception groups (trio nurseries wrap)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
