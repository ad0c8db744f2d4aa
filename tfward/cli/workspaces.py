"""Workspace commands: `workspaces [show NAME]`, `lock NAME [--reason R]`, `unlock NAME
[--force]`."""

from __future__ import annotations

import argparse
from typing import Any

from .client import EXIT_OK, Api, Settings
from .render import ago, as_json, fields, output_value, table, where


def list_workspaces(args: argparse.Namespace, settings: Settings) -> int:
    """`workspaces`, or `workspaces show NAME`."""
    with Api(settings) as api:
        if args.ws_command == "show":
            found = api.get(f"/api/v1/workspaces/{args.name}")
        else:
            found = api.get("/api/v1/workspaces")
    if getattr(args, "json", False):
        print(as_json(found))
    elif args.ws_command == "show":
        print(_details(found))
    else:
        rows = [
            (ws["name"], _lock(ws), _current(ws), ws["queued_runs"], _state(ws)) for ws in found
        ]
        print(table(("WORKSPACE", "LOCK", "CURRENT RUN", "QUEUED", "STATE"), rows))
    return EXIT_OK


def _lock(ws: dict[str, Any]) -> str:
    lock = ws["lock"]
    if lock is None:
        return "-"
    if lock["run_id"]:
        return f"run {lock['run_id']}"
    return f"{lock['locked_by'] or 'user'}" + (" (terraform)" if lock.get("lock_id") else "")


def _lock_text(lock: dict[str, Any] | None) -> str:
    """Who holds the lock, why, since when; for terraform's http backend its operation, who
    runs it and the lock ID (the one to push a state under)."""
    if lock is None:
        return "unlocked"
    text = str(lock["message"]) + (f" ({lock['reason']})" if lock["reason"] else "")
    if lock.get("lock_id"):
        operation = lock["operation"] or "terraform"
        text += f" [{operation} by {lock['who'] or '?'}, lock ID {lock['lock_id']}]"
    return f"{text}, since {lock['locked_at']} ({ago(lock['locked_at'])})"


def _current(ws: dict[str, Any]) -> str:
    run = ws["current_run"]
    return f"{run['id']} {where(run)}" if run else "-"


def _state(ws: dict[str, Any]) -> str:
    sv = ws["latest_state_version"]
    return f"serial {sv['serial']}, {sv['resource_count']} resources" if sv else "-"


def _details(ws: dict[str, Any]) -> str:
    sv = ws["latest_state_version"]
    lock = ws["lock"]
    pairs: list[tuple[str, Any]] = [
        ("workspace", ws["name"]),
        ("id", ws["id"]),
        ("lock", _lock_text(lock)),
        ("current run", _current(ws)),
        ("queued runs", ws["queued_runs"]),
        ("state", f"{sv['id']} ({_state(ws)}, {sv['kind']}, {sv['created_at']})" if sv else "none"),
    ]
    for name, out in (sv or {}).get("outputs", {}).items():
        pairs.append((f"output {name}", output_value(out)))
    return fields(pairs)


def lock(args: argparse.Namespace, settings: Settings) -> int:
    """`lock NAME [--reason R]` and `unlock NAME [--force]`."""
    if args.command == "lock":
        action, body = "lock", ({"reason": args.reason} if args.reason else None)
    else:
        action, body = ("force-unlock" if args.force else "unlock"), None
    with Api(settings) as api:
        ws = api.post(f"/api/v1/workspaces/{args.name}/actions/{action}", body)
    if getattr(args, "json", False):
        print(as_json(ws))
    elif ws["lock"]:
        print(f"workspace {ws['name']}: {_lock_text(ws['lock'])}")
    else:
        print(f"workspace {ws['name']}: unlocked")
    return EXIT_OK
