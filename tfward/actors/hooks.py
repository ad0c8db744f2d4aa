"""Script hooks: the workspace's commands at `pre_plan`, `post_plan`, `pre_apply` and
`post_apply` (docs/architecture.md §3; config/hooks.py reads them).

They run inside the pipeline stage of the same name, before that stage's run tasks, one after
another, each a child of the run like terraform (`children.py`): `/bin/sh -c <command>` in the
run directory, its own process group, its output in the run log (masked), stopped by a cancel
or a daemon stop like terraform, and cut off after the workspace's `hook_timeout`. Besides the
run's environment each gets `TFWARD_RUN_ID`, `TFWARD_WORKSPACE`, `TFWARD_STAGE` and, once there
is a plan (from `post_plan` on), `TFWARD_PLAN_JSON`: the path of the masked plan JSON in the run
directory.

A hook that exits non-zero or times out at `pre_plan`, `post_plan` or `pre_apply` fails the run
(`error_kind = hook`) through the funnel, and the hooks after it do not run. At `post_apply` the
apply has happened: each failure is a warning on the run and a `run:needs_attention`
notification, the run stays `applied`, and the remaining hooks still run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import trio
from sqlalchemy import Connection

from tfward.config import format_duration
from tfward.errors import StageFailed
from tfward.files import create_private
from tfward.runs import model
from tfward.runs.model import ErrorKind, Stage
from tfward.store import artifacts
from tfward.store import outbox as outbox_store
from tfward.store import runs as run_store

from .children import RunChildren
from .context import RunContext

PLAN_JSON = ".tfward/plan.json"
# What a hook may take beyond its timeout: SIGINT, the grace period, SIGKILL, a little slack.
_STOP_SLACK = 5.0


@dataclass(frozen=True)
class StageHooks:
    ctx: RunContext
    children: RunChildren

    def at(self, stage: Stage) -> tuple[str, ...]:
        return self.ctx.ws.hooks.get(str(stage), ())

    def budget(self, stage: Stage) -> float:
        """The longest the hooks of `stage` may take, each timing out and being stopped."""
        grace = self.ctx.rt.config.terraform.cancel_grace
        return len(self.at(stage)) * (self.ctx.ws.hook_timeout + grace + _STOP_SLACK)

    async def run(self, stage: Stage) -> None:
        """Run the hooks of `stage` in order. Raises StageFailed (`hook`) for the first one that
        fails before the apply; after it, failures are recorded and the rest still run. On
        cancellation the running hook's process group is stopped and reaped first."""
        commands = self.at(stage)
        if not commands:
            return
        env = {
            "TFWARD_RUN_ID": self.ctx.run_id,
            "TFWARD_WORKSPACE": self.ctx.ws.name,
            "TFWARD_STAGE": str(stage),
        }
        if stage is not Stage.PRE_PLAN:
            env["TFWARD_PLAN_JSON"] = str(await self._plan_json())
        for index, command in enumerate(commands):
            failure = await self._one(f"hook {stage}[{index}]", command, env)
            if failure is None:
                continue
            if stage is not Stage.POST_APPLY:
                raise StageFailed(ErrorKind.HOOK, failure)
            await self.ctx.rt.store.write(
                functools.partial(self._after_apply, index=index, failure=failure)
            )

    async def _one(self, name: str, command: str, env: dict[str, str]) -> str | None:
        """Run one hook; None when it passed, else what went wrong (the command is in the
        log, masked, and not in the message: it may hold what the log masks)."""
        timeout = self.ctx.ws.hook_timeout
        self.ctx.log.note(f"{name}: {command}")
        started = trio.current_time()
        with trio.move_on_after(timeout) as deadline:
            code = await self.children.hook(command, env)
        took = trio.current_time() - started
        if deadline.cancelled_caught:
            failure = f"{name} timed out after {format_duration(timeout)} and was stopped"
        elif code != 0:
            failure = f"{name} failed (exit {code})"
        else:
            self.ctx.log.note(f"{name}: ok ({took:.1f}s)")
            return None
        self.ctx.log.note(failure)
        return failure

    async def _plan_json(self) -> Path:
        """The masked plan JSON in the run directory, written from the store when missing (a
        directory the plan was restored into)."""
        path = self.ctx.run_dir / PLAN_JSON
        if not path.is_file():
            doc = await self.ctx.rt.store.read(
                lambda c: artifacts.get_plan_json(c, self.ctx.run_id)
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            await trio.to_thread.run_sync(create_private, path, doc)
        return path

    def _after_apply(self, conn: Connection, *, index: int, failure: str) -> None:
        """A post-apply hook failed: a warning on the run and `run:needs_attention`."""
        warning = f"{failure} after the apply"
        _, run = run_store.transition(
            conn, self.ctx.run_id, lambda r: model.add_warning(r, warning)
        )
        outbox_store.notify(
            conn,
            "run:needs_attention",
            key=f"notify:{run.id}:hook:post_apply:{index}",
            workspace_id=self.ctx.ws_id,
            run=run,
            message=warning,
        )
