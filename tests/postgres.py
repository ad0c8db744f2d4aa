"""A real PostgreSQL 16 for the tests, from the PyPI package `pgserver` (a wheel; offline).

One server per test process (each pytest-xdist worker starts its own, in its own directory),
started on first use and stopped at the end of the session (`stop`, called by conftest.py; the
postmaster detaches from us, so it is stopped explicitly or it would outlive the run). A fresh
database per call of `fresh_database_url`: a copy of a template that has every migration
applied, so a test starts from the schema and nothing else.

`TFWARD_TEST_DATABASE=postgresql` makes `harness.write_config` and the store suites' fixtures
use it instead of SQLite (`make test` runs both). Without pgserver the PostgreSQL tests are
skipped — except under `CI=true`, where they fail: CI must run them.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import tempfile
import threading
import time
import warnings
from pathlib import Path

import pytest

DATABASES = ("sqlite", "postgresql")
_lock = threading.Lock()
_server: tuple[Path, str] | None = None  # (pgdata, base URI)
_names = itertools.count(1)


def selected() -> str:
    """The database the store and daemon suites run on: `TFWARD_TEST_DATABASE`."""
    value = os.environ.get("TFWARD_TEST_DATABASE", "sqlite")
    if value not in DATABASES:
        raise pytest.UsageError(f"TFWARD_TEST_DATABASE must be one of {DATABASES}, got {value!r}")
    return value


def require() -> None:
    """Skip (fail under CI=true) when pgserver cannot be imported."""
    try:
        _import()
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL tests need the pgserver package: {exc}", pytrace=False)
        pytest.skip(f"pgserver is not installed: {exc}")


def _import() -> object:
    # platformdirs warns when XDG_RUNTIME_DIR is unset; pytest turns warnings into errors.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        return pgserver


def _start() -> tuple[Path, str]:
    global _server
    with _lock:
        if _server is None:
            pgserver = _import()
            # Short: the unix socket lives in the data directory (108-byte path limit).
            pgdata = Path(tempfile.mkdtemp(prefix="tfpg-", dir="/tmp")) / "d"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                server = pgserver.get_server(str(pgdata), cleanup_mode=None)  # type: ignore[attr-defined]
            uri = server.get_uri()
            _server = (pgdata, uri)
            _make_template(uri)
        return _server


def _make_template(uri: str) -> None:
    import psycopg

    from tfward.store.db import Store

    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE DATABASE tfward_template")
    store = Store(_sqlalchemy(uri, "tfward_template"))
    try:
        store.migrate()
    finally:
        store.close()


def _sqlalchemy(uri: str, database: str) -> str:
    # postgresql://postgres:@/postgres?host=DIR -> postgresql+psycopg://postgres:@/DB?host=DIR
    rest = uri.removeprefix("postgresql://")
    user, _, tail = rest.partition("@/")
    _, _, query = tail.partition("?")
    return f"postgresql+psycopg://{user}@/{database}?{query}"


def fresh_database_url(*, migrated: bool = True) -> str:
    """A new, empty database on this process's server (with every migration applied unless
    `migrated` is False), as a SQLAlchemy URL."""
    import psycopg

    require()
    _, uri = _start()
    name = f"t{os.getpid()}_{next(_names)}"
    template = "tfward_template" if migrated else "template0"
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    return _sqlalchemy(uri, name)


def admin_uri() -> str:
    """The server's own URI (database `postgres`), for psql-like checks in tests."""
    require()
    return _start()[1]


def pgdata() -> Path:
    require()
    return _start()[0]


def stop() -> None:
    """Stop this process's server, if it started one, and remove its files."""
    global _server
    with _lock:
        if _server is None:
            return
        data, _ = _server
        _server = None
    _signal_postmaster(data, signal.SIGQUIT)  # immediate shutdown: the data is thrown away
    shutil.rmtree(data.parent, ignore_errors=True)


def _signal_postmaster(data: Path, signum: int) -> None:
    try:
        pid = int((data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signum)
    except (OSError, ValueError, IndexError):
        return  # not running
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def database_url(tmp_path: Path) -> str:
    """The database the store suites use: a SQLite file in `tmp_path`, or a fresh PostgreSQL
    database (`TFWARD_TEST_DATABASE=postgresql`)."""
    if selected() == "postgresql":
        return fresh_database_url()
    return f"sqlite:///{tmp_path / 'tfward.db'}"
