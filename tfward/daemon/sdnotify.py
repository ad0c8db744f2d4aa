"""systemd's notify protocol: a few datagrams on the socket named by $NOTIFY_SOCKET.

`READY=1` once recovery is done and the API listens, `STATUS=...` lines with what runs (and
whether storage is degraded, and why), `EXTEND_TIMEOUT_USEC=` while the start waits for
storage, `STOPPING=1` when the shutdown starts, and `WATCHDOG=1` every half `$WATCHDOG_USEC` —
sent only while a probe says the daemon is responsive (the daemon's probe: the trio loop runs
it and the supervisor runs; storage is not asked, since a daemon waiting out a storage fault
must not be killed while terraform applies). A blocked trio loop stops the pings and systemd
restarts the daemon. Without $NOTIFY_SOCKET (not under systemd) every call is a
no-op.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable

import trio

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC", "")
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> None:
        """Send `KEY=value` fields in one datagram. Errors are logged, never raised: a missing
        systemd must not stop the daemon."""
        if self.address is None:
            return
        address = self.address
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(fields).encode(), address)
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self.address, exc)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def extend_timeout(self, seconds: float) -> None:
        """Ask systemd for `seconds` more to start or stop (waiting for storage at start)."""
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    async def watchdog(
        self, probe: Callable[[float], Awaitable[bool]], status: Callable[[], str]
    ) -> None:
        """Ping the watchdog (and refresh STATUS=) every half interval while `probe(timeout)`
        says the daemon is responsive. Runs until cancelled; without a watchdog it only
        refreshes the status every 10 s."""
        interval = self.watchdog_interval or 10.0
        last_status = ""
        while True:
            await trio.sleep(interval)
            if self.watchdog_interval is not None and await probe(interval / 2):
                self.send("WATCHDOG=1")
            current = status()
            if current != last_status:
                self.status(current)
                last_status = current

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
