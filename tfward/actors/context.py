"""What every part of one run's pipeline shares: the runtime, the workspace (its config and
id), the run's id, its log and its own secrets. Built once by the pipeline and passed down, so
the run directory, the planner, the run-task gate and the state keeper agree on them by
construction."""

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
    # Secrets of this run beyond the workspace's (its remote-state credential): masked too.
    secrets: tuple[str, ...] = ()

    @property
    def run_dir(self) -> Path:
        return self.rt.run_dir(self.run_id)

    def mask_values(self) -> list[str]:
        """Every string to mask in what the run shows: the workspace's sensitive values and
        the run's own secrets."""
        return [*self.ws.sensitive_values(), *self.secrets]
