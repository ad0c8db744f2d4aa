"""The `tfward` commands that talk to a running daemon, plus `token create`: their arguments
and the dispatch that turns every failure into an exit code and a message on stderr.

    tfward workspaces [show WORKSPACE]   tfward lock WORKSPACE [--reason R], unlock WORKSPACE
    tfward plan|apply|destroy WORKSPACE  tfward runs [WORKSPACE], run show RUN_ID, logs RUN_ID
    tfward confirm|discard RUN_ID, cancel RUN_ID [--force]
    tfward state list WORKSPACE | show SV_ID | download SV_ID [-o FILE] | rollback WORKSPACE SV_ID
    tfward state pull WORKSPACE [-o FILE] | push WORKSPACE FILE [--lock-id ID]
    tfward state decrypt FILE [-o OUT] [--config CONFIG]   (local: a sealed state backup)
    tfward audit [--action A] [--limit N]     what admins did
    tfward token create --name N --role read|plan|apply|admin

Positional arguments are named the same in every command: WORKSPACE, RUN_ID, SV_ID (and
REL_ID for `tfward release`), each added by one of the helpers below.

Exit codes: 0 success, 1 the run failed (or applied_state_error), 2 usage or config error or a
request the daemon refused, 3 the run was cancelled or discarded, 4 the daemon is unreachable,
130 interrupted (Ctrl-C; a followed run goes on).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from . import audit, runs, state, tokens, workspaces
from .client import DEFAULT_URL, EXIT_INTERRUPTED, CliError, Settings, resolve

COMMANDS = frozenset(
    {
        "workspaces",
        "plan",
        "apply",
        "destroy",
        "runs",
        "run",
        "logs",
        "confirm",
        "discard",
        "cancel",
        "lock",
        "unlock",
        "state",
        "audit",
        "token",
    }
)
Handler = Callable[[argparse.Namespace, Settings], int]


def workspace_arg(parser: argparse.ArgumentParser, **extra: Any) -> None:
    parser.add_argument("name", metavar="WORKSPACE", help="a workspace name", **extra)


def run_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_id", metavar="RUN_ID", help="a run id (run-...)")


def state_version_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sv_id", metavar="SV_ID", help="a state version id (sv-...)")


def common_options() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """Options every API command takes, after the command name. Defaults are SUPPRESSed so a
    nested subcommand does not overwrite what its parent parsed (argparse's defaults do)."""
    conn = argparse.ArgumentParser(add_help=False)
    group = conn.add_argument_group("connection")
    group.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help=f"the daemon's API (default: $TFWARD_URL, else {DEFAULT_URL})",
    )
    group.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help="API token (default: $TFWARD_TOKEN, else <data_dir>/admin.token of the config)",
    )
    group.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="config whose data_dir holds admin.token (default: $TFWARD_CONFIG, "
        "./tfward.toml, examples/tfward.toml)",
    )
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the API's JSON"
    )
    return conn, out


def add_parsers(sub: Any) -> None:
    """Add the commands to the `tfward` command's subparsers."""
    conn, out = common_options()
    both = [conn, out]

    def command(name: str, handler: Handler, help: str, parents: list[Any]) -> Any:
        parser = sub.add_parser(name, parents=parents, help=help, description=help)
        parser.set_defaults(handler=handler)
        return parser

    ws = command("workspaces", workspaces.list_workspaces, "list workspaces", both)
    ws_sub = ws.add_subparsers(dest="ws_command", required=False)
    workspace_arg(ws_sub.add_parser("show", parents=both, help="one workspace"))

    for name, what in (
        ("plan", "a speculative plan"),
        ("apply", "plan, confirm, apply"),
        ("destroy", "plan a destroy, confirm, apply"),
    ):
        p = command(name, runs.start, f"{what} of a workspace, followed live", [conn])
        workspace_arg(p)
        p.add_argument("-m", "--message", default="", help="a note stored on the run")
        p.add_argument("--target", action="append", metavar="ADDR", help="terraform -target")
        if name != "plan":
            p.add_argument("--auto-approve", action="store_true", help="confirm without asking")
        if name == "apply":
            p.add_argument("--replace", action="append", metavar="ADDR", help="terraform -replace")
        if name != "destroy":
            p.add_argument(
                "--configuration-version",
                metavar="CV",
                help="run this older configuration version of the workspace (`cv-...`) "
                "instead of a new snapshot of its source",
            )

    p = command("runs", runs.list_runs, "list runs, newest first", both)
    p.add_argument(
        "name", nargs="?", metavar="WORKSPACE", help="a workspace name (default: all of them)"
    )
    p.add_argument("--limit", type=int, default=20, help="at most this many (1 to 1000)")
    p = command("run", runs.show_run, "show a run (`run show RUN_ID`)", both)
    p.add_argument("verb", choices=["show"], help="what to do with the run")
    run_arg(p)
    p = command("logs", runs.logs, "a run's log", [conn])
    run_arg(p)
    p.add_argument("-f", "--follow", action="store_true", help="follow until the run ends")
    for name, what in (
        ("confirm", "apply a run's plan"),
        ("discard", "throw a run's plan away"),
        ("cancel", "stop a run"),
    ):
        p = command(name, runs.action, what, both)
        run_arg(p)
        if name == "cancel":
            p.add_argument(
                "--force", action="store_true", help="kill terraform now (after a cancel)"
            )

    p = command("lock", workspaces.lock, "lock a workspace: no new runs start", both)
    workspace_arg(p)
    p.add_argument("--reason", default="", help="why, shown with the lock")
    p = command("unlock", workspaces.lock, "unlock a workspace", both)
    workspace_arg(p)
    p.add_argument("--force", action="store_true", help="also a lock someone else holds")

    st = command("state", state.state, "state versions", [])
    st_sub = st.add_subparsers(dest="state_command", required=True)
    workspace_arg(st_sub.add_parser("list", parents=both, help="a workspace's versions"))
    state_version_arg(st_sub.add_parser("show", parents=both, help="one version"))
    p = st_sub.add_parser("download", parents=[conn], help="the raw state file")
    state_version_arg(p)
    p.add_argument("-o", "--output", metavar="FILE", help="default: stdout")
    p = st_sub.add_parser("rollback", parents=both, help="make an old version current again")
    workspace_arg(p)
    state_version_arg(p)
    p = st_sub.add_parser("pull", parents=[conn], help="the current state file (http backend)")
    workspace_arg(p)
    p.add_argument("-o", "--output", metavar="FILE", help="default: stdout")
    p = st_sub.add_parser(
        "push", parents=both, help="store a state file as the new version (serial, lineage, lock)"
    )
    workspace_arg(p)
    p.add_argument("file", metavar="FILE", help="a terraform state file")
    p.add_argument("--lock-id", metavar="ID", help="the terraform lock ID you hold the lock with")
    p = st_sub.add_parser(
        "decrypt",
        help="a sealed state backup (<data_dir>/state-backups/) in plain text; needs no daemon",
    )
    p.add_argument("file", metavar="FILE", help="a sealed state backup file")
    p.add_argument("-o", "--output", metavar="OUT", help="default: stdout (a file is 0600)")
    p.add_argument(
        "--config", default=None, metavar="CONFIG", help="the daemon's config, for its secret "
        "key (default: $TFWARD_CONFIG, else ./tfward.toml or examples/tfward.toml)"
    )

    p = command("audit", audit.list_events, "what admins did, newest first (role admin)", both)
    # The daemon checks the name (and lists the actions when it is wrong): the CLI stays
    # free of the store's imports.
    p.add_argument("--action", help="only this action, e.g. force_unlock, state_download")
    p.add_argument("--limit", type=int, default=50, help="at most this many (1 to 1000)")

    tok = sub.add_parser(
        "token",
        help="API tokens (made locally)",
        description="Make API tokens for the config's [[api_token]] entries; no daemon needed.",
    )
    tok_sub = tok.add_subparsers(dest="token_command", required=True)
    p = tok_sub.add_parser("create", parents=[out], help="a new token and its config entry")
    p.add_argument("--name", required=True, help="recorded on what the token's holder does")
    p.add_argument("--role", required=True, choices=tokens.ROLES, help="what it may do")
    p.set_defaults(handler=None)


def run(args: argparse.Namespace) -> int:
    """Run a parsed command; a `CliError` becomes its message on stderr and its exit code."""
    try:
        if args.command == "token":
            return tokens.create(args)
        if args.command == "state" and args.state_command == "decrypt":
            return state.decrypt(args)
        settings = resolve(
            getattr(args, "url", None), getattr(args, "token", None), getattr(args, "config", None)
        )
        handler: Handler = args.handler
        return handler(args, settings)
    except CliError as exc:
        print(f"tfward: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
