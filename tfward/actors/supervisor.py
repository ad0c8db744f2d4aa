"""The supervisor: one workspace actor per workspace this daemon owns, all in one nursery.

Which workspaces a daemon owns is the lease loop's to say (actors/leases.py, docs/architecture.md
§15): with SQLite, or alone on PostgreSQL, that is every configured workspace; with several
daemons on one database, its share. `adopt` starts an actor under the workspace's fence (its
lease epoch: every write it and its runs make checks it), `drop` stops one whose lease was
lost (its runs are interrupted: the new owner recovers them), `hand_over` stops an idle one
before its lease is given back (drain: a workspace with a run in flight is never handed over).

A message for a workspace (`tell`) goes to its actor here, or — when another daemon owns it —
to that daemon (`nudges`, carried by PostgreSQL's NOTIFY; the owner's periodic re-check finds
whatever a lost nudge carried). On a config reload removed workspaces are retired (their
active run finishes first); new ones are taken by the lease loop.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import trio

from tfward.errors import NotFound
from tfward.store import fencing

from .runtime import Runtime
from .workspace import Message, Retire, Stop, WorkspaceActor

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Nudge:
    """A message for the actor of a workspace another daemon owns."""

    workspace: str
    message: Message


class Supervisor:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.actors: dict[str, WorkspaceActor] = {}
        self.epochs: dict[str, int] = {}
        self.stopped = trio.Event()
        self._stopping = trio.Event()
        self._ended: dict[str, trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        # Messages for workspaces owned elsewhere; the lease loop sends them (NOTIFY).
        self._nudges_out, self.nudges = trio.open_memory_channel[Nudge](math.inf)
        # Set (and replaced) when the lease loop should tick now (workspaces added).
        self.changed = trio.Event()

    async def run(
        self,
        owned: dict[str, int] | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Start the actors of `owned` (name -> lease epoch; None: every configured workspace at
        epoch 0, unfenced — tests that build a bare runtime), report ready, and return once
        `stop` was called and every actor has stopped. On cancellation (hard stop) the
        actors' run tasks are cancelled and each still finishes through the funnel."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._stopping.wait, name="supervisor-open")
                if owned is None:
                    for ws in self.rt.config.workspaces:
                        await nursery.start(self._run_actor, WorkspaceActor(self.rt, ws.name),
                                            None, name=f"workspace-{ws.name}")  # fmt: skip
                else:
                    for name, epoch in owned.items():
                        await self.adopt(name, epoch)
                task_status.started()
        finally:
            self.stopped.set()

    async def adopt(self, name: str, epoch: int) -> None:
        """Start the actor of a workspace this daemon now owns at `epoch`."""
        assert self._nursery is not None
        if name in self.actors or self._stopping.is_set():
            return
        ws_id = self.rt.workspace_ids[name]
        fence = fencing.Fence(ws_id, self.rt.node_id, epoch)
        self.epochs[name] = epoch
        await self._nursery.start(
            self._run_actor, WorkspaceActor(self.rt, name), fence, name=f"workspace-{name}"
        )

    async def _run_actor(
        self,
        actor: WorkspaceActor,
        fence: fencing.Fence | None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.actors[actor.name] = actor
        ended = self._ended[actor.name] = trio.Event()
        try:
            if fence is None:
                await actor.run(task_status=task_status)
            else:
                with fencing.fenced(fence):
                    await actor.run(task_status=task_status)
        finally:
            if self.actors.get(actor.name) is actor:
                del self.actors[actor.name]
                self.epochs.pop(actor.name, None)
            ended.set()

    def drop(self, name: str) -> None:
        """The lease was lost (taken over, or not renewed in time): stop now, runs included
        (terraform gets SIGINT; their writes are fenced out, the new owner recovers them)."""
        if (actor := self.actors.get(name)) is not None:
            log.warning("workspace %s: lease lost; stopping its actor and runs", name)
            actor.tell(Stop(drain=False))

    def idle(self, name: str) -> bool:
        actor = self.actors.get(name)
        return actor is None or not actor.busy

    async def hand_over(self, name: str) -> bool:
        """Stop an idle actor before its lease is given back; False (nothing done) if it
        has a run in flight. Waits for the actor to end."""
        actor = self.actors.get(name)
        if actor is None:
            return True
        if actor.busy:
            return False
        actor.tell(Stop(drain=True))
        await self._ended[name].wait()
        return True

    async def reconfigure(self, added: list[str], removed: list[str]) -> None:
        """Retire the actors of `removed` workspaces; `added` ones are taken by the lease
        loop at its next tick. The caller has already put the new config in the runtime."""
        for name in removed:
            if name in self.actors:
                log.info("workspace %s removed from the config: retiring it", name)
                self.actors[name].tell(Retire())
        for name in added:
            log.info("workspace %s added to the config", name)
        self.changed.set()
        self.changed = trio.Event()

    def owns(self, workspace: str) -> bool:
        return workspace in self.actors

    def tell(self, workspace: str, msg: Message) -> None:
        """Give `msg` to the workspace's actor, here or on the daemon that owns it."""
        actor = self.actors.get(workspace)
        if actor is not None:
            actor.tell(msg)
            return
        if workspace not in self.rt.workspace_ids:
            raise NotFound(f"workspace {workspace!r} not found")
        self.rt.workspace(workspace)  # NotFound when removed from the config
        self._nudges_out.send_nowait(Nudge(workspace, msg))

    def stop(self, *, drain: bool) -> None:
        """Ask every actor to stop. Draining lets applies finish; the caller bounds the wait."""
        self._stopping.set()
        for actor in self.actors.values():
            actor.tell(Stop(drain=drain))
