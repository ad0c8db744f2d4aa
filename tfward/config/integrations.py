"""Config for what a workspace is connected to: run tasks, notification destinations, the
outbox, releases, run triggers and drift checks.

`parse_integrations` reads the top-level `[[run_task]]`, `[[notification]]`, `[outbox]` and
`[releases]` tables; `workspace_links` reads a workspace's `run_tasks`, `notifications`,
`triggers_runs_in`, `auto_apply_run_trigger`, `drift_check` and `remote_state_from`;
`check_links` then checks every name refers to something defined, that run triggers form no
cycle and that no workspace names itself in `remote_state_from`. Problems are noted on the
context and reading goes on (reading.py), so all of them are reported together; a name that is
defined, even by an entry with problems of its own, is not reported again as unknown.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tfward.config.model import (
    ENFORCEMENT_LEVELS,
    KEEP_DEFAULT,
    NOTIFICATION_TRIGGERS,
    RUN_TASK_STAGES,
    NotificationConfig,
    OutboxConfig,
    ReleasesConfig,
    RunTaskAttachment,
    RunTaskConfig,
    WorkspaceConfig,
)
from tfward.config.reading import Table, default, expected, quote, required

RUN_TASK_KEYS = frozenset({"name", "url", "hmac_key", "hmac_key_file", "timeout", "retries"})
NOTIFICATION_KEYS = frozenset(
    {"name", "type", "url", "token", "triggers", "retries", "retry_interval"}
)
OUTBOX_KEYS = frozenset({"concurrency", "lease", "retries", "keep"})
RELEASES_KEYS = frozenset({"enabled", "max_parallel_per_batch"})
ATTACHMENT_KEYS = frozenset({"task", "stages", "enforcement"})
WORKSPACE_LINK_KEYS = frozenset(
    {
        "run_tasks",
        "notifications",
        "triggers_runs_in",
        "auto_apply_run_trigger",
        "drift_check",
        "remote_state_from",
    }
)
TOP_KEYS = frozenset({"run_task", "notification", "outbox", "releases"})

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_HTTP_URL = re.compile(r"https?://[^\s/]+\S*")


@dataclass(frozen=True, slots=True)
class Integrations:
    run_tasks: tuple[RunTaskConfig, ...]
    notifications: tuple[NotificationConfig, ...]
    outbox: OutboxConfig
    releases: ReleasesConfig


@dataclass(frozen=True, slots=True)
class WorkspaceLinks:
    run_tasks: tuple[RunTaskAttachment, ...]
    notifications: tuple[str, ...]
    triggers_runs_in: tuple[str, ...]
    auto_apply_run_trigger: bool
    drift_check: float | None
    remote_state_from: tuple[str, ...]


def parse_integrations(root: Table) -> Integrations:
    return Integrations(
        run_tasks=tuple(_named(root, "run_task", RUN_TASK_KEYS, _run_task)),
        notifications=tuple(_named(root, "notification", NOTIFICATION_KEYS, _notification)),
        outbox=_outbox(root.table("outbox", OUTBOX_KEYS)),
        releases=_releases(root.table("releases", RELEASES_KEYS)),
    )


def workspace_links(t: Table) -> WorkspaceLinks:
    attempt = t.ctx.attempt
    trigger = attempt(lambda: t.get("auto_apply_run_trigger", bool, "a boolean"), None)
    return WorkspaceLinks(
        run_tasks=attempt(lambda: _attachments(t), ()),
        notifications=attempt(lambda: _names(t, "notifications"), ()),
        triggers_runs_in=attempt(lambda: _names(t, "triggers_runs_in"), ()),
        auto_apply_run_trigger=default(trigger, False),
        drift_check=attempt(lambda: t.duration("drift_check"), None),
        remote_state_from=attempt(lambda: _names(t, "remote_state_from"), ()),
    )


def check_links(root: Table, found: Integrations, workspaces: Sequence[WorkspaceConfig]) -> None:
    """Every referenced task, destination and workspace exists; run triggers have no cycle.
    Each problem is noted on the context."""
    tasks = {task.name for task in found.run_tasks} | _defined(root, "run_task")
    destinations = {d.name for d in found.notifications} | _defined(root, "notification")
    names = {ws.name for ws in workspaces} | _defined(root, "workspace")
    index = _indexes(root)
    for ws in workspaces:
        path = f"workspace[{index[ws.name]}]"
        for j, attachment in enumerate(ws.run_tasks):
            if attachment.task not in tasks:
                message = _unknown("run task", attachment.task, tasks)
                root.ctx.note(root.ctx.error(f"{path}.run_tasks[{j}].task", message))
        for key, refs, known in (
            ("notifications", ws.notifications, destinations),
            ("triggers_runs_in", ws.triggers_runs_in, names),
            ("remote_state_from", ws.remote_state_from, names - {ws.name}),
        ):
            what = "notification destination" if key == "notifications" else "workspace"
            for j, ref in enumerate(refs):
                if ref == ws.name and key == "remote_state_from":
                    message = "a workspace reads its own state without a grant"
                    root.ctx.note(root.ctx.error(f"{path}.{key}[{j}]", message))
                elif ref not in known:
                    root.ctx.note(root.ctx.error(f"{path}.{key}[{j}]", _unknown(what, ref, known)))
    cycle = _trigger_cycle({ws.name: ws.triggers_runs_in for ws in workspaces})
    if cycle:
        message = "run triggers form a cycle: " + " -> ".join(cycle)
        root.ctx.note(root.ctx.error(f"workspace[{index[cycle[0]]}].triggers_runs_in", message))


def _defined(root: Table, key: str) -> set[str]:
    """The names the file gives the entries of `[[key]]`, also of entries that have problems."""
    items = root.data.get(key)
    if not isinstance(items, list):
        return set()
    return {i["name"] for i in items if isinstance(i, dict) and isinstance(i.get("name"), str)}


def _indexes(root: Table) -> dict[str, int]:
    """Workspace name -> the index of its first `[[workspace]]` table."""
    items = root.data.get("workspace")
    found: dict[str, int] = {}
    for index, item in enumerate(items if isinstance(items, list) else ()):
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            found.setdefault(item["name"], index)
    return found


def _unknown(what: str, name: str, known: set[str]) -> str:
    choices = ", ".join(sorted(known)) or "none are defined"
    return f"unknown {what} {quote(name)} (defined: {choices})"


def _trigger_cycle(edges: Mapping[str, Sequence[str]]) -> list[str]:
    """A cycle in the run-trigger graph as a path (first == last), or [] if none."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        stack.append(node)
        for nxt in edges.get(node, ()):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return []

    for node in edges:
        if node not in state and (found := visit(node)):
            return found
    return []


def _named(root: Table, key: str, allowed: frozenset[str], build: Any) -> list[Any]:
    """The `[[key]]` entries built by `build(table, name)`; an entry with a problem is noted
    and left out."""
    items = root.ctx.attempt(lambda: root.get(key, list, f"an array of tables ([[{key}]])"), None)
    built: list[Any] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items or ()):
        path = f"{key}[{index}]"
        if not isinstance(item, dict):
            root.ctx.note(root.ctx.error(path, expected("a table", item)))
            continue
        table = Table(root.ctx, item, path, allowed)
        name = root.ctx.attempt(functools.partial(_entry_name, table, key, seen), None)
        if name is None:
            continue
        seen[name] = index
        entry = root.ctx.attempt(functools.partial(build, table, name), None)
        if entry is not None:
            built.append(entry)
    return built


def _entry_name(table: Table, key: str, seen: Mapping[str, int]) -> str:
    name = required(table, table.string("name"), "name")
    if not _NAME.fullmatch(name):
        raise table.fail("name", f"expected 1-64 of a-z, 0-9, _ and -, got {quote(name)}")
    if name in seen:
        raise table.fail("name", f"duplicate name {quote(name)}, also used by {key}[{seen[name]}]")
    return name


def _url(t: Table) -> str:
    url = required(t, t.nonempty("url"), "url")
    if not _HTTP_URL.fullmatch(url):
        raise t.fail("url", f"expected an http:// or https:// URL, got {quote(url)}")
    return url


def _count(t: Table, key: str, default_value: int, minimum: int = 0) -> int:
    value = t.get(key, int, "an integer")
    if value is not None and value < minimum:
        raise t.fail(key, f"expected an integer >= {minimum}, got {value}")
    return default_value if value is None else value


def _run_task(t: Table, name: str) -> RunTaskConfig:
    key = t.string("hmac_key")
    key_file = t.path("hmac_key_file")
    if key is not None and key_file is not None:
        raise t.fail("hmac_key_file", "give hmac_key or hmac_key_file, not both")
    if key_file is not None:
        try:
            key = key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise t.fail("hmac_key_file", f"cannot read {key_file}: {exc.strerror}") from None
    return RunTaskConfig(
        name=name,
        url=_url(t),
        hmac_key=key or "",
        timeout=default(t.duration("timeout"), 600.0),
        retries=_count(t, "retries", 3),
    )


def _notification(t: Table, name: str) -> NotificationConfig:
    kind = required(t, t.string("type"), "type")
    if kind not in ("generic", "slack"):
        raise t.fail("type", f'expected "generic" or "slack", got {quote(kind)}')
    triggers = t.get("triggers", list, "an array of trigger names")
    for index, trigger in enumerate(triggers or ()):
        if trigger not in NOTIFICATION_TRIGGERS:
            raise t.ctx.error(
                f"{t.key('triggers')}[{index}]",
                f"expected one of {', '.join(NOTIFICATION_TRIGGERS)}, got {quote(str(trigger))}",
            )
    return NotificationConfig(
        name=name,
        type=kind,
        url=_url(t),
        token=t.string("token"),
        triggers=tuple(triggers) if triggers is not None else NOTIFICATION_TRIGGERS,
        retries=_count(t, "retries", 5),
        retry_interval=default(t.duration("retry_interval"), 10.0),
    )


def _outbox(t: Table) -> OutboxConfig:
    attempt = t.ctx.attempt
    return OutboxConfig(
        concurrency=attempt(lambda: _count(t, "concurrency", 8, minimum=1), 8),
        lease=default(attempt(lambda: t.duration("lease"), None), 300.0),
        retries=attempt(lambda: _count(t, "retries", 10), 10),
        keep=default(attempt(lambda: t.duration("keep"), None), KEEP_DEFAULT),
    )


def _releases(t: Table) -> ReleasesConfig:
    attempt = t.ctx.attempt
    return ReleasesConfig(
        enabled=default(attempt(lambda: t.get("enabled", bool, "a boolean"), None), False),
        max_parallel_per_batch=attempt(lambda: _count(t, "max_parallel_per_batch", 0), 0),
    )


def _names(t: Table, key: str) -> tuple[str, ...]:
    values = t.get(key, list, "an array of names") or []
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise t.ctx.error(f"{t.key(key)}[{index}]", expected("a string", value))
    return tuple(values)


def _attachments(t: Table) -> tuple[RunTaskAttachment, ...]:
    items = (
        t.get(
            "run_tasks",
            list,
            'an array of tables such as { task = "name", '
            'stages = ["post_plan"], enforcement = "mandatory" }',
        )
        or []
    )
    found: list[RunTaskAttachment] = []
    for index, item in enumerate(items):
        path = f"{t.key('run_tasks')}[{index}]"
        if not isinstance(item, dict):
            raise t.ctx.error(path, expected("a table", item))
        a = Table(t.ctx, item, path, ATTACHMENT_KEYS)
        task = required(a, a.string("task"), "task")
        stages = required(a, a.get("stages", list, "an array of stage names"), "stages")
        for j, stage in enumerate(stages):
            if stage not in RUN_TASK_STAGES:
                raise t.ctx.error(
                    f"{path}.stages[{j}]",
                    f"expected one of {', '.join(RUN_TASK_STAGES)}, got {quote(str(stage))}",
                )
        enforcement = default(a.string("enforcement"), "mandatory")
        if enforcement not in ENFORCEMENT_LEVELS:
            raise a.fail(
                "enforcement", f'expected "mandatory" or "advisory", got {quote(enforcement)}'
            )
        found.append(RunTaskAttachment(task, tuple(stages), enforcement))
    return tuple(found)
