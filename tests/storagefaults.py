"""Real storage faults for tests (docs/architecture.md §10): nothing here is a mock.

- `ReadOnlyDatabase`: `chattr +i` on the SQLite file and its `-wal` (the kernel refuses every
  write to them, root included). The `-shm` is left alone: SQLite maps it into memory, and a
  write to a mapped immutable file is SIGBUS, which no process survives (README, "Storage
  faults"). Needs root and a filesystem with the immutable flag (ext4 `/tmp` here; not tmpfs).
- `HeldWriteLock`: another process holds `BEGIN EXCLUSIVE` on the database.
- `FullDisk`: a file fills the filesystem (a small tmpfs, `tmpfs()`) to the last byte.
- `tmpfs(path, size)`: mounts one (root only).

Each fault has `start()` / `stop()` (a held-for helper runs it for a while in the background)
and is a context manager. Tests that need root say so: without root they fail with one line
saying so when `$CI` is set, and are skipped otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest
import trio


def require_root(what: str) -> None:
    """Fail (under CI, which runs as root) or skip (elsewhere) when not root."""
    if os.geteuid() == 0:
        return
    message = f"needs root: {what}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class Fault(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...


def _chattr(flag: str, paths: list[Path]) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


class ReadOnlyDatabase:
    """`chattr +i` on the database file and its `-wal`."""

    name = "read_only"

    def __init__(self, db: Path) -> None:
        require_root("chattr +i makes the database read-only")
        self.paths = [db, db.with_name(db.name + "-wal")]
        self.active = False

    def start(self) -> None:
        for path in self.paths:
            path.touch(exist_ok=True)
        _chattr("+i", self.paths)
        self.active = True

    def stop(self) -> None:
        if self.active:
            _chattr("-i", self.paths)
            self.active = False

    def __enter__(self) -> ReadOnlyDatabase:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()  # until the test closes our stdin
conn.execute("ROLLBACK")
"""


class HeldWriteLock:
    """Another process holding the database's write lock (`BEGIN EXCLUSIVE`)."""

    name = "locked"

    def __init__(self, db: Path) -> None:
        self.db = db
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(self.db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # a test helper: blocks until the lock is held
        assert line == b"locked\n", line

    def stop(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.close()
            self.proc.wait(30)
            self.proc.stdout.close()
            self.proc = None

    def __enter__(self) -> HeldWriteLock:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FullDisk:
    """A file that takes every free byte of the filesystem holding `directory`."""

    name = "disk_full"

    def __init__(self, directory: Path) -> None:
        self.path = directory / "disk-filler"

    def start(self) -> None:
        block = b"\0" * (1 << 20)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            size = len(block)
            while size:
                try:
                    os.write(fd, block[:size])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    size //= 2  # the last pieces, down to one byte
        finally:
            os.close(fd)

    def stop(self) -> None:
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> FullDisk:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of `size_mb` MB mounted at `path` for the block (root only)."""
    require_root("mount -t tmpfs gives a disk that can fill up")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


async def hold(fault: Fault, seconds: float) -> None:
    """Start `fault` (in a worker thread: some block briefly), keep it `seconds`, stop it.
    Stopped on every path, cancellation included."""
    await trio.to_thread.run_sync(fault.start)
    try:
        await trio.sleep(seconds)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(fault.stop)
