"""Run commands: `plan`, `apply`, `destroy` (created, then followed live), `runs`, `run show`,
`logs`, `confirm`, `discard`, `cancel`.

A followed run ends the command with the run's outcome as the exit code: 0 applied or planned,
1 failed or applied_state_error, 3 cancelled or discarded. On `apply_pending` the user is asked
when stdin is a TTY; otherwise the command says how to confirm and exits 0, leaving the run
waiting. Ctrl-C stops following and leaves the run alone.
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Any

import trio

from .client import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STOPPED,
    Api,
    CliError,
    Settings,
)
from .follow import follow, is_terminal, needs_decision
from .render import Progress, ago, as_json, changes, fields, outcome, run_duration, table, where

OPERATIONS = {"plan": "plan", "apply": "plan_and_apply", "destroy": "destroy"}
_EXIT = {
    "applied": EXIT_OK,
    "planned_and_finished": EXIT_OK,
    "apply_pending": EXIT_OK,
    "failed": EXIT_FAILED,
    "applied_state_error": EXIT_FAILED,
    "cancelled": EXIT_STOPPED,
    "force_cancelled": EXIT_STOPPED,
    "discarded": EXIT_STOPPED,
}


def exit_code(run: dict[str, Any]) -> int:
    return _EXIT.get(run["status"], EXIT_OK)


def start(args: argparse.Namespace, settings: Settings) -> int:
    """`plan` / `apply` / `destroy NAME`: create the run, then follow it to its end."""
    body: dict[str, Any] = {"operation": OPERATIONS[args.command]}
    if args.message:
        body["message"] = args.message
    if args.target:
        body["targets"] = args.target
    if getattr(args, "replace", None):  # only `apply` has --replace
        body["replace"] = args.replace
    if getattr(args, "configuration_version", None):  # not `destroy`
        body["configuration_version_id"] = args.configuration_version
    with Api(settings) as api:
        run = api.post(f"/api/v1/workspaces/{args.name}/runs", body)
    progress = Progress(run["id"])
    progress.message(f"tfward: run {run['id']}: {run['operation']} of workspace {args.name}")
    return live(settings, run, progress, auto_approve=getattr(args, "auto_approve", False))


def live(settings: Settings, run: dict[str, Any], progress: Progress, *, auto_approve: bool) -> int:
    """Follow the run; confirm or discard it when it waits (asking on a TTY). After a discard
    it is followed to its end without asking again; after a confirm it may be asked again
    only if the run was planned again (a lost or stale plan)."""
    shown, discarded = 0, False
    try:
        while True:
            run, shown = trio.run(
                functools.partial(
                    follow,
                    settings,
                    run["id"],
                    progress,
                    skip=shown,
                    stop_for_decision=not discarded,
                )
            )
            if discarded or not needs_decision(run):
                break
            decision = "confirm" if auto_approve else _ask(run, progress)
            if decision is None:
                progress.message(_waiting_hint(run["id"]))
                return EXIT_OK
            with Api(settings) as api:
                run = api.post(f"/api/v1/runs/{run['id']}/actions/{decision}")
            discarded = decision == "discard"
            progress.message(
                f"tfward: {'confirmed, applying' if decision == 'confirm' else 'discarding'}"
            )
    except KeyboardInterrupt:
        progress.clear()
        progress.message(_interrupted_hint(_fresh(settings, run)))
        return EXIT_INTERRUPTED
    progress.message(f"tfward: {outcome(run)}")
    return exit_code(run)


def _fresh(settings: Settings, run: dict[str, Any]) -> dict[str, Any]:
    """The run as it is now, for the parting hint; the last view if the daemon is slow."""
    try:
        with Api(settings, timeout=2.0) as api:
            return api.run(run["id"])
    except CliError:
        return run


def _ask(run: dict[str, Any], progress: Progress) -> str | None:
    """`confirm`, `discard`, or None when nobody can answer (stdin not a TTY, or closed)."""
    if not sys.stdin.isatty():
        return None
    question = "Destroy these resources" if run["operation"] == "destroy" else "Apply these changes"
    while True:
        progress.err.write(f"\n{question}? [yes/no]: ")
        progress.err.flush()
        line = sys.stdin.readline()
        if not line:
            progress.err.write("\n")
            return None
        answer = line.strip().lower()
        if answer in ("yes", "no"):
            return "confirm" if answer == "yes" else "discard"
        progress.err.write("Please answer yes or no.")


def _waiting_hint(run_id: str) -> str:
    return (
        f"tfward: run {run_id} waits for confirmation: apply it with `tfward confirm {run_id}`, "
        f"or throw the plan away with `tfward discard {run_id}`"
    )


def _interrupted_hint(run: dict[str, Any]) -> str:
    run_id = run["id"]
    if needs_decision(run):
        return f"\ntfward: stopped; {_waiting_hint(run_id).removeprefix('tfward: ')}"
    if is_terminal(run):
        return f"\ntfward: stopped following; {outcome(run)}"
    text = f"\ntfward: stopped following; run {run_id} goes on ({where(run)})"
    if not (run["is_speculative"] or run["auto_apply"] or run["timestamps"]["confirmed_at"]):
        text += f" and will wait for `tfward confirm {run_id}`"
    return (
        f"{text}. Follow it again with `tfward logs -f {run_id}`, "
        f"cancel it with `tfward cancel {run_id}`"
    )


def list_runs(args: argparse.Namespace, settings: Settings) -> int:
    """`runs [NAME]`: newest first; without NAME across all workspaces."""
    with Api(settings) as api:
        if args.name:
            found = api.get(f"/api/v1/workspaces/{args.name}/runs", limit=args.limit)
        else:
            found = []
            for ws in api.get("/api/v1/workspaces"):
                found += api.get(f"/api/v1/workspaces/{ws['name']}/runs", limit=args.limit)
            found.sort(key=lambda r: r["timestamps"]["created_at"], reverse=True)
            found = found[: args.limit]
    if getattr(args, "json", False):
        print(as_json(found))
        return EXIT_OK
    rows = [
        (
            r["id"],
            r["workspace"],
            r["operation"],
            where(r),
            changes(r),
            ago(r["timestamps"]["created_at"]),
            run_duration(r),
            r["created_by"],
        )
        for r in found
    ]
    headers = ("RUN", "WORKSPACE", "OPERATION", "STATUS", "CHANGES", "CREATED", "TOOK", "BY")
    print(table(headers, rows) if rows else "no runs")
    return EXIT_OK


def show_run(args: argparse.Namespace, settings: Settings) -> int:
    with Api(settings) as api:
        run = api.run(args.run_id)
    if getattr(args, "json", False):
        print(as_json(run))
        return EXIT_OK
    ts = run["timestamps"]
    discarded = ts.get("discard_requested_at")
    print(
        fields(
            [
                ("run", run["id"]),
                ("workspace", run["workspace"]),
                ("operation", run["operation"] + (" (auto-apply)" if run["auto_apply"] else "")),
                ("status", where(run)),
                ("message", run["message"] or None),
                ("changes", changes(run)),
                ("config", configuration(run)),
                _ending(run),
                ("created", f"{ts['created_at']} by {run['created_by'] or '-'}"),
                (
                    "confirmed",
                    ts["confirmed_at"] and f"{ts['confirmed_at']} by {run['confirmed_by']}",
                ),
                (
                    "discarded",
                    discarded and f"{discarded} by {run.get('discard_requested_by') or '-'}",
                ),
                (
                    "plan expires",
                    ts["plan_expires_at"] if run["status"] == "apply_pending" else None,
                ),
                ("finished", ts["finished_at"]),
                ("took", run_duration(run)),
                ("targets", ", ".join(run["targets"]) or None),
                ("replace", ", ".join(run["replace"]) or None),
                ("plan hash", run["plan_hash"]),
                ("warnings", "; ".join(run["warnings"]) or None),
                ("actions", ", ".join(run["actions"]) or "none"),
            ]
        )
    )
    return EXIT_OK


def configuration(run: dict[str, Any]) -> str | None:
    """`cv-... (sha256 0123456789ab)`, and whether it was chosen rather than snapshotted."""
    if not run["configuration_version_id"]:
        return None
    sha = run["configuration_sha256"]
    text = str(run["configuration_version_id"]) + (f" (sha256 {sha[:12]})" if sha else "")
    return text + (", chosen for this run" if run["configuration_pinned"] else "")


def _ending(run: dict[str, Any]) -> tuple[str, str | None]:
    """`error: apply (transient): ...` for a failure, with its error class when known; for a
    run stopped on purpose (cancel, discard, plan expiry), `reason: ...`. Never the label
    twice."""
    message = run["error_message"]
    if not message:
        return "error", None
    if run["error_kind"]:
        kind = run["error_kind"] + (f" ({run['error_class']})" if run["error_class"] else "")
        return "error", f"{kind}: {message}"
    stopped = run["status"] in ("cancelled", "force_cancelled", "discarded")
    return ("reason" if stopped else "error"), message


def logs(args: argparse.Namespace, settings: Settings) -> int:
    """`logs ID`: the log as stored now. `-f`: follow it until the run ends; the exit code is
    then the run's (0, 1 failed, 3 cancelled or discarded)."""
    if not args.follow:
        sys.stdout.flush()
        with Api(settings) as api:
            api.download(f"/api/v1/runs/{args.run_id}/logs", sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return EXIT_OK
    progress = Progress(args.run_id)
    try:
        run, _ = trio.run(
            functools.partial(follow, settings, args.run_id, progress, stop_for_decision=False)
        )
    except KeyboardInterrupt:
        progress.clear()
        return EXIT_INTERRUPTED
    progress.message(f"tfward: {outcome(run)}")
    return exit_code(run)


def action(args: argparse.Namespace, settings: Settings) -> int:
    """`confirm`, `discard`, `cancel [--force]` ID."""
    name = "force-cancel" if args.command == "cancel" and args.force else args.command
    with Api(settings) as api:
        run = api.post(f"/api/v1/runs/{args.run_id}/actions/{name}")
    if getattr(args, "json", False):
        print(as_json(run))
        return EXIT_OK
    rid = run["id"]
    if name == "confirm":
        text = f"run {rid} confirmed: it applies now; follow it with `tfward logs -f {rid}`"
    elif name == "discard":
        text = f"run {rid}: discarded; its plan will not be applied"
    elif is_terminal(run):
        text = f"run {rid}: {run['status']}"
    elif name == "force-cancel":
        text = f"run {rid}: force-cancel requested ({run['status']}): terraform is killed now"
    else:
        text = f"run {rid}: cancel requested ({run['status']})"
        text += f"; if it does not stop, `tfward cancel --force {rid}` kills terraform"
    print(text)
    return EXIT_OK
