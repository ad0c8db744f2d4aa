"""Checks of the host before the daemon starts: can it write where the config says it keeps
its data? `tfward check-config` and `tfward serve` both ask, so a directory the daemon cannot
write is one line naming it and the reason, not a traceback from deep inside the start-up.

The checks leave nothing behind: a directory that exists is probed with an unnamed temporary
file (`O_TMPFILE`), one that does not with a temporary directory created and removed in the
nearest folder that exists, where the daemon would create it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tfward.config import Config
from tfward.errors import ConfigError
from tfward.store.db import sqlite_file


def storage_problems(config: Config) -> list[ConfigError]:
    """One ConfigError per directory (or database file) of the config that the daemon could
    not create or write, naming its key and why; empty when all is well. Synchronous."""
    places = [
        ("daemon.data_dir", config.daemon.data_dir),
        ("terraform.plugin_cache_dir", config.terraform.plugin_cache_dir),
    ]
    database = sqlite_file(config.daemon.database_url)
    if database is not None:
        places.append(("daemon.database_url", database.parent))
    problems: list[ConfigError] = []
    failed: list[Path] = []
    for key, path in places:
        if any(path.is_relative_to(f) for f in failed):
            continue  # inside a directory already reported: one line for one cause
        try:
            problem = directory_problem(path)
            if problem is None and key == "daemon.database_url" and database is not None:
                problem = file_problem(database)
        except OSError as exc:  # a folder on the way that may not be searched
            problem = f"{path} cannot be reached: {exc.strerror or exc}"
        if problem is not None:
            failed.append(path)
            problems.append(ConfigError(config.path, key, problem))
    return problems


def directory_problem(path: Path) -> str | None:
    """Why the daemon could not create and write in the directory `path`, or None."""
    if path.exists():
        if not path.is_dir():
            return f"{path} is not a directory"
        try:
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as exc:
            return f"{path} is not writable: {exc.strerror or exc}"
        return None
    parent = _nearest_existing(path)
    if not parent.is_dir():
        return f"{path} cannot be created: {parent} is not a directory"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".tfward-check-", dir=parent))
    except OSError as exc:
        return f"{path} cannot be created in {parent}: {exc.strerror or exc}"
    return None


def file_problem(path: Path) -> str | None:
    """Why the daemon could not write the existing file `path` (None if it can, or if it does
    not exist yet: its directory is checked on its own)."""
    try:
        with open(path, "r+b"):
            pass
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path} is not writable: {exc.strerror or exc}"
    return None


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path("/")
