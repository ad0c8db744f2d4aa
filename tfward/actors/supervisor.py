"""The supervisor: one workspace actor per configured workspace, all in one nursery.

On a config reload new workspaces get actors, removed ones are retired (their active run
finishes first), and changed ones pick the new settings up at their next run (a run reads its
workspace's config when it starts).
"""

from __future__ import annotations

import logging

import trio

from tfward.errors import NotFound

from .runtime import Runtime
from .workspace import Message, Retire, Stop, WorkspaceActor

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.actors: dict[str, WorkspaceActor] = {}
        self.stopped = trio.Event()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every actor, report ready, and return once all of them have stopped. On
        cancellation (hard stop) the actors' run tasks are cancelled and each still finishes
        through the termination funnel."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for ws in self.rt.config.workspaces:
                    await nursery.start(self._run_actor, WorkspaceActor(self.rt, ws.name),
                                        name=f"workspace-{ws.name}")
                task_status.started()
        finally:
            self.stopped.set()

    async def _run_actor(self, actor: WorkspaceActor, *,
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.actors[actor.name] = actor
        try:
            await actor.run(task_status=task_status)
        finally:
            if self.actors.get(actor.name) is actor:
                del self.actors[actor.name]

    async def reconfigure(self, added: list[str], removed: list[str]) -> None:
        """Start actors for `added` workspaces and retire those of `removed` ones. The caller
        has already put the new config in the runtime."""
        assert self._nursery is not None
        for name in removed:
            if name in self.actors:
                log.info("workspace %s removed from the config: retiring it", name)
                self.actors[name].tell(Retire())
        for name in added:
            if name not in self.actors:
                log.info("workspace %s added to the config", name)
                await self._nursery.start(self._run_actor, WorkspaceActor(self.rt, name),
                                          name=f"workspace-{name}")

    def tell(self, workspace: str, msg: Message) -> None:
        actor = self.actors.get(workspace)
        if actor is None:
            raise NotFound(f"workspace {workspace!r} not found")
        actor.tell(msg)

    def stop(self, *, drain: bool) -> None:
        """Ask every actor to stop. Draining lets applies finish; the caller bounds the wait."""
        for actor in self.actors.values():
            actor.tell(Stop(drain=drain))
