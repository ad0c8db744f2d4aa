"""The daemon's data directory: one daemon at a time, and private to the daemon's user.

`claim` is the first thing a daemon does, before migrations, keys or recovery: it takes an
exclusive `flock` on `<data_dir>/tfward.lock` and, when the SQLite database lives outside the
data dir, on `<database>.tfward.lock` beside it. A second daemon on the same data dir (or the
same SQLite file) stops at once with `AlreadyRunning`, naming the PID that holds the lock;
before, it ran recovery and "stopped" the first daemon's terraform. The OS drops the locks
when the process ends, however it ends. (With several daemons on one PostgreSQL database each
has its own data dir; the database's node registry is another matter.)

`make_private` gives the data dir, its directories and the SQLite files modes 0700 / 0600, also
when an older daemon created them under a looser umask (docs/architecture.md §9). `tfward
serve` also sets the process umask to 0o077, so what terraform and its providers write under
the data dir is private too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from tfward.config import Config, DaemonConfig
from tfward.files import lock_exclusive, private_dir
from tfward.store.db import sqlite_file

LOCK_FILE = "tfward.lock"
PRIVATE_DIRS = ("runs", "init-cache", "state-backups", "plan-json")


@dataclass
class DataDirClaim:
    """The locks a daemon holds on its data dir (and database) while it runs."""

    fds: list[int] = field(default_factory=list)

    def release(self) -> None:
        """Drop the locks (the daemon has closed its database first)."""
        while self.fds:
            os.close(self.fds.pop())


def claim(daemon: DaemonConfig) -> DataDirClaim:
    """Lock the data dir (created 0700 if missing), and a SQLite database outside it. Raises
    AlreadyRunning (nothing held) if another process holds either lock."""
    data_dir = private_dir(daemon.data_dir)
    held = DataDirClaim()
    try:
        held.fds.append(lock_exclusive(data_dir / LOCK_FILE, f"the data dir {data_dir}"))
        db = sqlite_file(daemon.database_url)
        if db is not None and not db.resolve().is_relative_to(data_dir.resolve()):
            db.parent.mkdir(parents=True, exist_ok=True)
            lock = db.with_name(db.name + ".tfward.lock")
            held.fds.append(lock_exclusive(lock, f"the database {db}"))
    except BaseException:
        held.release()
        raise
    return held


def make_private(config: Config) -> None:
    """Modes 0700 for the data dir and the directories tfward keeps in it (and the plugin
    cache when it is inside), 0600 for the SQLite files; the database file is created 0600
    before SQLite opens it, so its -wal and -shm (which take its mode) are 0600 as well."""
    data_dir = private_dir(config.daemon.data_dir)
    for sub in PRIVATE_DIRS:
        private_dir(data_dir / sub)
    cache = config.terraform.plugin_cache_dir
    if cache.resolve().is_relative_to(data_dir.resolve()):
        private_dir(cache)
    else:
        cache.mkdir(parents=True, exist_ok=True)  # the operator's, perhaps shared: as it is
    db = sqlite_file(config.daemon.database_url)
    if db is None:
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        if path.exists():
            path.chmod(0o600)
