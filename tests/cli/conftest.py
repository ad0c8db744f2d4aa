"""The `tfward` command against a real daemon on loopback.

`Cli(daemon)` runs the command the ways a user does: `await cli(...)` calls `main(argv)` in a
worker thread (stdin is not a TTY there), `cli.converse(...)` runs `python -m tfward.cli.main`
on a pseudo-terminal and answers its prompt, `cli.spawn(...)` starts it as a plain process.
Every call names the daemon with `--url` and its config with `--config` (for `admin.token`), and
the environment's `TFWARD_*` variables are removed so the developer's own settings never leak in.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from harness import REPO

from tfward.cli.main import main
from tfward.daemon.service import Daemon

ENV_VARS = ("TFWARD_URL", "TFWARD_TOKEN", "TFWARD_CONFIG")


@dataclass
class Result:
    code: int
    out: str
    err: str


def clean_env() -> dict[str, str]:
    """The environment without tfward's variables; `python -m tfward...` imports the package of
    this checkout (not whatever the virtualenv's editable install points at) from any cwd."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def call_main(argv: list[str]) -> Result:
    """`main(argv)` with stdout/stderr captured; argparse's SystemExit becomes the code."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    err = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    raw = out.buffer.getvalue()  # type: ignore[attr-defined]
    return Result(code, raw.decode("utf-8", "replace"), err.getvalue())


class Cli:
    def __init__(self, daemon: Daemon) -> None:
        self.url = daemon.addresses[0]
        self.config = str(daemon.config.path)
        self.cwd = daemon.config.path.parent

    def argv(self, args: tuple[str, ...]) -> list[str]:
        return [*args, "--url", self.url, "--config", self.config]

    async def __call__(self, *args: str) -> Result:
        return await trio.to_thread.run_sync(call_main, self.argv(args))

    async def converse(self, *args: str, answer: bytes, limit: float = 120) -> Result:
        """Run on a pseudo-terminal (stdin, stdout and stderr); type `answer` at the prompt."""
        return await trio.to_thread.run_sync(_converse, self.argv(args), answer, self.cwd, limit)

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "tfward.cli.main", *self.argv(args)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.cwd,
            env=clean_env(),
        )


def _converse(argv: list[str], answer: bytes, cwd: Path, timeout: float) -> Result:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfward.cli.main", *argv],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=cwd,
        env=clean_env(),
    )
    os.close(slave)
    transcript = bytearray()
    answered = False
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([master], [], [], left)[0]:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal (it exited)
                break
            transcript += data
            if not answered and b"[yes/no]: " in transcript:
                os.write(master, answer)
                answered = True
        else:
            raise AssertionError(f"no exit within {timeout}s:\n{transcript.decode()[-3000:]}")
        code = proc.wait(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return Result(code, transcript.decode("utf-8", "replace"), "")


@pytest.fixture(autouse=True)
def _no_tfward_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@contextlib.contextmanager
def serving(handler: Any) -> Iterator[str]:
    """A plain HTTP server on loopback in a thread (a stand-in daemon); yields its URL."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="fake-daemon")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@pytest.fixture
def tfward() -> type[Cli]:
    """`tfward(daemon)` -> the command, pointed at that daemon."""
    return Cli


@pytest.fixture
def fake_daemon() -> Any:
    """`with fake_daemon(Handler) as url:` a stand-in HTTP server, for what the real daemon
    cannot show (which headers arrived, a 401)."""
    return serving


@pytest.fixture
def run_main() -> Any:
    """`await run_main([...])`: the command with exactly these arguments (no --url/--config)."""

    async def call(argv: list[str]) -> Result:
        return await trio.to_thread.run_sync(call_main, argv)

    return call
