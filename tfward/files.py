"""Files and directories only the daemon's user may use: the secret key, the local admin token,
the daemon's lock files and its private directories (docs/architecture.md §9)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import AlreadyRunning


def create_private(path: Path, data: bytes) -> bool:
    """Create `path` holding `data`, mode 0600 from the start (never briefly world-readable).

    O_EXCL makes two starts racing on one data dir agree: the loser keeps the winner's file.
    Returns whether this call created it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def private_dir(path: Path) -> Path:
    """`path` as a directory only its owner can enter (0700), created if missing (with its
    missing parents 0700 too); an existing one is made 0700."""
    if not path.parent.exists():
        private_dir(path.parent)
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)
    return path


def lock_exclusive(path: Path, what: str) -> int:
    """Take an exclusive `flock` on `path` (created 0600) without waiting, and write this
    process's PID into it for the message a second taker gets. Returns the descriptor, which
    holds the lock until it is closed or the process ends: the OS drops it whatever way the
    process dies, so a `kill -9` leaves no stale lock. The descriptor is not inherited by
    children (terraform outliving a killed daemon must not keep its lock).

    Raises AlreadyRunning (naming `what` and the holder's PID) if another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _pid_in(fd)
        os.close(fd)
        raise AlreadyRunning(what, path, holder) from None
    except BaseException:
        os.close(fd)
        raise
    os.fchmod(fd, 0o600)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _pid_in(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
