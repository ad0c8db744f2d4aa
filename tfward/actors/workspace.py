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
import logging
import math
from dataclasses import dataclass, field

import trio
from sqlalchemy import Connection

from tfward.daemon.store import runs as run_store
from tfward.daemon.store import workspaces as ws_store
from tfward.ids import now
from tfward.runs import model
from tfward.runs.model import Status

from .funnel import Ending, Outcome, finish_run
from .handle import RunHandle
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


@dataclass(frozen=True)
class Decide:
    """Confirm or discard a run waiting in `apply_pending`."""

    run_id: str
    decision: str  # "confirm" | "discard"
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


Message = Submitted | RunEnded | Cancel | Decide | LockChanged | Stop | Retire


# ---- effects -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    run_id: str
    speculative: bool


@dataclass(frozen=True)
class Signal:
    run_id: str
    action: str  # "cancel" | "force-cancel" | "confirm" | "discard" | "shutdown" | "drain"
    reason: str | None = None


@dataclass(frozen=True)
class FinishQueued:
    """Finish a run that never started (cancelled while pending)."""

    run_id: str
    reason: str = "cancelled before it started"
    status: str = "cancelled"


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
        case Cancel(run_id, force):
            if run_id in state.queue:
                state = dataclasses.replace(
                    state, queue=tuple(r for r in state.queue if r != run_id)
                )
                effects.append(FinishQueued(run_id))
            elif run_id in state.running:
                effects.append(Signal(run_id, "force-cancel" if force else "cancel"))
        case Decide(run_id, decision, reason):
            if run_id in state.running:
                effects.append(Signal(run_id, decision, reason))
            elif decision == "discard" and run_id in state.queue:
                # An apply_pending run held back in the queue (a user lock after a restart).
                queue = tuple(r for r in state.queue if r != run_id)
                state = dataclasses.replace(state, queue=queue)
                effects.append(FinishQueued(run_id, reason or "discarded", "discarded"))
        case LockChanged(user_locked):
            state = dataclasses.replace(state, user_locked=user_locked)
        case Stop(drain):
            state = dataclasses.replace(state, stopping=True)
            effects += [Signal(r, "drain" if drain else "shutdown") for r in sorted(state.running)]
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

    def __post_init__(self) -> None:
        # Unbounded: run tasks post RunEnded to their own actor, which must never block.
        self.send, self._receive = trio.open_memory_channel[Message](math.inf)

    def tell(self, msg: Message) -> None:
        self.send.send_nowait(msg)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The actor loop. Returns after a Stop once its runs have ended. Cancellation (a hard
        stop) cancels the run tasks, each of which still goes through the funnel, shielded."""
        state = await self._initial_state()
        async with trio.open_nursery() as nursery:
            task_status.started()
            state, effects = _resume(state)
            await self._perform(nursery, effects)
            async for msg in self._receive:
                state, effects = decide(state, msg)
                await self._perform(nursery, effects)
                if state.done:
                    break

    async def _initial_state(self) -> ActorState:
        ws_id = self.rt.workspace_ids[self.name]

        def load(conn: Connection) -> tuple[list[model.Run], bool]:
            waiting = run_store.list_runs(
                conn,
                workspace_id=ws_id,
                oldest_first=True,
                statuses=(Status.PENDING, Status.APPLY_PENDING),
                limit=10_000,
            )
            lock = ws_store.get_lock(conn, ws_id)
            return waiting, lock is not None and lock.run_id is None

        waiting, user_locked = await self.rt.store.read(load)
        held = [r.id for r in waiting if r.status is Status.APPLY_PENDING]
        pending = tuple(
            r.id for r in waiting if r.status is Status.PENDING and not r.is_speculative
        )
        speculative = frozenset(r.id for r in waiting if r.is_speculative)
        return ActorState(queue=(*held, *pending), speculative=speculative, user_locked=user_locked)

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
                    await self._finish_queued(run_id, reason, Status(status))

    async def _run_task(self, pipeline: RunPipeline) -> None:
        final = await pipeline.run()
        self._pipelines.pop(pipeline.run_id, None)
        self.tell(RunEnded(pipeline.run_id, final is not None and final.status is Status.PENDING))

    def _signal(self, run_id: str, action: str, reason: str | None) -> None:
        pipeline = self._pipelines.get(run_id)
        if pipeline is None:
            return
        handle = pipeline.handle
        if action in ("cancel", "force-cancel"):
            handle.cancel(force=action == "force-cancel")
        elif action in ("confirm", "discard"):
            handle.decide(action, reason)
        elif action == "shutdown" or (action == "drain" and pipeline.phase != "applying"):
            handle.shutdown()

    async def _finish_queued(self, run_id: str, reason: str, status: Status) -> None:
        ws_id = self.rt.workspace_ids[self.name]
        ending = Ending(
            run_id, self.name, ws_id, RunLog(run_id, self.rt.store), self.rt.run_dir(run_id)
        )
        await ending.log.open()
        await finish_run(
            self.rt, ending, Outcome(status, error_message=reason)
        )


def _resume(state: ActorState) -> tuple[ActorState, list[Effect]]:
    """At start: speculative runs left pending start now; the queue head starts if it can."""
    effects: list[Effect] = [Start(r, True) for r in sorted(state.speculative)]
    return _start_next(state, effects)


async def record_cancel(rt: Runtime, run_id: str, force: bool) -> model.Run:
    """Validate a cancel (or force-cancel) and record the request on an active run. A pending run
    is left as it is: its actor finishes it through the funnel. Raises InvalidTransition."""

    def tx(conn: Connection) -> model.Run:
        run = run_store.get_run(conn, run_id)
        after = model.cancel(run, now(), force=force)
        if run.status is Status.PENDING:
            return run
        return run_store.save(conn, run, after)

    return await rt.store.write(tx)
