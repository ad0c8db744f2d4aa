"""The supervisor: one workspace actor per configured workspace, all in one nursery."""

from __future__ import annotations

import logging

import trio

from tfward.errors import NotFound

from .runtime import Runtime
from .workspace import Message, Stop, WorkspaceActor

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.actors: dict[str, WorkspaceActor] = {}
        self.stopped = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every actor, report ready, and return once all of them have stopped. On
        cancellation (hard stop) the actors' run tasks are cancelled and each still finishes
        through the termination funnel."""
        try:
            async with trio.open_nursery() as nursery:
                for ws in self.rt.config.workspaces:
                    actor = WorkspaceActor(self.rt, ws.name)
                    self.actors[ws.name] = actor
                    await nursery.start(actor.run, name=f"workspace-{ws.name}")
                task_status.started()
        finally:
            self.stopped.set()

    def tell(self, workspace: str, msg: Message) -> None:
        actor = self.actors.get(workspace)
        if actor is None:
            raise NotFound(f"workspace {workspace!r} not found")
        actor.tell(msg)

    def stop(self, *, drain: bool) -> None:
        """Ask every actor to stop. Draining lets applies finish; the caller bounds the wait."""
        for actor in self.actors.values():
            actor.tell(Stop(drain=drain))
