"""`tfward release ...`: create, show (a table by batch; `--watch` follows it), list, cancel.

The commands talk to a running daemon's API with the connection options of every command
(`--url`, `--token`, `--config`: cli/client.py `resolve`). `--watch` long-polls the release
(`wait_after=<revision>`), so each change is shown as soon as the daemon commits it.

Exit codes, as for the other commands: 0 ok (`show`, and `--watch` once it ended: the release
succeeded or is still going), 1 the release failed, or the daemon answered 5xx (503: releases
disabled, daemon stopping), 2 usage or a request the daemon refused (4xx: unknown workspace,
unknown release, cancel of an ended release), 3 the release was cancelled, 4 the daemon cannot
be reached, 130 Ctrl-C (the release goes on).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import httpx

from .client import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STOPPED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    resolve,
)
from .commands import common_options

WAIT = 30.0
_ENDED = ("succeeded", "failed", "cancelled")


class _Refused(Exception):
    """The daemon answered with an error; `code` is the exit code it maps to."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def add_parser(sub: Any) -> None:
    """Add `release` and its subcommands to the `tfward` command's subparsers."""
    release = sub.add_parser(
        "release",
        help="roll a change through batches of workspaces",
        description="Roll a change through batches of workspaces, one batch after another "
        "(README: Releases).",
    )
    commands = release.add_subparsers(dest="release_command", required=True)
    url, _ = common_options()
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print the API's JSON")
    output.add_argument("--watch", action="store_true", help="follow it until it ends")

    create = commands.add_parser("create", parents=[url, output], help="start a release")
    create.add_argument(
        "--batch",
        action="append",
        required=True,
        metavar="WS[,WS...]",
        help="one batch of workspaces; repeat for each batch, in order",
    )
    create.add_argument("--name", default="", help="a name to find it by")
    create.add_argument(
        "--configuration-version", metavar="CV_ID", help="apply this configuration version"
    )
    create.add_argument(
        "--var", action="append", default=[], metavar="NAME=VALUE", help="a string variable"
    )
    create.add_argument(
        "--var-json", action="append", default=[], metavar="NAME=JSON", help="any variable"
    )
    show = commands.add_parser("show", parents=[url, output], help="show a release by batch")
    show.add_argument("release_id", metavar="REL_ID", help="a release id (rel-...)")
    listing = commands.add_parser("list", parents=[url], help="list releases, newest first")
    listing.add_argument("--json", action="store_true", help="print the API's JSON")
    cancel = commands.add_parser("cancel", parents=[url], help="cancel a release")
    cancel.add_argument("release_id", metavar="REL_ID", help="a release id (rel-...)")


def run(args: argparse.Namespace) -> int:
    try:
        body = _create_body(args) if args.release_command == "create" else {}
    except ValueError as exc:
        print(f"tfward: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        settings = resolve(
            getattr(args, "url", None), getattr(args, "token", None), getattr(args, "config", None)
        )
    except CliError as exc:
        print(f"tfward: {exc}", file=sys.stderr)
        return exc.code
    try:
        with httpx.Client(
            base_url=settings.url, headers=settings.headers(), timeout=WAIT + 15
        ) as client:
            return _dispatch(client, args, body)
    except httpx.TransportError as exc:
        print(f"tfward: cannot reach the daemon at {settings.url}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except _Refused as exc:
        print(f"tfward: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _dispatch(client: httpx.Client, args: argparse.Namespace, body: dict[str, Any]) -> int:
    command = args.release_command
    if command == "list":
        found = _call(client, "GET", "/api/v1/releases")
        print(json.dumps(found, indent=2) if args.json else _list_table(found))
        return EXIT_OK
    if command == "cancel":
        view = _call(client, "POST", f"/api/v1/releases/{args.release_id}/actions/cancel")
        print(f"release {view['id']}: cancel requested; it is {view['status']}")
        return EXIT_OK
    if command == "create":
        view = _call(client, "POST", "/api/v1/releases", json=body)
        if not (args.watch or args.json):
            print(f"release {view['id']} created")
    else:
        view = _call(client, "GET", f"/api/v1/releases/{args.release_id}")
    if args.watch:
        view = _watch(client, view, as_json=args.json)
    else:
        _print(view, as_json=args.json)
    if command == "create" and not args.watch:
        return EXIT_OK
    return {"failed": EXIT_FAILED, "cancelled": EXIT_STOPPED}.get(view["status"], EXIT_OK)


def _create_body(args: argparse.Namespace) -> dict[str, Any]:
    batches = []
    for text in args.batch:
        names = [name.strip() for name in text.split(",") if name.strip()]
        if not names:
            raise ValueError(f"--batch {text!r}: name at least one workspace")
        batches.append(names)
    body: dict[str, Any] = {"batches": batches}
    if args.name:
        body["name"] = args.name
    if args.configuration_version:
        body["configuration_version_id"] = args.configuration_version
    variables: dict[str, Any] = {}
    for text in args.var:
        name, value = _assignment("--var", text)
        variables[name] = value
    for text in args.var_json:
        name, raw = _assignment("--var-json", text)
        try:
            variables[name] = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"--var-json {name}: not JSON: {exc}") from None
    if variables:
        body["variables"] = variables
    return body


def _assignment(flag: str, text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f"{flag} {text!r}: expected NAME=VALUE")
    return name, value


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    response = client.request(method, path, **kwargs)
    if response.is_success:
        return response.json()["data"]
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text.strip() or response.reason_phrase
    code = EXIT_USAGE if response.status_code < 500 else EXIT_FAILED
    raise _Refused(code, f"{message} (HTTP {response.status_code})")


def _watch(client: httpx.Client, view: dict[str, Any], *, as_json: bool) -> dict[str, Any]:
    """Show the release, then again after every change, until it ends."""
    _print(view, as_json=as_json, refresh=True)
    while view["status"] not in _ENDED:
        seen = view["revision"]
        view = _call(
            client,
            "GET",
            f"/api/v1/releases/{view['id']}",
            params={"wait_after": seen, "wait_timeout": WAIT},
        )
        if view["revision"] != seen:
            _print(view, as_json=as_json, refresh=True)
    return view


def _print(view: dict[str, Any], *, as_json: bool, refresh: bool = False) -> None:
    if as_json:
        # One document per line while watching, so the output can be read as a stream.
        print(json.dumps(view, indent=None if refresh else 2), flush=True)
        return
    tty = sys.stdout.isatty()
    if refresh and tty:
        print("\x1b[H\x1b[2J", end="")
    print(release_table(view) + ("\n" if refresh and not tty else ""), flush=True)


def release_table(view: dict[str, Any]) -> str:
    """The release as people read it: a header, the counts, one row per item by batch."""
    c = view["counts"]
    lines = [
        f"release {view['id']}  {view['name']}  {view['status'].upper()}",
        f"rolls out {view['rollout']['description']}",
        f"{c['total']} total: {c['succeeded']} succeeded, {c['failed']} failed, "
        f"{c['skipped']} skipped, {c['cancelled']} cancelled, {c['running']} running, "
        f"{c['pending']} pending",
    ]
    if view.get("error"):
        lines.append(f"error: {view['error']}")
    rows = [("BATCH", "WORKSPACE", "STATUS", "RUN", "RUN STATUS", "ERROR")]
    for batch in view["batches"]:
        for index, item in enumerate(batch["items"]):
            label = f"{batch['batch']} {batch['status']}" if index == 0 else ""
            rows.append(
                (
                    label,
                    item["workspace"],
                    item["status"],
                    item["run_id"] or "-",
                    item["run_status"] or "-",
                    item["error"] or "",
                )
            )
    return "\n".join([*lines, "", _columns(rows)])


def _list_table(found: Sequence[dict[str, Any]]) -> str:
    rows = [("RELEASE", "NAME", "STATUS", "TOTAL", "OK", "FAILED", "SKIPPED", "CREATED")]
    for view in found:
        c = view["counts"]
        rows.append(
            (
                view["id"],
                view["name"],
                view["status"],
                str(c["total"]),
                str(c["succeeded"]),
                str(c["failed"]),
                str(c["skipped"]),
                view["timestamps"]["created_at"] or "",
            )
        )
    return _columns(rows)


def _columns(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
