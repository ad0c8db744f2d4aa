"""What every part of one run's pipeline shares: the runtime, the workspace (its config and
id), the run's id and its log. Built once by the pipeline and passed down, so the run
directory, the planner, the run-task gate and the state keeper agree on them by construction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tfward.config import WorkspaceConfig

from .runlog import RunLog
from .runtime import Runtime


@dataclass(frozen=True, slots=True)
class RunContext:
    rt: Runtime
    ws: WorkspaceConfig
    ws_id: str
    run_id: str
    log: RunLog

    @property
    def run_dir(self) -> Path:
        return self.rt.run_dir(self.run_id)
