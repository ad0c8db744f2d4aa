"""Read tfward's TOML config file, validate every key and build the immutable model.

Validation is strict on purpose: an unknown key is nearly always a typo, and a typo in a
daemon that applies infrastructure is better caught at startup than in the middle of a run.
Every problem is a ``ConfigError`` naming the file, the key path (``workspace[1].vars.x``)
and what was expected versus what was found. Problems are collected (reading.py's
``Context.attempt``): the file is refused with all of them at once, table by table in the
order of the sections below, then the references between tables (run tasks, destinations,
run triggers).

Loading has no side effects: directories (data_dir, plugin cache) are not created here.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from tfward.config import hooks, integrations, tokens, web
from tfward.config import terraform as terraform_section
from tfward.config.model import (
    Config,
    DaemonConfig,
    ModuleRef,
    TerraformConfig,
    WorkspaceConfig,
)
from tfward.config.reading import Context as _Context
from tfward.config.reading import Table as _Table
from tfward.config.reading import default as _default
from tfward.config.reading import expected as _expected
from tfward.config.reading import quote as _quote
from tfward.config.reading import required as _required
from tfward.config.terraform import binary as _binary
from tfward.config.terraform import count as _count
from tfward.config.values import workspace_values
from tfward.errors import ConfigError

__all__ = ["load_config", "parse_config"]

_T = TypeVar("_T")

_TOP_KEYS = (
    frozenset({"daemon", "terraform", "workspace", tokens.TOP_KEY, web.TOP_KEY})
    | integrations.TOP_KEYS
)
_DAEMON_KEYS = frozenset(
    {
        "listen",
        "data_dir",
        "database_url",
        "public_url",
        "organization",
        "max_concurrent_runs",
        "shutdown_grace",
        "secret_key_file",
        "disk_reserve_mb",
        "state_backups_keep",
        "node_id",
        "lease_ttl",
        "lease_renew",
        "self_fence_margin",
        "event_heartbeat",
    }
)
_WORKSPACE_KEYS = (
    frozenset(
        {
            "name",
            "source",
            "module",
            "inputs",
            "vars",
            "env",
            "sensitive",
            "auto_apply",
            "init_timeout",
            "plan_timeout",
            "apply_timeout",
            "terraform_binary",
        }
    )
    | integrations.WORKSPACE_LINK_KEYS
    | hooks.WORKSPACE_KEYS
)
_MODULE_KEYS = frozenset({"source", "version"})

_DEFAULT_LISTEN = "127.0.0.1:8700"
_LISTEN = re.compile(r"(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^:\[\]\s/]+)):(?P<port>\d{1,5})")
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_HTTP_URL = re.compile(r"https?://[^\s/]+\S*")
_ORGANIZATION = re.compile(r"[A-Za-z0-9_-]+")
_WORKSPACE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def load_config(path: str | Path) -> Config:
    """Read and validate the config file at ``path``; raise ConfigError if it is unusable."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(file, "", "config file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(file, "", f"not valid UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read config file: {exc.strerror or exc}") from exc
    return parse_config(text, file)


def parse_config(text: str, path: Path) -> Config:
    """Validate ``text`` as if it were the file at ``path`` (relative paths resolve there)."""
    path = Path(path)
    absolute = Path(os.path.abspath(path))
    ctx = _Context(file=path, base=absolute.parent)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"invalid TOML: {exc}") from None
    root = _Table(ctx, data, "", _TOP_KEYS)
    daemon = _daemon(root.table("daemon", _DAEMON_KEYS))
    terraform_table = root.table("terraform", terraform_section.KEYS)
    terraform = terraform_section.section(terraform_table, daemon.data_dir)
    linked = integrations.parse_integrations(root)
    workspaces = _workspaces(root, terraform)
    api_tokens = tokens.parse_api_tokens(root)
    web_settings = web.parse_web(root)
    integrations.check_links(root, linked, workspaces)  # once every table has been read
    ctx.check()  # every problem found above, at once
    return Config(
        path=absolute,
        daemon=daemon,
        terraform=terraform,
        workspaces=workspaces,
        run_tasks=linked.run_tasks,
        notifications=linked.notifications,
        outbox=linked.outbox,
        releases=linked.releases,
        api_tokens=api_tokens,
        web=web_settings,
    )


# --- [daemon] ---------------------------------------------------------------------------


def _daemon(t: _Table) -> DaemonConfig:
    attempt = t.ctx.attempt
    listen = attempt(lambda: _default(t.string("listen"), _DEFAULT_LISTEN), _DEFAULT_LISTEN)
    host, port = attempt(lambda: _listen(t, listen), ("127.0.0.1", 8700))
    var = t.ctx.resolve("var")
    data_dir = attempt(lambda: _default(t.path("data_dir"), var), var)
    grace = attempt(lambda: t.duration("shutdown_grace", positive=False), None)
    return DaemonConfig(
        listen_host=host,
        listen_port=port,
        data_dir=data_dir,
        database_url=attempt(lambda: _database_url(t, data_dir), ""),
        public_url=attempt(lambda: _public_url(t, listen), ""),
        organization=attempt(lambda: _organization(t), "default"),
        max_concurrent_runs=attempt(lambda: _count(t, "max_concurrent_runs", 4, minimum=1), 4),
        shutdown_grace=_default(grace, 600.0),
        secret_key_file=attempt(lambda: t.path("secret_key_file"), None),
        disk_reserve_mb=attempt(lambda: _count(t, "disk_reserve_mb", 64), 64),
        state_backups_keep=attempt(lambda: _count(t, "state_backups_keep", 10, minimum=1), 10),
        **attempt(lambda: _leases(t, data_dir), _NO_LEASE_KEYS),
        event_heartbeat=_default(attempt(lambda: t.duration("event_heartbeat"), None), 15.0),
    )


_NO_LEASE_KEYS: dict[str, Any] = {}


def _leases(t: _Table, data_dir: Path) -> dict[str, Any]:
    """`node_id` (default: host name and data dir) and the lease timings of several daemons
    on one database (docs/architecture.md §15): renewal, then self-fencing, before expiry."""
    node_id = _default(t.string("node_id"), f"{socket.gethostname()}:{data_dir}")
    if not node_id.strip() or len(node_id) > 200:
        raise t.fail("node_id", f"expected 1-200 characters, got {_quote(node_id)}")
    ttl = _default(t.duration("lease_ttl"), 15.0)
    renew = _default(t.duration("lease_renew"), 5.0)
    margin = _default(t.duration("self_fence_margin"), 5.0)
    if renew >= ttl - margin:
        raise t.fail(
            "lease_renew",
            f"expected less than lease_ttl - self_fence_margin ({ttl - margin:g}s): a daemon "
            f"must renew before it fences itself, got {renew:g}s",
        )
    return {"node_id": node_id, "lease_ttl": ttl, "lease_renew": renew,
            "self_fence_margin": margin}  # fmt: skip


def _listen(t: _Table, text: str) -> tuple[str, int]:
    match = _LISTEN.fullmatch(text)
    if match is None:
        expected = 'expected "host:port" such as "127.0.0.1:8700" or "[::1]:8700"'
        raise t.fail("listen", f"{expected}, got {_quote(text)}")
    port = int(match["port"])
    if port > 65535:
        raise t.fail("listen", f"expected a port in 0..65535, got {port}")
    if match["v6"] is None:
        return match["host"], port
    try:
        ipaddress.IPv6Address(match["v6"])
    except ValueError:
        raise t.fail("listen", f"expected an IPv6 address inside [], got {_quote(text)}") from None
    return match["v6"], port


def _database_url(t: _Table, data_dir: Path) -> str:
    url = t.string("database_url")
    if url is None:
        # Four slashes in total for an absolute path: the SQLAlchemy form.
        return f"sqlite:///{data_dir / 'tfward.db'}"
    if not _URL_SCHEME.fullmatch(url):
        example = '"sqlite:////srv/tfward/tfward.db"'
        expected = f"expected a database URL such as {example}"
        raise t.fail("database_url", f"{expected}, got {_quote(url)}")
    # psycopg 3 is the PostgreSQL driver tfward ships with.
    for short in ("postgresql://", "postgres://"):
        if url.startswith(short):
            url = "postgresql+psycopg://" + url.removeprefix(short)
    if not url.startswith(("sqlite://", "postgresql+psycopg://")):
        expected = "expected sqlite:///PATH or postgresql+psycopg://USER@HOST/DATABASE"
        raise t.fail("database_url", f"{expected}, got {_quote(url)}")
    return url


def _public_url(t: _Table, listen: str) -> str:
    url = t.string("public_url")
    if url is None:
        return f"http://{listen}"
    if not _HTTP_URL.fullmatch(url):
        expected = 'expected an http:// or https:// URL such as "https://tfward.example.com"'
        raise t.fail("public_url", f"{expected}, got {_quote(url)}")
    # Other modules build links as public_url + "/path".
    return url.rstrip("/")


def _organization(t: _Table) -> str:
    name = _default(t.string("organization"), "default")
    if not _ORGANIZATION.fullmatch(name):
        raise t.fail("organization", f"expected letters, digits, - and _, got {_quote(name)}")
    return name


# --- [terraform] ------------------------------------------------------------------------


# --- [[workspace]] ----------------------------------------------------------------------


def _workspaces(root: _Table, terraform: TerraformConfig) -> tuple[WorkspaceConfig, ...]:
    raw = root.ctx.attempt(
        lambda: root.get("workspace", list, "an array of tables ([[workspace]])"), None
    )
    workspaces: list[WorkspaceConfig] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(raw or ()):
        path = f"workspace[{index}]"
        if not isinstance(item, dict):
            root.ctx.note(root.ctx.error(path, _expected("a table", item)))
            continue
        workspace = _workspace(_Table(root.ctx, item, path, _WORKSPACE_KEYS), terraform)
        if workspace is None:
            continue
        if workspace.name in first_index:
            other = f"workspace[{first_index[workspace.name]}]"
            message = f"duplicate workspace name {_quote(workspace.name)}, also used by {other}"
            root.ctx.note(root.ctx.error(f"{path}.name", message))
            continue
        first_index[workspace.name] = index
        workspaces.append(workspace)
    return tuple(workspaces)


def _workspace(t: _Table, terraform: TerraformConfig) -> WorkspaceConfig | None:
    """The workspace, or None when its name is unusable; every problem of the table is noted
    either way. With unusable code (source, module) it stands in with the config's folder, so
    that its links are checked too (the config is refused anyway)."""
    attempt = t.ctx.attempt
    name = attempt(lambda: _workspace_name(t), None)
    unknown: tuple[Path | None, ModuleRef | None] = (None, None)
    source, module = attempt(lambda: _origin(t), unknown)
    values = workspace_values(t, has_module=module is not None or "module" in t.data)
    links = integrations.workspace_links(t)
    no_hooks = hooks.WorkspaceHooks({}, terraform.hook_timeout)
    scripts = attempt(lambda: hooks.workspace_hooks(t, terraform.hook_timeout), no_hooks)

    auto_apply = attempt(lambda: t.get("auto_apply", bool, "a boolean"), None)
    init, plan, apply = (
        _default(attempt(functools.partial(t.duration, key), None), fallback)
        for key, fallback in (
            ("init_timeout", terraform.init_timeout),
            ("plan_timeout", terraform.plan_timeout),
            ("apply_timeout", terraform.apply_timeout),
        )
    )
    if name is None:
        return None
    return WorkspaceConfig(
        name=name,
        source=t.ctx.base if source is None and module is None else source,
        module=module,
        inputs=values.inputs,
        vars=values.vars,
        env=values.env,
        sensitive=values.sensitive,
        auto_apply=_default(auto_apply, False),
        init_timeout=init,
        plan_timeout=plan,
        apply_timeout=apply,
        run_tasks=links.run_tasks,
        notifications=links.notifications,
        triggers_runs_in=links.triggers_runs_in,
        auto_apply_run_trigger=links.auto_apply_run_trigger,
        drift_check=links.drift_check,
        hooks=scripts.hooks,
        hook_timeout=scripts.timeout,
        remote_state_from=links.remote_state_from,
        terraform_binary=attempt(lambda: _binary(t, "terraform_binary"), None) or terraform.binary,
    )


def _workspace_name(t: _Table) -> str:
    name = _required(t, t.string("name"), "name")
    if not _WORKSPACE_NAME.fullmatch(name):
        expected = "expected 1-64 of a-z, 0-9, _ and -, starting with a letter or digit"
        raise t.fail("name", f"{expected}, got {_quote(name)}")
    return name


def _origin(t: _Table) -> tuple[Path | None, ModuleRef | None]:
    """The workspace's code: a ``source`` directory or a ``module``, exactly one."""
    has_source, has_module = "source" in t.data, "module" in t.data
    if has_source == has_module:
        found = "both" if has_source else "neither"
        expected = "expected exactly one of source (a directory) or module (a table)"
        raise t.ctx.error(t.key_path, f"{expected}, got {found}")
    if has_module:
        return None, _module(t)
    return _source_dir(t), None


def _source_dir(t: _Table) -> Path:
    path = _required(t, t.path("source"), "source")
    if not path.exists():
        raise t.fail("source", f"expected an existing directory, {path} does not exist")
    if not path.is_dir():
        raise t.fail("source", f"expected a directory, {path} is not a directory")
    return path


def _module(t: _Table) -> ModuleRef:
    expected = 'a table such as { source = "org/name/provider", version = "1.2.0" }'
    t.get("module", dict, expected)
    m = t.table("module", _MODULE_KEYS)
    source = _required(m, m.nonempty("source"), "source")
    version = m.nonempty("version")
    if not source.startswith(("./", "../")):
        return ModuleRef(source=source, version=version)
    if version is not None:
        # Terraform itself rejects this, but only at init time, long after startup.
        raise m.fail("version", "only allowed for registry modules, not a local ./ or ../ source")
    return ModuleRef(source=str(t.ctx.resolve(source)), version=None)
