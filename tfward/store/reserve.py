"""The disk reserve and the storage watcher (docs/architecture.md §10).

A full disk is the one storage fault terraform itself does not survive: terraform 1.0 rewrites
its state file after every resource, and when that write fails it halts the apply and leaves a
truncated state file behind (measured on a filled tmpfs). So the daemon keeps some of the data
dir's disk set aside in a file, `<data_dir>/storage.reserve` (`[daemon] disk_reserve_mb`). The
watcher looks at the free space every WATCH_INTERVAL; when it drops under LOW_WATER, or a write
fails because the disk is full, the reserve is deleted at once — that space is for the
terraform processes in flight — and storage is held degraded: the daemon itself writes nothing
more (database writes wait, the API answers 503) so the space stays theirs. Once the disk has
room for the reserve again, with LOW_WATER to spare twice over, the reserve is made again and
writes resume.

While the database fails for any other reason (read-only, locked, I/O errors) the watcher
probes it with a small write, with backoff, so a daemon with nothing else to write also learns
that storage is back.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import trio

from tfward.errors import StorageUnavailable
from tfward.ids import now

from .db import Store
from .health import Backoff, Degraded, Problem

log = logging.getLogger(__name__)

WATCH_INTERVAL = 0.1
LOW_WATER = 1 << 20
RESERVE_FILE = "storage.reserve"


class DiskReserve:
    """`size` bytes of the disk of `directory`, held in one preallocated file."""

    def __init__(self, directory: Path, size: int) -> None:
        self.path = directory / RESERVE_FILE
        self.size = size

    def free(self) -> int:
        """Bytes an unprivileged process may still write there."""
        st = os.statvfs(self.path.parent)
        return st.f_bavail * st.f_frsize

    def present(self) -> bool:
        try:
            return self.path.stat().st_blocks * 512 >= self.size
        except FileNotFoundError:
            return False

    def make(self) -> bool:
        """Create the reserve if it is missing and the disk has room for it and LOW_WATER
        twice over; returns whether it is in place."""
        if self.size <= 0 or self.present():
            return True
        if self.free() < self.size + 2 * LOW_WATER:
            return False
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.posix_fallocate(fd, 0, self.size)
        except OSError:
            self.path.unlink(missing_ok=True)
            return False
        finally:
            os.close(fd)
        return True

    def release(self) -> bool:
        """Delete the reserve (its space goes back to the disk); whether there was one."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True


class StorageWatcher:
    """Started by the daemon before anything touches storage; runs until cancelled."""

    def __init__(self, store: Store, data_dir: Path, reserve_bytes: int) -> None:
        self.store = store
        self.reserve = DiskReserve(data_dir, reserve_bytes)
        self.released = False  # the reserve was given up for a full disk
        self._look_now = trio.Event()
        self._probe_at = 0.0
        self._probes = Backoff(first=0.5)
        store.health.on_disk_full = self.disk_full
        store.health.check_disk = self.check_now

    def disk_full(self) -> None:
        """A write failed because the disk is full: look at once (the reserve goes now)."""
        self._look_now.set()

    def check_now(self) -> None:
        """Look at the free space now (synchronously: one statvfs); a full disk frees the
        reserve and holds storage at once (`health.disk_ready` before terraform starts)."""
        try:
            free = self.reserve.free()
        except OSError:
            return  # the watcher's next look says so
        if free < LOW_WATER:
            self._full(free, self.reserve.release())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Make the reserve, then watch the disk and probe a failing database. Never ends by
        itself; cancellation ends it (the reserve file stays for the next start). A failing
        look (the data dir unreadable) is a storage fault like any other."""
        try:
            if not await trio.to_thread.run_sync(self.reserve.make):
                log.warning(
                    "storage: no room for the %d MB disk reserve in %s yet",
                    self.reserve.size >> 20,
                    self.reserve.path.parent,
                )
        except OSError as exc:
            log.warning("storage: cannot make the disk reserve: %s", exc)
        task_status.started()
        while True:
            full = self._look_now.is_set()
            self._look_now = trio.Event()
            await self._look(full)
            with trio.move_on_after(WATCH_INTERVAL):
                await self._look_now.wait()

    async def _look(self, reported_full: bool) -> None:
        health = self.store.health
        try:
            free = await trio.to_thread.run_sync(self.reserve.free)
        except OSError as exc:
            health.hold(Degraded(Problem.UNAVAILABLE, f"data dir: {exc}", now()))
            return
        if reported_full or free < LOW_WATER:
            await self._disk_full(free)
        elif health.held is not None and health.held.problem is Problem.DISK_FULL:
            await self._maybe_resume(free)
        elif health.held is not None:  # the data dir answered again
            health.release()
        if health.current is not None and health.held is None:
            await self._probe()

    async def _disk_full(self, free: int) -> None:
        self._full(free, await trio.to_thread.run_sync(self.reserve.release))

    def _full(self, free: int, released: bool) -> None:
        self.released = self.released or released
        reason = f"the disk of {self.reserve.path.parent} is full ({free >> 10} KB free)"
        if released:
            reason += f"; its {self.reserve.size >> 20} MB reserve was freed for terraform"
            log.warning("storage: %s", reason)
        self.store.health.hold(Degraded(Problem.DISK_FULL, reason, now()))

    async def _maybe_resume(self, free: int) -> None:
        needed = (self.reserve.size if self.released else 0) + 2 * LOW_WATER
        if free < needed:
            return
        try:
            made = await trio.to_thread.run_sync(self.reserve.make)
        except OSError as exc:
            log.warning("storage: cannot make the disk reserve again: %s", exc)
            return
        if made or not self.released:
            self.released = False
            self.store.health.release()

    async def _probe(self) -> None:
        if trio.current_time() < self._probe_at:
            return
        try:
            await self.store.probe()
        except StorageUnavailable:
            self._probe_at = trio.current_time() + self._probes.next()
        else:
            self._probes.reset()
