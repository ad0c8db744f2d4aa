"""Files only the daemon's user may read: the secret key and the local admin token."""

from __future__ import annotations

import os
from pathlib import Path


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
