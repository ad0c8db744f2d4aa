"""The `tfward` command.

    tfward serve [CONFIG]          run the daemon (default config: ./tfward.toml)
    tfward check-config CONFIG     validate a config file without starting anything

Exit codes: 0 success, 2 usage or config error.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

import trio

from tfward import __version__
from tfward.config import Config, format_duration, load_config
from tfward.daemon.service import Daemon
from tfward.errors import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tfward", description="Runs Terraform for one team.")
    parser.add_argument("--version", action="version", version=f"tfward {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("config", nargs="?", default="tfward.toml")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    check = sub.add_parser("check-config", help="validate a config file without starting")
    check.add_argument("config")
    args = parser.parse_args(argv)
    try:
        if args.command == "check-config":
            return check_config(args.config)
        return serve_command(args.config, args.log_level)
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
    for ws in config.workspaces:
        where = ws.source if ws.source else f"module {ws.module.source if ws.module else '?'}"
        print(f"  workspace {ws.name}: {where}" + (" (auto-apply)" if ws.auto_apply else ""))
    return EXIT_OK


def serve_command(path: str, level: str) -> int:
    config = load_config(path)
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    trio.run(_serve, config)
    return EXIT_OK


async def _serve(config: Config) -> None:
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
