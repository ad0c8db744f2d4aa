"""The `tfward` command.

    tfward serve [CONFIG]          run the daemon (default config: ./tfward.toml)
    tfward check-config CONFIG     validate a config file without starting anything
        [--verify-run-tasks]       ... and send each run task its test call
        [--verify-notifications]   ... and send each notification destination its test message
    tfward release create|show|list|cancel   releases through a running daemon (cli/releases.py)
    tfward workspaces|plan|apply|destroy|runs|run|logs|confirm|discard|cancel|lock|unlock|state
    tfward token create                       the API commands (cli/commands.py)

Exit codes: 0 success, 1 a run task or notification destination did not answer the test call,
2 usage or config error.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from tfward import __version__
from tfward.cli import commands as api_cli
from tfward.cli import notifications as notification_cli
from tfward.cli import releases as release_cli
from tfward.config import Config, format_duration, load_config
from tfward.errors import ConfigError
from tfward.obs import logs
from tfward.runtasks.verify import verify_run_tasks

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tfward", description="Runs Terraform for one team.")
    parser.add_argument("--version", action="version", version=f"tfward {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("config", nargs="?", default="tfward.toml")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--log-format",
        default="json",
        choices=["json", "text"],
        help="the daemon's log on stdout: JSON lines (default) or text for humans",
    )
    check = sub.add_parser("check-config", help="validate a config file without starting")
    check.add_argument("config")
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
    release_cli.add_parser(sub)
    api_cli.add_parsers(sub)
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
        print(f"tfward: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def check_config(path: str) -> int:
    config = load_config(path)
    tf = config.terraform
    print(f"{path}: ok")
    print(
        f"  listen {config.daemon.listen_host}:{config.daemon.listen_port}, "
        f"data in {config.daemon.data_dir}, {config.daemon.max_concurrent_runs} concurrent runs"
    )
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


def serve_command(path: str, level: str, log_format: str = "json") -> int:
    config = load_config(path)
    logs.setup(level, log_format)
    trio.run(_serve, config)
    return EXIT_OK


async def _serve(config: Config) -> None:
    from tfward.daemon.service import Daemon  # here: the API commands start without its ~1 s

    daemon = Daemon(config)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_signals, daemon)
        await daemon.serve()
        nursery.cancel_scope.cancel()


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
