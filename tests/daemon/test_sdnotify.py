"""systemd notify protocol against a real datagram socket, and the unit file."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import trio
from harness import REPO, DaemonProcess, demo_workspace, write_config

from tfward.daemon.sdnotify import Notifier


def bound_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    return sock


def received(sock: socket.socket) -> list[str]:
    found = []
    while True:
        try:
            found.append(sock.recv(4096).decode())
        except BlockingIOError:
            return found


def test_notifier_sends_fields_in_one_datagram(tmp_path: Path) -> None:
    sock = bound_socket(tmp_path / "notify")
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "2000000"})
    notifier.ready("3 workspaces")
    notifier.stopping("bye")
    assert received(sock) == ["READY=1\nSTATUS=3 workspaces", "STOPPING=1\nSTATUS=bye"]
    assert notifier.watchdog_interval == 1.0
    notifier.close()
    sock.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    notifier.ready("x")  # no error, no socket


async def test_the_daemon_says_ready_pings_the_watchdog_and_says_stopping(tmp_path: Path) -> None:
    sock = bound_socket(tmp_path / "notify")
    config = write_config(tmp_path, [demo_workspace(tmp_path)])
    daemon = DaemonProcess(
        config, env={"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}
    )
    messages: list[str] = []
    async with trio.open_nursery() as nursery:
        await daemon.start(nursery)
        with trio.fail_after(20):
            while not any("WATCHDOG=1" in m for m in messages):
                await trio.lowlevel.wait_readable(sock)
                messages += received(sock)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    messages += received(sock)
    ready = next(i for i, m in enumerate(messages) if m.startswith("READY=1"))
    assert "STATUS=" in messages[ready]
    assert ready < next(i for i, m in enumerate(messages) if m == "WATCHDOG=1")
    assert any(m.startswith("STOPPING=1") for m in messages)
    sock.close()


def test_the_unit_file_passes_systemd_analyze_verify() -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed on this machine (apt-get install systemd)")
    unit = REPO / "systemd" / "tfward.service"
    result = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True)
    # verify also complains about the binary path not existing on a build machine; anything
    # else is a real problem with the unit.
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and "/opt/tfward" not in line and "Command" not in line
    ]
    assert problems == [], problems
