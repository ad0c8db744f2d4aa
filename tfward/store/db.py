"""The store: a synchronous SQLAlchemy engine used from trio through worker threads.

aiosqlite and SQLAlchemy's asyncio extension need asyncio and do not run under trio, so every
database call is a short synchronous function run with `trio.to_thread.run_sync`. Writes go
through a limiter of one on SQLite (it has one writer; queueing in trio is cheaper than
SQLITE_BUSY) and of a few on PostgreSQL, whose write transactions run SERIALIZABLE
(store/dialect.py); reads through a wider one. Each call is one transaction; a transaction
another one conflicted with (a serialization failure, a deadlock) is run again at once.

Fencing (docs/architecture.md §15): a write made under a fence (`fencing.fenced`, set by the
workspace actor for everything it and its runs do) first checks, in the same transaction, that
this daemon still holds the workspace's lease with the same epoch; otherwise it raises
FencedOut and writes nothing.

Changes across daemons (docs/architecture.md §15): on PostgreSQL every write transaction also
sends its change keys (changes.py) with NOTIFY `tfward_changes` (delivered only once it
commits); each daemon's listener publishes them to its own ChangeHub, so a run that another
daemon drives is seen as soon as it changes. The hub's fallback re-check covers a lost
notification.

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
import secrets
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import trio
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from tfward.errors import StorageUnavailable
from tfward.ids import now

from . import changes, dialect, fencing
from . import cluster as cluster_store
from . import health as health_mod
from .changes import ChangeHub
from .health import Problem, StorageHealth, classify, current_patience, patiently
from .sealing import INFO_KEY, Sealer

log = logging.getLogger(__name__)

T = TypeVar("T")

_MIGRATIONS = Path(__file__).with_name("migrations")
# Conflicts between daemons writing at once (PostgreSQL) are retried this often before the
# error propagates: each retry is a fresh transaction that sees the winner's commit. Hot rows
# (the `max(seq) + 1` of the outbox and runs) conflict often under load: the backoff grows to
# a second, so the retries span about half a minute.
CONFLICT_RETRIES = 40
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


def is_transient(exc: BaseException) -> bool:
    return dialect.retryable(exc)


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
        self.dialect = dialect.Dialect(self.engine.dialect.name)
        self._write_limiter = trio.CapacityLimiter(dialect.writers(self.engine))
        # The lease loop's own lane on PostgreSQL (`write(..., lease=True)`): its renewals
        # never queue behind the runs' writes. SQLite has one writer: one lane.
        self._lease_limiter = (
            trio.CapacityLimiter(1)
            if self.dialect is dialect.Dialect.POSTGRESQL
            else self._write_limiter
        )
        self._read_limiter = trio.CapacityLimiter(readers)
        self._write_retries = write_retries
        # What committed writes changed, told to those waiting for it (changes.py). On
        # PostgreSQL also what other daemons' writes changed: each write announces its keys
        # (NOTIFY in its transaction, signed with `origin` so a daemon skips its own).
        self.changes = ChangeHub()
        self.origin = secrets.token_hex(8)
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

    def run_sync(
        self, fn: Callable[[Connection], T], *, reading: bool = False, lease: bool = False
    ) -> T:
        """Run `fn` in one transaction on the calling thread (start-up, recovery, tests, tools).
        `reading`: a read-only transaction (REPEATABLE READ on PostgreSQL). What it changed is
        published when the calling thread is the trio thread; from another thread it is not
        (waiters see it at their fallback re-check, changes.py)."""
        result, keys = self._transaction(fn, reading=reading, lease=lease)
        if keys and trio.lowlevel.in_trio_run():
            self.changes.publish(keys)
        return result

    def _transaction(
        self,
        fn: Callable[[Connection], T],
        *,
        reading: bool = False,
        lease: bool = False,
        fence: fencing.Fence | None = None,
    ) -> tuple[T, changes.Changes]:
        """Run `fn` in one transaction on this thread; its result and the change keys it
        recorded (meaningful only once the transaction has committed, i.e. on return). Under
        `fence`, the lease is checked first, in the transaction. On PostgreSQL a write
        announces its keys to the other daemons (NOTIFY: delivered only after the commit)."""
        options = (
            dialect.read_options(self.engine) if reading
            else dialect.lease_options(self.engine) if lease
            else {}
        )  # fmt: skip
        with self.engine.connect().execution_options(**options) as conn, conn.begin():
            changes.take(conn)  # a transaction that failed before may have left some
            if self.sealer is not None:
                conn.info[INFO_KEY] = self.sealer
            if fence is not None:
                fencing.check(conn, fence)
            result = fn(conn)
            keys = changes.take(conn)
            if keys and not reading and self.dialect is dialect.Dialect.POSTGRESQL:
                cluster_store.announce(conn, self.origin, keys)
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
                        lambda: self._transaction(fn, reading=True), abandon_on_cancel=True
                    )
                    return result
                except DBAPIError as exc:
                    if (fault := self._fault(exc)) is None:
                        raise
                    raise fault from exc

        return await patiently(self.health, attempt, self._patience(patient))

    async def write(
        self, fn: Callable[[Connection], T], *, patient: bool | None = None, lease: bool = False
    ) -> T:
        """Run `fn` in one write transaction. The thread is not abandoned on cancellation: a
        write either commits or rolls back before this returns, so callers never guess
        whether it happened.

        A storage fault is retried a few times at once (not while storage is known to fail),
        then raised as StorageUnavailable, or waited out in a patient context (`patient=True`
        or `health.patient()`; `patient=False` makes one attempt whatever the context).

        Under a fence (`fencing.fenced`), the lease is checked in the same transaction: a
        daemon that lost the workspace raises FencedOut and writes nothing. `lease`: the lease
        loop's ticks, in a lane of their own and READ COMMITTED on PostgreSQL (every lease
        change is a compare-and-set on the epoch: SERIALIZABLE would only make the ticks of
        several daemons, which all read every lease, abort one another)."""
        fence = fencing.current()
        return await patiently(
            self.health, lambda: self._write(fn, fence, lease), self._patience(patient)
        )

    async def _write(
        self,
        fn: Callable[[Connection], T],
        fence: fencing.Fence | None,
        lease: bool,
    ) -> T:
        if self.health.held is not None:
            raise StorageUnavailable(self.health.held.problem, self.health.held.reason)
        async with self._lease_limiter if lease else self._write_limiter:
            retries = 0 if self.health.failing else self._write_retries
            attempt = conflicts = 0
            while True:
                self.writes += 1
                try:
                    result, keys = await trio.to_thread.run_sync(
                        lambda: self._transaction(fn, lease=lease, fence=fence)
                    )
                except DBAPIError as exc:
                    if dialect.is_conflict(exc) and conflicts < CONFLICT_RETRIES:
                        conflicts += 1  # another daemon's transaction won: run it again
                        await trio.sleep(min(1.0, 0.005 * 2**conflicts) * random.random())
                        continue
                    if not is_transient(exc) or attempt >= retries:
                        if (fault := self._fault(exc)) is None:
                            raise
                        raise fault from exc
                    attempt += 1
                    delay = min(1.0, 0.05 * 2**attempt) * (0.5 + random.random())
                    log.debug("transient database error, retrying in %.2fs: %s", delay, exc.orig)
                    await trio.sleep(delay)
                    continue
                self.health.succeeded()
                self.changes.publish(keys)  # committed: tell whoever waits for these
                return result

    def _fault(self, exc: DBAPIError) -> StorageUnavailable | None:
        """The storage fault `exc` is (health noted), or None for another error (a
        constraint, a conflict retried too often: not for waiting)."""
        fault = classify(exc)
        if fault is None:
            return None
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
    return dialect.make_engine(url, busy_timeout=BUSY_TIMEOUT, on_connect=_sqlite_pragmas)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def sqlite_file(url: str) -> Path | None:
    """The database file of a `sqlite:///...` URL (None for other databases or in-memory)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None
