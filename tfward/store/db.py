"""The store: a synchronous SQLAlchemy engine used from trio through worker threads.

aiosqlite and SQLAlchemy's asyncio extension need asyncio and do not run under trio, so every
database call is a short synchronous function run with `trio.to_thread.run_sync`. Writes go
through a limiter of one (SQLite has one writer; queueing in trio is cheaper than SQLITE_BUSY),
reads through a wider one. Each call is one transaction.

Storage faults (store/health.py, docs/architecture.md §10): a write that fails because the
database is full, read-only, locked by another process or failing is retried a few times at
once, then reported to `Store.health` and raised as StorageUnavailable — unless the caller
runs in a patient context, where it waits (with backoff, woken by recovery) and tries again.
While the disk watcher holds the disk full, writes are not even tried: the space the reserve
freed is kept for terraform.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import trio
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import OperationalError

from tfward.errors import StorageUnavailable
from tfward.ids import now

from . import changes
from . import health as health_mod
from .changes import ChangeHub
from .health import Problem, StorageHealth, classify, current_patience, patiently
from .sealing import INFO_KEY, Sealer

log = logging.getLogger(__name__)

T = TypeVar("T")

_MIGRATIONS = Path(__file__).with_name("migrations")
# Transient SQLite errors worth another try at once: the disk momentarily full or failing.
# "database is locked" is not retried here: SQLite's busy handler has waited BUSY_TIMEOUT already.
_TRANSIENT = (
    "disk I/O error",
    "database or disk is full",
)
# How long a write waits for another process's write lock before it counts as failing.
BUSY_TIMEOUT = 5.0
_MIGRATING = threading.Lock()


def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    # pysqlite only opens a transaction before writes, so two SELECTs of one `Store.read`
    # could see different commits. Let SQLAlchemy's BEGIN (below) open every transaction:
    # a read then sees one snapshot (SQLAlchemy's documented recipe for pysqlite).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode loses nothing when the process is killed, only on power loss.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
    cur.execute("PRAGMA foreign_keys=ON")
    # A replaced row (a plain state sealed at start, a re-planned run's plan) leaves no
    # readable copy in the file's free pages.
    cur.execute("PRAGMA secure_delete=ON")
    cur.close()


def _begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN")


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError) and any(t in str(exc.orig) for t in _TRANSIENT)


class Store:
    """Owns the engine. `read`/`write` run a function on a connection in one transaction.

    `sealer` encrypts the columns that hold secrets (sealing.py); the daemon sets it once its
    secret key is loaded, before any state or plan is read or written."""

    def __init__(
        self, url: str, *, readers: int = 4, write_retries: int = 3, sealer: Sealer | None = None
    ) -> None:
        self.url = url
        self.sealer = sealer
        self.engine: Engine = _make_engine(url)
        self._write_limiter = trio.CapacityLimiter(1)
        self._read_limiter = trio.CapacityLimiter(readers)
        self._write_retries = write_retries
        # What committed writes changed, told to those waiting for it (changes.py).
        self.changes = ChangeHub()
        # Transactions started by `read` and `write` (tests and benchmarks count them).
        self.reads = self.writes = 0
        self.health = StorageHealth()

    def migrate(self) -> None:
        """Apply every Alembic migration not yet applied (synchronous; called once at start),
        and log one line when the schema changed. Alembic's own info lines (plugin set-up,
        the dialect) are noise on every start: obs/logs.py keeps it to warnings. Alembic's
        migration context is global to the process, so stores of one process (tests start
        several daemons at once) migrate one at a time."""
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        with _MIGRATING, self.engine.begin() as conn:
            before = MigrationContext.configure(conn).get_current_heads()
            cfg.attributes["connection"] = conn
            # "heads": feature branches of the schema may each have their own head.
            command.upgrade(cfg, "heads")
            after = MigrationContext.configure(conn).get_current_heads()
        if set(before) != set(after):
            log.info(
                "database schema migrated from %s to %s",
                ", ".join(sorted(before)) or "empty",
                ", ".join(sorted(after)),
            )

    def run_sync(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` in one transaction on the calling thread (tests, tools). What it changed
        is published when the calling thread is the trio thread; from another thread it is
        not (waiters see it at their fallback re-check, changes.py)."""
        result, keys = self._transaction(fn)
        if keys and trio.lowlevel.in_trio_run():
            self.changes.publish(keys)
        return result

    def _transaction(self, fn: Callable[[Connection], T]) -> tuple[T, frozenset[changes.Key]]:
        """Run `fn` in one transaction on this thread; its result and the change keys it
        recorded (meaningful only once the transaction has committed, i.e. on return)."""
        with self.engine.begin() as conn:
            changes.take(conn)  # a transaction that failed before may have left some
            if self.sealer is not None:
                conn.info[INFO_KEY] = self.sealer
            result = fn(conn)
            keys = changes.take(conn)
        return result, keys

    async def read(self, fn: Callable[[Connection], T], *, patient: bool | None = None) -> T:
        """Run a read-only `fn` in a worker thread. On cancellation the thread is abandoned (it
        finishes its short transaction on its own). A storage fault raises StorageUnavailable;
        in a patient context (or with `patient=True`) it is waited out. Other errors
        propagate."""

        async def attempt() -> T:
            self.reads += 1
            async with self._read_limiter:
                try:
                    result, _ = await trio.to_thread.run_sync(
                        self._transaction, fn, abandon_on_cancel=True
                    )
                    return result
                except OperationalError as exc:
                    raise self._fault(exc) from exc

        return await patiently(self.health, attempt, self._patience(patient))

    async def write(self, fn: Callable[[Connection], T], *, patient: bool | None = None) -> T:
        """Run `fn` in one write transaction. The thread is not abandoned on cancellation: a
        write either commits or rolls back before this returns, so callers never guess
        whether it happened.

        A storage fault is retried a few times at once (not while storage is known to fail),
        then raised as StorageUnavailable, or waited out in a patient context (`patient=True`
        or `health.patient()`; `patient=False` makes one attempt whatever the context)."""
        return await patiently(self.health, lambda: self._write(fn), self._patience(patient))

    async def _write(self, fn: Callable[[Connection], T]) -> T:
        if self.health.held is not None:
            raise StorageUnavailable(self.health.held.problem, self.health.held.reason)
        async with self._write_limiter:
            retries = 0 if self.health.failing else self._write_retries
            for attempt in range(retries + 1):
                self.writes += 1
                try:
                    result, keys = await trio.to_thread.run_sync(self._transaction, fn)
                except OperationalError as exc:
                    if not is_transient(exc) or attempt == retries:
                        raise self._fault(exc) from exc
                    delay = min(1.0, 0.05 * 2**attempt) * (0.5 + random.random())
                    log.debug("transient database error, retrying in %.2fs: %s", delay, exc.orig)
                    await trio.sleep(delay)
                    continue
                self.health.succeeded()
                self.changes.publish(keys)  # committed: tell whoever waits for these
                return result
            raise AssertionError("unreachable")

    def _fault(self, exc: OperationalError) -> StorageUnavailable:
        fault = classify(exc)
        assert fault is not None  # every OperationalError is a storage fault
        self.health.failed(fault)
        if fault.problem in (Problem.READ_ONLY, Problem.UNAVAILABLE):
            # SQLite opens a file it may not write read-only, and such a connection stays
            # read-only after the file is writable again: open new ones for the next attempt
            # (connections in use are closed when they are given back).
            self.engine.dispose()
        return fault

    @staticmethod
    def _patience(patient: bool | None) -> health_mod.Patience | None:
        if patient is None:
            return current_patience()
        return health_mod.Patience() if patient else None

    async def probe(self) -> None:
        """One small write transaction (the disk watcher's check while storage fails): clears
        the degradation when it works, raises StorageUnavailable when it does not."""
        await self.write(_touch_probe, patient=False)

    async def ping(self) -> None:
        """One round trip to the database; raises if it fails."""
        await self.read(lambda c: c.exec_driver_sql("SELECT 1").scalar(), patient=False)

    def close(self) -> None:
        self.engine.dispose()


def _touch_probe(conn: Connection) -> None:
    from .tables import storage_probe  # the probe's row: a write that really reaches the file

    conn.execute(storage_probe.delete())
    conn.execute(storage_probe.insert().values(id=1, probed_at=now()))


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT}
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _begin)
        return engine
    return create_engine(url, pool_pre_ping=True)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def sqlite_file(url: str) -> Path | None:
    """The database file of a `sqlite:///...` URL (None for other databases or in-memory)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None
