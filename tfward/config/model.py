"""The validated, fully resolved configuration as immutable dataclasses.

Everything here is already checked and normalised by ``tfward.config.load``: paths are
absolute, durations are float seconds, per-workspace timeouts have their defaults applied.
The objects are deeply immutable (tables become ``MappingProxyType``, arrays become tuples)
because one ``Config`` is shared by every task in the daemon; nothing may change it
behind another task's back. Use ``thaw`` to get plain dicts/lists back, e.g. for JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tfward.runs.masking import secret_strings

__all__ = [
    "API_ROLES",
    "ApiTokenConfig",
    "Config",
    "DaemonConfig",
    "ModuleRef",
    "TerraformConfig",
    "WebConfig",
    "WorkspaceConfig",
    "freeze",
    "thaw",
]


def freeze(value: Any) -> Any:
    """Return a deeply immutable copy: mappings -> MappingProxyType, lists -> tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    return value


def thaw(value: Any) -> Any:
    """Return a plain, mutable copy of a frozen value (dicts and lists), e.g. for json.dumps."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(item) for item in value]
    return value


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """The ``[daemon]`` table."""

    listen_host: str  # IPv6 hosts are stored without brackets
    listen_port: int
    data_dir: Path
    database_url: str
    public_url: str
    organization: str
    max_concurrent_runs: int
    shutdown_grace: float
    secret_key_file: Path | None
    # Disk space of the data dir set aside for terraform runs in flight when the disk fills
    # (docs/architecture.md §10); 0 keeps none.
    disk_reserve_mb: int = 64
    # Backups of stored states kept per workspace (backups of states not stored are all kept).
    state_backups_keep: int = 10
    # Several daemons on one database (docs/architecture.md §15): this daemon's id, how long a
    # workspace lease lasts, how often it is renewed, and how long before it would expire a
    # daemon that could not renew stops its terraform (self-fencing).
    node_id: str = "tfward"
    lease_ttl: float = 15.0
    lease_renew: float = 5.0
    self_fence_margin: float = 5.0
    # An event stream of the API sends a comment this often when it has nothing to say, so
    # proxies and clients see a live connection (docs/architecture.md §13).
    event_heartbeat: float = 15.0

    @property
    def listen(self) -> str:
        """``host:port`` as a bind address, with brackets around an IPv6 host."""
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"


@dataclass(frozen=True, slots=True)
class TerraformConfig:
    """The ``[terraform]`` table; the timeouts are defaults that workspaces may override."""

    binary: str
    plugin_cache_dir: Path
    cli_config_file: Path | None
    dev_overrides: Mapping[str, Path]
    cancel_grace: float
    init_timeout: float
    plan_timeout: float
    apply_timeout: float
    plan_expiry: float
    # Bound on each of tfward's own stages (fetching, saving the plan or state, restoring).
    stage_timeout: float = 600.0
    # `terraform init` failing transiently (runs/classify.py) is tried again this many times,
    # the first wait `init_retry_interval`, each next one twice the one before.
    init_retries: int = 3
    init_retry_interval: float = 5.0
    hook_timeout: float = 600.0  # the default of each workspace's `hook_timeout`

    def __post_init__(self) -> None:
        # Frozen dataclasses only stop attribute assignment; copying into a proxy also stops
        # mutation through the caller's dict.
        object.__setattr__(self, "dev_overrides", MappingProxyType(dict(self.dev_overrides)))


@dataclass(frozen=True, slots=True)
class ModuleRef:
    """A module a workspace is built from; local ``./``/``../`` sources are absolute paths."""

    source: str
    version: str | None


RUN_TASK_STAGES = ("pre_plan", "post_plan", "pre_apply", "post_apply")
HOOK_STAGES = RUN_TASK_STAGES  # script hooks run at the stages run tasks do
ENFORCEMENT_LEVELS = ("mandatory", "advisory")
NOTIFICATION_TRIGGERS = (
    "run:created",
    "run:planning",
    "run:needs_attention",
    "run:applying",
    "run:completed",
    "run:errored",
    "run:cancelled",
    "assessment:drifted",
    "release:completed",
    "release:failed",
)


@dataclass(frozen=True, slots=True)
class RunTaskConfig:
    """One ``[[run_task]]``: an HCP-compatible task service. ``hmac_key`` is secret."""

    name: str
    url: str
    hmac_key: str = field(repr=False, default="")
    timeout: float = 600.0
    retries: int = 3


@dataclass(frozen=True, slots=True)
class RunTaskAttachment:
    """A workspace's use of a run task: at which stages, and whether it can block the run."""

    task: str
    stages: tuple[str, ...]
    enforcement: str


@dataclass(frozen=True, slots=True)
class NotificationConfig:
    """One ``[[notification]]`` destination. ``token`` (HMAC key for generic) is secret."""

    name: str
    type: str
    url: str = field(repr=False)
    token: str | None = field(repr=False, default=None)
    triggers: tuple[str, ...] = NOTIFICATION_TRIGGERS
    retries: int = 5
    retry_interval: float = 10.0


KEEP_DEFAULT = 30 * 86400.0  # [outbox] keep: 30 days


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    """``[outbox]``: how follow-up jobs are delivered."""

    concurrency: int = 8
    lease: float = 300.0
    retries: int = 10
    keep: float = KEEP_DEFAULT  # rows done and delivery attempts older than this are deleted


@dataclass(frozen=True, slots=True)
class ReleasesConfig:
    """``[releases]``: the release executor; off unless enabled."""

    enabled: bool = False
    max_parallel_per_batch: int = 0  # 0: every item of a batch at once


@dataclass(frozen=True, slots=True)
class WebConfig:
    """``[web]``: the web page's sessions (daemon/web/sessions.py)."""

    session_idle: float = 12 * 3600.0  # a session not used for this long ends
    session_max: float = 7 * 86400.0  # and every session ends this long after sign-in


API_ROLES = ("read", "plan", "apply", "admin")  # each role may do what the ones before it may


@dataclass(frozen=True, slots=True)
class ApiTokenConfig:
    """One ``[[api_token]]``: a named caller and its role. Only the SHA-256 (hex) of the token is
    configured, so the file never holds a usable credential."""

    name: str
    role: str
    sha256: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class WorkspaceConfig:
    """One ``[[workspace]]``: exactly one of ``source`` and ``module`` is set."""

    name: str
    source: Path | None
    module: ModuleRef | None
    # Not in repr: they may hold secrets (resolved references), and a repr ends up in logs.
    inputs: Mapping[str, Any] = field(repr=False)
    vars: Mapping[str, Any] = field(repr=False)
    env: Mapping[str, str] = field(repr=False)
    sensitive: frozenset[str]  # names in vars, env or inputs; referenced values are included
    auto_apply: bool
    init_timeout: float
    plan_timeout: float
    apply_timeout: float
    run_tasks: tuple[RunTaskAttachment, ...] = ()
    notifications: tuple[str, ...] = ()
    triggers_runs_in: tuple[str, ...] = ()
    auto_apply_run_trigger: bool = False
    drift_check: float | None = None
    # Script hooks: stage (HOOK_STAGES) -> shell commands, run one after another, each
    # under `hook_timeout` (docs/architecture.md §3).
    hooks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    hook_timeout: float = 600.0
    # The workspaces whose state this one's runs may read (terraform_remote_state, http).
    remote_state_from: tuple[str, ...] = ()
    # The loader sets it to `[terraform] binary` when the workspace names none.
    terraform_binary: str = "terraform"

    def __post_init__(self) -> None:
        object.__setattr__(self, "hooks", freeze(self.hooks))
        object.__setattr__(self, "inputs", freeze(self.inputs))
        object.__setattr__(self, "vars", freeze(self.vars))
        object.__setattr__(self, "env", freeze(self.env))
        object.__setattr__(self, "sensitive", frozenset(self.sensitive))

    def sensitive_values(self) -> list[str]:
        """The strings to mask in logs: the values of the sensitive vars, env and inputs.

        Strings are taken as they are, other values as their JSON text; the string leaves of
        arrays and tables are included too, because Terraform prints collections element by
        element. Empty strings are left out. Longest first, so a masker that replaces in
        order never leaves part of a longer secret visible.
        """
        found: set[str] = set()
        for name in self.sensitive:
            for table in (self.vars, self.env, self.inputs):
                if name in table:
                    found.update(secret_strings(table[name]))
        found.discard("")
        return sorted(found, key=lambda text: (-len(text), text))


@dataclass(frozen=True, slots=True)
class Config:
    """The whole config file; ``path`` is the absolute path it was loaded from."""

    path: Path
    daemon: DaemonConfig
    terraform: TerraformConfig
    workspaces: tuple[WorkspaceConfig, ...]
    run_tasks: tuple[RunTaskConfig, ...] = ()
    notifications: tuple[NotificationConfig, ...] = ()
    outbox: OutboxConfig = OutboxConfig()
    releases: ReleasesConfig = ReleasesConfig()
    api_tokens: tuple[ApiTokenConfig, ...] = ()
    web: WebConfig = WebConfig()

    def __post_init__(self) -> None:
        object.__setattr__(self, "workspaces", tuple(self.workspaces))

    def run_task(self, name: str) -> RunTaskConfig:
        """The run task called ``name``; KeyError if there is none."""
        for task in self.run_tasks:
            if task.name == name:
                return task
        raise KeyError(name)

    def notification(self, name: str) -> NotificationConfig:
        """The notification destination called ``name``; KeyError if there is none."""
        for destination in self.notifications:
            if destination.name == name:
                return destination
        raise KeyError(name)

    def notifies(self, workspace: str, trigger: str) -> bool:
        """Whether a notification of ``trigger`` about ``workspace`` goes anywhere: some
        destination the workspace names (and this config defines) wants the trigger. The
        outbox's fan-out sends it to exactly those (outbox/jobs.py)."""
        try:
            names = self.workspace(workspace).notifications
        except KeyError:
            return False
        return any(d.name in names and trigger in d.triggers for d in self.notifications)

    def workspace(self, name: str) -> WorkspaceConfig:
        """The workspace called ``name``; KeyError if there is none."""
        for workspace in self.workspaces:
            if workspace.name == name:
                return workspace
        raise KeyError(name)

