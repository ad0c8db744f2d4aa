"""The workspace actor: serializes the runs of one workspace.

A thin loop around a pure decision: it reads its mailbox, asks `decide(state, message)` what to
do, and performs the effects. One non-speculative run holds the workspace at a time, from
planning until it ends (including `apply_pending`); later ones wait in FIFO order. Speculative
plans start at once and never wait. A workspace locked by a user starts no new
non-speculative run until it is unlocked.

The database is the source of truth for run status; the API validates and records actions
there, then tells the actor, which owns the run tasks and their cancel scopes.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
from dataclasses import dataclass, field

import trio
from sqlalchemy import Connection

from tfward.errors import StorageUnavailable
from tfward.runs import model
from tfward.runs.model import Status
from tfward.store import runs as run_store
from tfward.store import workspaces as ws_store
from tfward.store.health import patient

from .funnel import Ending, Outcome, finish_run
from .handle import Decision, Phase, RunHandle
from .pipeline import RunPipeline
from .runlog import RunLog
from .runtime import Runtime

log = logging.getLogger(__name__)


# ---- messages ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submitted:
    run_id: str
    speculative: bool


@dataclass(frozen=True)
class RunEnded:
    run_id: str
    requeued: bool


@dataclass(frozen=True)
class Cancel:
    run_id: str
    force: bool = False
    # The database shows the run pending (a re-check): finish it even if it was never queued.
    pending: bool = False


@dataclass(frozen=True)
class Decide:
    """Confirm or discard a run waiting in `apply_pending` (recorded in the store already)."""

    run_id: str
    decision: Decision
    reason: str | None = None


@dataclass(frozen=True)
class LockChanged:
    user_locked: bool


@dataclass(frozen=True)
class Stop:
    """Stop the actor. With `drain`, runs applying are left to finish; without, all stop."""

    drain: bool = True


@dataclass(frozen=True)
class Retire:
    """The workspace was removed from the config: its queued runs are cancelled, its active run
    finishes, then the actor stops."""


@dataclass(frozen=True)
class Recheck:
    """Read the workspace's runs and lock from the database and act on what a lost message
    would have said (several daemons: a nudge from another daemon's API may be lost; the
    lease loop sends this every tick, docs/architecture.md §15). Handled by the loop, which
    reads, then passes the messages the database implies through `decide`."""


Message = Submitted | RunEnded | Cancel | Decide | LockChanged | Stop | Retire | Recheck


# ---- effects -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    run_id: str
    speculative: bool


class Action(enum.StrEnum):
    """What the actor tells a run task it owns."""

    CANCEL = "cancel"
    FORCE_CANCEL = "force-cancel"
    CONFIRM = "confirm"
    DISCARD = "discard"
    SHUTDOWN = "shutdown"  # stop now, whatever the run is doing
    DRAIN = "drain"  # stop unless applying (a graceful daemon stop lets applies finish)


@dataclass(frozen=True)
class Signal:
    run_id: str
    action: Action
    reason: str | None = None


@dataclass(frozen=True)
class FinishQueued:
    """Finish a run that never started (cancelled while pending)."""

    run_id: str
    reason: str = "cancelled before it started"
    status: Status = Status.CANCELLED


RETIRED = "cancelled: the workspace was removed from the config"


Effect = Start | Signal | FinishQueued


@dataclass(frozen=True)
class ActorState:
    queue: tuple[str, ...] = ()
    active: str | None = None
    speculative: frozenset[str] = frozenset()
    user_locked: bool = False
    stopping: bool = False
    retiring: bool = False

    @property
    def running(self) -> frozenset[str]:
        return self.speculative | ({self.active} if self.active else set())

    @property
    def done(self) -> bool:
        return self.stopping and not self.running


def decide(state: ActorState, msg: Message) -> tuple[ActorState, list[Effect]]:
    """What the actor does with a message: pure, and table-tested."""
    effects: list[Effect] = []
    match msg:
        case Submitted(run_id, _) if run_id in state.queue or run_id in state.running:
            return state, []  # known already (a re-check, or a nudge after a local tell)
        case Submitted(run_id, _) if state.retiring:
            return state, [FinishQueued(run_id, RETIRED)]
        case Submitted(run_id, True):
            if state.stopping:
                return state, []
            return dataclasses.replace(state, speculative=state.speculative | {run_id}), [
                Start(run_id, True)
            ]
        case Submitted(run_id, False):
            state = dataclasses.replace(state, queue=(*state.queue, run_id))
        case RunEnded(run_id, requeued):
            if run_id == state.active:
                state = dataclasses.replace(state, active=None)
                if requeued and state.retiring:
                    effects.append(FinishQueued(run_id, RETIRED))
                elif requeued and not state.stopping:
                    state = dataclasses.replace(state, queue=(run_id, *state.queue))
            state = dataclasses.replace(state, speculative=state.speculative - {run_id})
        case Cancel(run_id, force, pending):
            if pending and run_id not in state.queue and run_id not in state.running:
                effects.append(FinishQueued(run_id))
            elif run_id in state.queue:
                state = dataclasses.replace(
                    state, queue=tuple(r for r in state.queue if r != run_id)
                )
                effects.append(FinishQueued(run_id))
            elif run_id in state.running:
                effects.append(Signal(run_id, Action.FORCE_CANCEL if force else Action.CANCEL))
        case Decide(run_id, decision, reason):
            if run_id in state.running:
                effects.append(Signal(run_id, Action(decision), reason))
            elif decision is Decision.DISCARD and run_id in state.queue:
                # An apply_pending run held back in the queue (a user lock after a restart).
                queue = tuple(r for r in state.queue if r != run_id)
                state = dataclasses.replace(state, queue=queue)
                effects.append(FinishQueued(run_id, reason or "discarded", Status.DISCARDED))
        case LockChanged(user_locked):
            state = dataclasses.replace(state, user_locked=user_locked)
        case Stop(drain):
            state = dataclasses.replace(state, stopping=True)
            effects += [
                Signal(r, Action.DRAIN if drain else Action.SHUTDOWN) for r in sorted(state.running)
            ]
        case Retire():
            effects += [FinishQueued(r, RETIRED) for r in state.queue]
            state = dataclasses.replace(state, stopping=True, retiring=True, queue=())
    return _start_next(state, effects)


def _start_next(state: ActorState, effects: list[Effect]) -> tuple[ActorState, list[Effect]]:
    if state.stopping or state.active or state.user_locked or not state.queue:
        return state, effects
    run_id, *rest = state.queue
    return dataclasses.replace(state, active=run_id, queue=tuple(rest)), [
        *effects,
        Start(run_id, False),
    ]


@dataclass
class WorkspaceActor:
    rt: Runtime
    name: str
    send: trio.MemorySendChannel[Message] = field(init=False)
    _receive: trio.MemoryReceiveChannel[Message] = field(init=False)
    _pipelines: dict[str, RunPipeline] = field(default_factory=dict)
    state: ActorState = field(default_factory=ActorState)

    @property
    def busy(self) -> bool:
        """A run is in flight (planning, waiting for confirmation, applying): the workspace
        is not handed to another daemon before it ends (drain)."""
        return bool(self.state.running)

    def __post_init__(self) -> None:
        # Unbounded: run tasks post RunEnded to their own actor, which must never block.
        self.send, self._receive = trio.open_memory_channel[Message](math.inf)

    def tell(self, msg: Message) -> None:
        self.send.send_nowait(msg)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The actor loop. Returns after a Stop once its runs have ended. Cancellation (a hard
        stop) cancels the run tasks, each of which still goes through the funnel, shielded.
        Storage faults are waited out (docs/architecture.md §10); if the daemon gives up
        waiting before the queue could be read, the actor ends (the runs wait in the
        database for the next start)."""
        try:
            with patient(self.rt.give_up):
                state, cancelled = await self._initial_state()
        except StorageUnavailable:
            task_status.started()
            return
        async with trio.open_nursery() as nursery:
            task_status.started()
            self.state, effects = _resume(state)
            await self._perform(nursery, [*(FinishQueued(r) for r in cancelled), *effects])
            async for msg in self._receive:
                for each in await self._recheck() if isinstance(msg, Recheck) else [msg]:
                    self.state, effects = decide(self.state, each)
                    await self._perform(nursery, effects)
                if self.state.done:
                    break

    async def _recheck(self) -> list[Message]:
        """What the database says that the actor may not have heard: runs pending, cancels,
        confirms and discards recorded, the user lock. Read when the message is handled, so
        a run that ended before is terminal in the read (no double start). A read storage
        refuses skips this re-check."""
        ws_id = self.rt.workspace_ids[self.name]

        def load(conn: Connection) -> tuple[list[model.Run], bool]:
            active = (Status.PENDING, Status.PLANNING, Status.APPLY_PENDING, Status.APPLYING)
            found = run_store.list_runs(
                conn, workspace_id=ws_id, oldest_first=True, statuses=active, limit=None
            )
            lock = ws_store.get_lock(conn, ws_id)
            return found, lock is not None and lock.run_id is None

        try:
            found, user_locked = await self.rt.store.read(load, patient=False)
        except StorageUnavailable:
            return []
        return [LockChanged(user_locked), *(m for run in found for m in implied(run))]

    async def _initial_state(self) -> tuple[ActorState, list[str]]:
        """The queue as the database has it, and the pending runs whose cancel was recorded
        but not finished (the daemon stopped in between): they are finished first."""
        ws_id = self.rt.workspace_ids[self.name]

        def load(conn: Connection) -> tuple[list[model.Run], bool]:
            waiting = run_store.list_runs(
                conn,
                workspace_id=ws_id,
                oldest_first=True,
                statuses=(Status.PENDING, Status.APPLY_PENDING),
                limit=None,
            )
            lock = ws_store.get_lock(conn, ws_id)
            return waiting, lock is not None and lock.run_id is None

        found, user_locked = await self.rt.store.read(load)
        cancelled = [r.id for r in found if r.cancel_requested_at is not None]
        waiting = [r for r in found if r.cancel_requested_at is None]
        held = [r.id for r in waiting if r.status is Status.APPLY_PENDING]
        pending = tuple(
            r.id for r in waiting if r.status is Status.PENDING and not r.is_speculative
        )
        speculative = frozenset(r.id for r in waiting if r.is_speculative)
        queue = (*held, *pending)
        return ActorState(queue, speculative=speculative, user_locked=user_locked), cancelled

    async def _perform(self, nursery: trio.Nursery, effects: list[Effect]) -> None:
        for effect in effects:
            match effect:
                case Start(run_id, speculative):
                    handle = RunHandle(run_id, speculative, self.rt.config.terraform.cancel_grace)
                    pipeline = RunPipeline(self.rt, handle, self.rt.workspace(self.name))
                    self._pipelines[run_id] = pipeline
                    nursery.start_soon(self._run_task, pipeline, name=f"run-{run_id}")
                case Signal(run_id, action, reason):
                    self._signal(run_id, action, reason)
                case FinishQueued(run_id, reason, status):
                    await self._finish_queued(run_id, reason, status)

    async def _run_task(self, pipeline: RunPipeline) -> None:
        final = await pipeline.run()
        self._pipelines.pop(pipeline.run_id, None)
        self.tell(RunEnded(pipeline.run_id, final is not None and final.status is Status.PENDING))

    def _signal(self, run_id: str, action: Action, reason: str | None) -> None:
        pipeline = self._pipelines.get(run_id)
        if pipeline is None:
            return
        handle = pipeline.handle
        match action:
            case Action.CANCEL | Action.FORCE_CANCEL:
                handle.cancel(force=action is Action.FORCE_CANCEL)
            case Action.CONFIRM | Action.DISCARD:
                handle.decide(Decision(action), reason)
            case Action.SHUTDOWN:
                handle.shutdown()
            case Action.DRAIN if pipeline.phase is not Phase.APPLYING:
                handle.shutdown()

    async def _finish_queued(self, run_id: str, reason: str, status: Status) -> None:
        ws_id = self.rt.workspace_ids[self.name]
        ending = Ending(
            run_id, self.name, ws_id, RunLog(run_id, self.rt.store), self.rt.run_dir(run_id)
        )
        try:
            with patient(self.rt.give_up):
                await ending.log.open()
        except StorageUnavailable:
            return  # the daemon gave up waiting for storage: the run is finished at next start
        await finish_run(self.rt, ending, Outcome(status, error_message=reason))


def implied(run: model.Run) -> list[Message]:
    """The messages a run's row implies for its actor (`Recheck`): pure."""
    if run.cancel_requested_at is not None:
        forced = run.force_cancel_requested_at is not None
        return [Cancel(run.id, force=forced, pending=run.status is Status.PENDING)]
    if run.status is Status.PENDING:
        return [Submitted(run.id, run.is_speculative)]
    if run.status is Status.APPLY_PENDING and run.discard_requested_at is not None:
        return [Decide(run.id, Decision.DISCARD, run.discard_reason)]
    if run.status is Status.APPLY_PENDING and run.confirmed_at is not None:
        return [Decide(run.id, Decision.CONFIRM)]
    return []


def _resume(state: ActorState) -> tuple[ActorState, list[Effect]]:
    """At start: speculative runs left pending start now; the queue head starts if it can."""
    effects: list[Effect] = [Start(r, True) for r in sorted(state.speculative)]
    return _start_next(state, effects)
