"""A run-task stage of a run (pre_plan, post_plan, pre_apply, post_apply): send the attached
tasks their requests, wait for every result, and enforce what came back
(docs/architecture.md §6)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from sqlalchemy import Connection

from tfward.errors import StageFailed
from tfward.runs import model
from tfward.runs.model import ErrorKind, Stage
from tfward.runtasks.enforcement import Enforcement, enforce, tasks_at
from tfward.runtasks.payload import Links
from tfward.store import outbox as outbox_store
from tfward.store import runs as run_store

from .context import RunContext


@dataclass(frozen=True)
class RunTaskGate:
    ctx: RunContext

    async def pass_stage(self, stage: Stage) -> None:
        """Run-task stage: send the tasks attached at `stage` their requests and wait for every
        result (tfward/runtasks); a mandatory failure fails the run, except after the apply.
        Workspaces without tasks at this stage pass straight through. On cancellation the
        waits end and the funnel revokes the tokens."""
        ctx = self.ctx
        found = tasks_at(ctx.rt.config, ctx.ws.run_tasks, str(stage))
        if not (found.attached or found.missing):
            return
        if ctx.rt.run_tasks is None:
            raise StageFailed(ErrorKind.INTERNAL, "the run-task coordinator is not running")
        ctx.log.note(f"run tasks at {stage}: " + ", ".join(a.task.name for a in found.attached))
        outcome = await ctx.rt.run_tasks.run_stage(
            run_id=ctx.run_id,
            workspace_id=ctx.ws_id,
            stage=str(stage),
            attached=found.attached,
            links=Links(ctx.rt.config.daemon.public_url, ctx.rt.config.daemon.organization),
        )
        decision = enforce(outcome, found.missing)
        for line in decision.log_lines:
            ctx.log.note(line)
        if decision.warnings or decision.attention:
            await ctx.rt.store.write(lambda c: self._record_enforcement(c, stage, decision))
        if decision.block:
            raise StageFailed(ErrorKind.RUN_TASK, decision.block)

    def _record_enforcement(self, conn: Connection, stage: Stage, decision: Enforcement) -> None:
        """Warnings on the run; after the apply, a mandatory failure is notified too."""
        _, run = run_store.transition(
            conn,
            self.ctx.run_id,
            lambda r: functools.reduce(model.add_warning, decision.warnings, r),
        )
        if decision.attention:
            outbox_store.notify(
                conn,
                "run:needs_attention",
                key=f"notify:{run.id}:run_task:{stage}",
                workspace_id=self.ctx.ws_id,
                run=run,
                message=decision.attention,
            )
