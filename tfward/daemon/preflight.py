"""Checks of the host before the daemon starts: can it write where the config says it keeps
its data? `tfward check-config` and `tfward serve` both ask, so a directory the daemon cannot
write is one line naming it and the reason, not a traceback from deep inside the start-up.

A storage fault that may pass — a full disk, a read-only file system, an immutable file
(`chattr +i`), an I/O error — is not a reason to refuse a start: the daemon starts degraded and
waits for storage (docs/architecture.md §10), so `serve` refuses only what will not pass by
itself (permissions, ownership, a file where a directory should be); `check-config` reports
both, and connects to a PostgreSQL database (one line: why it cannot be used).

The checks leave nothing behind: a directory that exists is probed with an unnamed temporary
file (`O_TMPFILE`), one that does not with a temporary directory created and removed in the
nearest folder that exists, where the daemon would create it.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from tfward.config import Config
from tfward.errors import ConfigError
from tfward.store.db import sqlite_file
from tfward.store.dialect import connection_problem

# What a storage fault looks like from here: it may pass, and the daemon waits for it.
PASSING = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EPERM, errno.EIO})


def storage_problems(config: Config, *, passing: bool = True) -> list[ConfigError]:
    """One ConfigError per directory (or database file) of the config that the daemon could
    not create or write, naming its key and why; empty when all is well. `passing=False`
    leaves out storage faults that may pass (PASSING). Synchronous."""
    places = [
        ("daemon.data_dir", config.daemon.data_dir),
        ("terraform.plugin_cache_dir", config.terraform.plugin_cache_dir),
    ]
    database = sqlite_file(config.daemon.database_url)
    if database is not None:
        places.append(("daemon.database_url", database.parent))
    problems: list[ConfigError] = []
    # A PostgreSQL server that does not answer may come back: serve waits for it, degraded.
    if passing and (why := connection_problem(config.daemon.database_url)) is not None:
        problems.append(ConfigError(config.path, "daemon.database_url", why))
    failed: list[Path] = []
    for key, path in places:
        if any(path.is_relative_to(f) for f in failed):
            continue  # inside a directory already reported: one line for one cause
        try:
            found = _directory_problem(path)
            if found is None and key == "daemon.database_url" and database is not None:
                found = _file_problem(database)
        except OSError as exc:  # a folder on the way that may not be searched
            found = f"{path} cannot be reached: {exc.strerror or exc}", exc.errno
        if found is not None and (passing or found[1] not in PASSING):
            problem = found[0]
            failed.append(path)
            problems.append(ConfigError(config.path, key, problem))
    return problems


def directory_problem(path: Path) -> str | None:
    """Why the daemon could not create and write in the directory `path`, or None."""
    found = _directory_problem(path)
    return None if found is None else found[0]


def file_problem(path: Path) -> str | None:
    """Why the daemon could not write the existing file `path` (None if it can, or if it does
    not exist yet: its directory is checked on its own)."""
    found = _file_problem(path)
    return None if found is None else found[0]


_Found = tuple[str, int | None]  # why, and the errno behind it (None: not an OSError)


def _directory_problem(path: Path) -> _Found | None:
    if path.exists():
        if not path.is_dir():
            return f"{path} is not a directory", None
        try:
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as exc:
            return f"{path} is not writable: {exc.strerror or exc}", exc.errno
        return None
    parent = _nearest_existing(path)
    if not parent.is_dir():
        return f"{path} cannot be created: {parent} is not a directory", None
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".tfward-check-", dir=parent))
    except OSError as exc:
        return f"{path} cannot be created in {parent}: {exc.strerror or exc}", exc.errno
    return None


def _file_problem(path: Path) -> _Found | None:
    try:
        with open(path, "r+b"):
            pass
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path} is not writable: {exc.strerror or exc}", exc.errno
    return None


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path("/")
