"""The `tfward` command.

    tfward serve [CONFIG]          run the daemon (default config: ./tfward.toml)
    tfward check-config CONFIG     validate a config file without starting anything
        [--verify-run-tasks]       ... and send each run task its test call
        [--verify-notifications]   ... and send each notification destination its test message
    tfward release create|show|list|cancel   releases through a running daemon (cli/releases.py)
    tfward workspaces|plan|apply|destroy|runs|run|logs|confirm|discard|cancel|lock|unlock|state
    tfward token create                       the API commands (cli/commands.py)

A config error is every problem of the file, one line each (`tfward: config error: FILE: KEY:
what was expected`), and the directories the daemon must write are checked too
(daemon/preflight.py). Output closed early (`tfward runs | head -1`) ends the command quietly.

Exit codes: 0 success, 1 a run task or notification destination did not answer the test call,
2 usage or config error, or (`serve`) another daemon already uses the data dir, 141 stdout
was closed early (as if killed by SIGPIPE).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from tfward import __version__
from tfward.cli import commands as api_cli
from tfward.cli import notifications as notification_cli
from tfward.cli import releases as release_cli
from tfward.config import Config, format_duration, load_config
from tfward.daemon.preflight import storage_problems
from tfward.errors import AlreadyRunning, ConfigError
from tfward.obs import logs
from tfward.runtasks.verify import verify_run_tasks
from tfward.store.dialect import shown

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a program whose reader went away
SERVE_HELP = """Run the daemon until SIGTERM or Ctrl-C (a graceful shutdown: applies finish,
planning runs go back to the queue; a second signal stops at once). SIGHUP reloads the config.
The log goes to stdout."""


def main(argv: Sequence[str] | None = None) -> int:
    """The command; a closed stdout (piped to `head`) ends it quietly with 141."""
    try:
        code = _main(argv)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # Python would report the broken pipe once more when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PIPE


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command in api_cli.COMMANDS:
        return api_cli.run(args)
    if args.command == "release":
        return release_cli.run(args)
    try:
        if args.command == "check-config":
            code = check_config(args.config)
            if args.verify_run_tasks:
                code = max(code, verify_command(args.config))
            if args.verify_notifications:
                code = max(code, notification_cli.verify_command(args.config))
            return code
        return serve_command(args.config, args.log_level, args.log_format)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"tfward: config error: {problem.line()}", file=sys.stderr)
        if len(exc.problems) > 1:
            print(f"tfward: {len(exc.problems)} problems in {exc.file}", file=sys.stderr)
        return EXIT_USAGE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfward", description="Runs Terraform for one team.")
    parser.add_argument("--version", action="version", version=f"tfward {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    _add_check_config(sub)
    release_cli.add_parser(sub)
    api_cli.add_parsers(sub)
    return parser


def _add_serve(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the daemon", description=SERVE_HELP)
    serve.add_argument(
        "config",
        nargs="?",
        default="tfward.toml",
        metavar="CONFIG",
        help="the config file (default: ./tfward.toml)",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="the least severe level logged (default: info)",
    )
    serve.add_argument(
        "--log-format",
        default="json",
        choices=["json", "text"],
        help="the daemon's log on stdout: JSON lines (default) or text for humans",
    )


def _add_check_config(sub: Any) -> None:
    check = sub.add_parser(
        "check-config",
        help="validate a config file without starting",
        description="Read CONFIG as `tfward serve` would and report every problem, one line "
        "each, and whether the daemon could write its directories. Starts nothing.",
    )
    check.add_argument("config", metavar="CONFIG", help="the config file")
    check.add_argument(
        "--verify-run-tasks",
        action="store_true",
        help='send each run task the test call ("test-token"); exit 1 unless all answer 200',
    )
    check.add_argument(
        "--verify-notifications",
        action="store_true",
        help="send each notification destination the verification message; exit 1 unless "
        "all answer 2xx",
    )


def load_checked(path: str, *, passing: bool = True) -> Config:
    """The config at `path`, refused (ConfigError with every problem) also when the daemon
    could not write its directories; `passing=False` (serve) lets a storage fault that may
    pass through: the daemon starts and waits for storage (daemon/preflight.py)."""
    config = load_config(path)
    problems = storage_problems(config, passing=passing)
    if problems:
        raise ConfigError.collected(problems)
    return config


def check_config(path: str) -> int:
    config = load_checked(path)
    tf = config.terraform
    if not config.workspaces:
        print(f"tfward: warning: {_NO_WORKSPACE.format(path=path)}", file=sys.stderr)
    print(f"{path}: ok")
    print(
        f"  listen {config.daemon.listen_host}:{config.daemon.listen_port}, "
        f"data in {config.daemon.data_dir}, {config.daemon.max_concurrent_runs} concurrent runs"
    )
    # load_checked has connected to a PostgreSQL database already (daemon/preflight.py).
    print(f"  database {shown(config.daemon.database_url)}: ok, node {config.daemon.node_id}")
    print(
        f"  terraform {tf.binary}; timeouts init {format_duration(tf.init_timeout)}, "
        f"plan {format_duration(tf.plan_timeout)}, apply {format_duration(tf.apply_timeout)}"
    )
    tokens = [f"{t.name} ({t.role})" for t in config.api_tokens]
    print(
        "  API tokens: "
        + (
            ", ".join(tokens)
            or f"none configured: the local admin token {config.daemon.data_dir / 'admin.token'}"
        )
    )
    for ws in config.workspaces:
        where = ws.source if ws.source else f"module {ws.module.source if ws.module else '?'}"
        pinned = f", terraform {ws.terraform_binary}" if ws.terraform_binary != tf.binary else ""
        print(
            f"  workspace {ws.name}: {where}{pinned}" + (" (auto-apply)" if ws.auto_apply else "")
        )
    return EXIT_OK


def verify_command(path: str) -> int:
    """Send every run task its verification call; exit 1 if any did not answer 200."""
    config = load_config(path)
    if not config.run_tasks:
        print("  no run tasks to verify")
        return EXIT_OK
    found = trio.run(verify_run_tasks, config)
    for name, delivery in found.items():
        print(f"  run task {name}: " + ("200 ok" if delivery.delivered else f"{delivery.reason}"))
    return EXIT_OK if all(d.delivered for d in found.values()) else EXIT_FAILED


_NO_WORKSPACE = (
    "{path} defines no [[workspace]]: the daemon would have nothing to run "
    "(README: Configuration)"
)


def serve_command(path: str, level: str, log_format: str = "json") -> int:
    """Run the daemon until it is stopped. Every file and directory it (and terraform under
    it) creates is its user's alone: the umask is 0o077 (docs/architecture.md §9). A data dir
    another daemon holds is one line on stderr and exit 2, before anything is touched; a
    ConfigError raised while it starts (a directory that became unwritable after the check)
    comes out of trio's exception groups as itself."""
    os.umask(0o077)
    config = load_checked(path, passing=False)
    logs.setup(level, log_format)
    if not config.workspaces:
        logging.getLogger("tfward").warning(_NO_WORKSPACE.format(path=path))
    try:
        trio.run(_serve, config)
    except BaseExceptionGroup as group:
        running, rest = group.split(AlreadyRunning)
        if running is not None and rest is None:
            print(f"tfward: {_leaf(running)}", file=sys.stderr)
            return EXIT_USAGE
        found, rest = group.split(ConfigError)
        if found is None or rest is not None:
            raise
        raise _leaf(found) from None
    return EXIT_OK


def _leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first exception inside a (nested) exception group: trio's nurseries wrap each."""
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


async def _serve(config: Config) -> None:
    from tfward.daemon.service import Daemon  # here: the API commands start without its ~1 s

    daemon = Daemon(config)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_signals, daemon)
        async with trio.open_nursery() as serving:
            await serving.start(daemon.serve)
            _settle_heap()
        nursery.cancel_scope.cancel()


def _settle_heap() -> None:
    """Once the daemon has started: what start-up left (modules, tables, compiled statements,
    the config) moves out of the garbage collector's way (`gc.freeze`). A full collection
    walked all of it — up to 0.1 s with the loop stopped, the tail of every latency
    (bench/queue_latency.py) — and it stays alive for the daemon's life anyway. Garbage made
    later is collected as before."""
    gc.collect()
    gc.freeze()


async def _signals(daemon: Daemon) -> None:
    """SIGTERM/SIGINT: graceful shutdown; the second one: hard stop. SIGHUP: reload config."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                logging.getLogger("tfward").info("SIGHUP: reloading the config")
                await daemon.reload()
                continue
            if daemon.stopping:
                logging.getLogger("tfward").warning(
                    "second %s: stopping now", signal.Signals(signum).name
                )
                daemon.hard_stop()
            else:
                logging.getLogger("tfward").info("%s: shutting down", signal.Signals(signum).name)
                daemon.request_shutdown(f"received {signal.Signals(signum).name}")


if __name__ == "__main__":
    sys.exit(main())
