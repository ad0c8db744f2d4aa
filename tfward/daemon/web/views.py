"""What the run page shows, shaped from the run, its timeline, its plan and its run tasks.

Pure functions of what the store read: the timeline's durations, the plan's resource changes
(from the masked plan JSON, api/plans.py), the run-task results grouped by stage, and the links
a page may make (only http and https: a task service's `url` is not trusted to be one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from tfward.runs.model import Run
from tfward.store.runs import TimelineEntry
from tfward.store.tasks import TaskResult

MAX_CHANGES = 1000  # resource changes shown on a run page; the plan JSON has them all

# terraform's change actions -> the sign a plan prints.
_SIGNS = {
    ("create",): "+",
    ("update",): "~",
    ("delete",): "-",
    ("delete", "create"): "-/+",
    ("create", "delete"): "+/-",
    ("read",): "<=",
}


@dataclass(frozen=True, slots=True)
class Step:
    """One entry of a run's timeline: the status (and stage) it entered, when, for how long
    (None: it is still there, or the run ended there)."""

    status: str
    stage: str | None
    at: datetime
    seconds: float | None
    current: bool


def timeline(run: Run, entries: list[TimelineEntry], when: datetime) -> list[Step]:
    steps: list[Step] = []
    for i, entry in enumerate(entries):
        last = i == len(entries) - 1
        end = entries[i + 1].at if not last else None if run.status.is_terminal else when
        seconds = None if end is None else max(0.0, (end - entry.at).total_seconds())
        steps.append(
            Step(
                str(entry.status),
                str(entry.stage) if entry.stage else None,
                entry.at,
                seconds,
                current=last and not run.status.is_terminal,
            )
        )
    return steps


@dataclass(frozen=True, slots=True)
class Change:
    address: str
    actions: str  # "create", "delete, create", ...
    sign: str
    before: Any
    after: Any


def resource_changes(plan_json: bytes | None) -> tuple[list[Change], int]:
    """The plan's resource changes that do something (no-ops and reads left out), at most
    MAX_CHANGES of them, and how many there are. `plan_json` is already masked."""
    if not plan_json:
        return [], 0
    try:
        document = json.loads(plan_json)
    except ValueError:
        return [], 0
    found: list[Change] = []
    for rc in (document or {}).get("resource_changes") or []:
        change = rc.get("change") or {}
        actions = tuple(change.get("actions") or ())
        if actions in ((), ("no-op",)):
            continue
        found.append(
            Change(
                address=str(rc.get("address", "")),
                actions=", ".join(actions),
                sign=_SIGNS.get(actions, "?"),
                before=change.get("before"),
                after=change.get("after"),
            )
        )
    return found[:MAX_CHANGES], len(found)


def tasks_by_stage(results: list[TaskResult]) -> list[tuple[str, list[TaskResult]]]:
    stages: dict[str, list[TaskResult]] = {}
    for result in results:
        stages.setdefault(result.stage, []).append(result)
    return list(stages.items())


def safe_link(url: Any) -> str | None:
    """`url` if it is an http(s) URL a page may link to, else None (shown as text instead)."""
    if not isinstance(url, str):
        return None
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return None
    return url if scheme in ("http", "https") else None
