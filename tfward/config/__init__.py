"""tfward.config: load, validate and hold the daemon's TOML configuration.

``load_config(path)`` is the entry point; it returns an immutable ``Config`` or raises
``tfward.errors.ConfigError`` naming the file, the key path and what was wrong.
"""

from tfward.config.durations import format_duration, parse_duration
from tfward.config.load import load_config, parse_config
from tfward.config.model import (
    API_ROLES,
    ApiTokenConfig,
    Config,
    DaemonConfig,
    ModuleRef,
    NotificationConfig,
    OutboxConfig,
    ReleasesConfig,
    RunTaskAttachment,
    RunTaskConfig,
    TerraformConfig,
    WorkspaceConfig,
    freeze,
    thaw,
)
from tfward.errors import ConfigError

__all__ = [
    "API_ROLES",
    "ApiTokenConfig",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "ModuleRef",
    "NotificationConfig",
    "OutboxConfig",
    "ReleasesConfig",
    "RunTaskAttachment",
    "RunTaskConfig",
    "TerraformConfig",
    "WorkspaceConfig",
    "format_duration",
    "freeze",
    "load_config",
    "parse_config",
    "parse_duration",
    "thaw",
]
