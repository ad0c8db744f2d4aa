"""A run-task stage of a run (pre_plan, post_plan, pre_apply, post_apply; DESIGN §4): send the
attached tasks their requests, wait for every result, and enforce what came back."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from sqlalchemy import Connection

from tfward.config import WorkspaceConfig
from tfward.daemon.store import artifacts
from tfward.daemon.store import runs as run_store
from tfward.errors import StageFailed
from tfward.runs import model
from tfward.runs.model import ErrorKind, Stage
from tfward.runtasks.enforcement import Enforcement, enforce, tasks_at
from tfward.runtasks.payload import Links

from .runlog import RunLog
from .runtime import Runtime


@dataclass
class RunTaskGate:
    rt: Runtime
    ws: WorkspaceConfig
    ws_id: str
    run_id: str
    log: RunLog

    async def pass_stage(self, stage: Stage) -> None:
        """Run-task stage: send the tasks attached at `stage` their requests and wait for every
        result (tfward/runtasks); a mandatory failure fails the run, except after the apply.
        Workspaces without tasks at this stage pass straight through. On cancellation the
        waits end and the funnel revokes the tokens."""
        found = tasks_at(self.rt.config, self.ws.run_tasks, str(stage))
        if not (found.attached or found.missing):
            return
        if self.rt.run_tasks is None:
            raise StageFailed(ErrorKind.INTERNAL, "the run-task coordinator is not running")
        self.log.note(f"run tasks at {stage}: " + ", ".join(a.task.name for a in found.attached))
        outcome = await self.rt.run_tasks.run_stage(
            run_id=self.run_id,
            workspace_id=self.ws_id,
            stage=str(stage),
            attached=found.attached,
            links=Links(self.rt.config.daemon.public_url, self.rt.config.daemon.organization),
        )
        decision = enforce(outcome, found.missing)
        for line in decision.log_lines:
            self.log.note(line)
        if decision.warnings or decision.attention:
            await self.rt.store.write(lambda c: self._record_enforcement(c, stage, decision))
        if decision.block:
            raise StageFailed(ErrorKind.RUN_TASK, decision.block)

    def _record_enforcement(self, conn: Connection, stage: Stage, decision: Enforcement) -> None:
        """Warnings on the run; after the apply, a mandatory failure is notified too."""
        _, run = run_store.transition(
            conn, self.run_id, lambda r: functools.reduce(model.add_warning, decision.warnings, r)
        )
        if decision.attention:
            payload = {
                "trigger": "run:needs_attention",
                "run_id": run.id,
                "workspace": run.workspace,
                "run_status": str(run.status),
                "message": decision.attention,
                "run_message": run.message,
            }
            key = f"notify:{run.id}:run_task:{stage}"
            artifacts.enqueue(
                conn, "notify", payload, key=key, run_id=run.id, workspace_id=self.ws_id
            )
