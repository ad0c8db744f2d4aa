"""What every run shares: config, store, limits, live logs, critical sections, fault hooks,
metrics.

One `Runtime` is built by the daemon and handed to the supervisor, the workspace actors and the
API. It holds no run state of its own beyond what must be shared in memory (live logs, the
critical-section count the shutdown waits on).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import trio

from tfward.config import Config, WorkspaceConfig
from tfward.errors import NotFound
from tfward.obs.metrics import Metrics
from tfward.runs.model import Stage
from tfward.store.db import Store

from .runlog import RunLog

if TYPE_CHECKING:
    from tfward.runtasks.coordinator import RunTaskCoordinator


class FaultInjector(Protocol):
    """Called at the start of every stage. The daemon's is a no-op; the fault-matrix tests pass
    one that raises or hangs there (exceptions in our own code at every stage, on demand)."""

    async def at(self, run_id: str, stage: Stage) -> None: ...


class NoFaults:
    async def at(self, run_id: str, stage: Stage) -> None:
        return None


class CriticalSections:
    """Counts runs inside `applying`, `saving_state`, `saving_plan` (seed C1): entered and
    exited only through `enter`, so every exit path leaves the section."""

    def __init__(self) -> None:
        self.active: Counter[str] = Counter()
        self._changed = trio.Event()

    @contextlib.contextmanager
    def enter(self, run_id: str, stage: Stage) -> Iterator[None]:
        key = f"{run_id}:{stage}"
        self.active[key] += 1
        try:
            yield
        finally:
            self.active[key] -= 1
            if not self.active[key]:
                del self.active[key]
            self._changed.set()
            self._changed = trio.Event()

    def count(self) -> int:
        return sum(self.active.values())

    async def wait_empty(self) -> None:
        while self.active:
            await self._changed.wait()


@dataclass
class Runtime:
    config: Config
    store: Store
    workspace_ids: dict[str, str]
    faults: FaultInjector = field(default_factory=NoFaults)
    critical: CriticalSections = field(default_factory=CriticalSections)
    live_logs: dict[str, RunLog] = field(default_factory=dict)
    metrics: Metrics = field(default_factory=Metrics)
    # Set by the daemon before any actor starts; None only in tests that build a Runtime bare.
    run_tasks: RunTaskCoordinator | None = None
    # Where terraform of a run reaches the daemon's API (terraform_remote_state): set by the
    # daemon, with `api_listening`, once the API listens.
    api_url: str = ""
    api_listening: trio.Event = field(default_factory=trio.Event)
    # Set when the daemon stops waiting for storage (a hard stop, or the shutdown grace is
    # over): patient store calls then raise StorageUnavailable and runs are left to recovery.
    give_up: trio.Event = field(default_factory=trio.Event)
    process_limiter: trio.CapacityLimiter = field(init=False)
    _init_locks: dict[Path, trio.Lock] = field(default_factory=dict)
    # Run directories of runs taken over from another daemon, in its data dir (same host, or a
    # data dir shared at the same path): recovery reads and removes them there (§15).
    adopted_dirs: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.process_limiter = trio.CapacityLimiter(self.config.daemon.max_concurrent_runs)

    @property
    def data_dir(self) -> Path:
        return self.config.daemon.data_dir

    @property
    def node_id(self) -> str:
        return self.config.daemon.node_id

    def run_dir(self, run_id: str) -> Path:
        return self.adopted_dirs.get(run_id) or self.data_dir / "runs" / run_id

    @property
    def dev_mirror(self) -> Path:
        return self.dev_mirror_of(self.config)

    @staticmethod
    def dev_mirror_of(config: Config) -> Path:
        return config.daemon.data_dir / "dev-provider-mirror"

    def init_cache(self, workspace: str) -> Path:
        return self.data_dir / "init-cache" / workspace

    def state_backups(self, workspace: str) -> Path:
        return self.data_dir / "state-backups" / workspace

    def init_lock(self, plugin_cache: Path) -> trio.Lock:
        """Concurrent `terraform init` on one plugin cache fails ("text file busy")."""
        return self._init_locks.setdefault(plugin_cache, trio.Lock())

    def notifies(self, workspace: str, trigger: str, *, refresh_only: bool = False) -> bool:
        """Whether a notification goes anywhere, as the outbox's fan-out decides it: a
        destination of the workspace wants the trigger, and it is not a `run:*` trigger of a
        drift check (which notifies only `assessment:drifted`). A row nobody wants is written
        `done` (docs/architecture.md §7)."""
        if refresh_only and trigger.startswith("run:"):
            return False
        return self.config.notifies(workspace, trigger)

    def workspace(self, name: str) -> WorkspaceConfig:
        try:
            return self.config.workspace(name)
        except KeyError:
            raise NotFound(f"workspace {name!r} is not configured") from None
