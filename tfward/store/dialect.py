"""What differs between the two databases tfward runs on: SQLite (one daemon, the default) and
PostgreSQL (several daemons sharing one database, docs/architecture.md §15).

- **Engines.** SQLite gets its pragmas (WAL, busy timeout, secure_delete) and one writer at a
  time: SQLite has one writer, and queueing in trio is cheaper than SQLITE_BUSY. PostgreSQL
  gets a small pool and several writers; every write transaction runs SERIALIZABLE, so the
  read-modify-write transactions SQLite's single writer kept correct (`max(seq) + 1`, the
  compare-and-set saves of runs and releases, lease changes) stay correct with several
  daemons writing at once: PostgreSQL aborts one of two conflicting transactions with a
  serialization failure, and the store runs it again. Reads run REPEATABLE READ (one snapshot
  for every statement of a `Store.read`, as SQLite's BEGIN gives).
- **Errors.** `retryable` names the errors to run a transaction again for at once
  (PostgreSQL's serialization failure 40001 and deadlock 40P01; SQLite's momentary I/O and
  full-disk errors); store/health.py's `classify` tells storage faults (the database
  unreachable, a dropped connection, read-only, a full disk) from the rest.
- **The clock.** Leases compare times from one clock: the database's (`clock`), so daemons on
  hosts whose clocks differ still agree when a lease ran out.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from tfward.ids import now


class Dialect(enum.StrEnum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


# SQLAlchemy URL prefixes tfward accepts, and the driver each one means.
_PREFIXES = {
    "sqlite://": Dialect.SQLITE,
    "postgresql+psycopg://": Dialect.POSTGRESQL,
}
# Transient SQLite errors worth another try at once: the disk momentarily full or failing.
# "database is locked" is not retried here: SQLite's busy handler has waited already.
_SQLITE_RETRY = ("disk I/O error", "database or disk is full")
# PostgreSQL: serialization_failure, deadlock_detected (class 40, transaction rollback).
_PG_RETRY = ("40001", "40P01")
# How many connections a PostgreSQL daemon keeps: writers and readers run at once up to this.
PG_POOL = 10  # readers (4), writers, the lease lane and the LISTEN connection
PG_WRITERS = 4
# How long PostgreSQL keeps a session that sits inside a transaction without sending anything
# (ours send their statements back to back): then it ends the session and its locks go.
IDLE_IN_TRANSACTION_MS = 5000


def dialect_of(url: str) -> Dialect:
    """The database a URL names. ValueError for one tfward does not run on."""
    for prefix, dialect in _PREFIXES.items():
        if url.startswith(prefix):
            return dialect
    raise ValueError(
        "expected sqlite:///PATH or postgresql+psycopg://USER@HOST/DATABASE (psycopg 3)"
    )


def make_engine(url: str, *, busy_timeout: float, on_connect: Any) -> Engine:
    """The engine for `url`: SQLite with `on_connect` (its pragmas) and an explicit BEGIN;
    PostgreSQL with a small pool, checked before use (a dropped connection is replaced, not
    handed out), SERIALIZABLE by default (writes) and REPEATABLE READ for reads."""
    if dialect_of(url) is Dialect.SQLITE:
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": busy_timeout}
        )
        event.listen(engine, "connect", on_connect)
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        return engine
    return create_engine(
        url,
        pool_size=PG_POOL,
        max_overflow=2,
        pool_pre_ping=True,
        pool_timeout=30,
        isolation_level="SERIALIZABLE",
        # A daemon whose database host vanished must not hang in connect(). A daemon paused
        # (SIGSTOP, a frozen VM) inside a transaction must not hold its row locks for ever:
        # the server ends such a session, so a survivor's lease take goes through.
        connect_args={
            "connect_timeout": 5,
            "options": f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}",
        },
    )


def writers(engine: Engine) -> int:
    """How many write transactions run at once: one on SQLite, a few on PostgreSQL."""
    return 1 if engine.dialect.name == "sqlite" else PG_WRITERS


def read_options(engine: Engine) -> dict[str, Any]:
    """Execution options of a read transaction."""
    if engine.dialect.name == "sqlite":
        return {}
    return {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}


def lease_options(engine: Engine) -> dict[str, Any]:
    """Execution options of a lease tick: READ COMMITTED on PostgreSQL, its changes each a
    compare-and-set (store/cluster.py), its row locks ordered with the fenced writes'."""
    if engine.dialect.name == "sqlite":
        return {}
    return {"isolation_level": "READ COMMITTED"}


def sqlstate(exc: BaseException) -> str | None:
    """PostgreSQL's SQLSTATE of a wrapped psycopg error, if any."""
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None)


def retryable(exc: BaseException) -> bool:
    """Run the transaction again at once: a serialization failure or deadlock (PostgreSQL), a
    momentary I/O or full-disk error (SQLite)."""
    if not isinstance(exc, DBAPIError):
        return False
    if sqlstate(exc) in _PG_RETRY:
        return True
    return isinstance(exc, OperationalError) and any(t in str(exc.orig) for t in _SQLITE_RETRY)


def is_conflict(exc: BaseException) -> bool:
    """A serialization failure or deadlock: another daemon's transaction won; no storage
    fault (health.py does not count it as one)."""
    return isinstance(exc, DBAPIError) and sqlstate(exc) in _PG_RETRY


def clock(conn: Connection) -> datetime:
    """Now, by the database's clock on PostgreSQL (one clock for every daemon: leases compare
    times written by different hosts), by this host's on SQLite (one daemon)."""
    if conn.dialect.name == "sqlite":
        return now()
    from sqlalchemy import func

    value = conn.execute(select(func.clock_timestamp())).scalar_one()
    assert isinstance(value, datetime)
    return value.astimezone(UTC)


def is_postgresql(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def shown(url: str) -> str:
    """The URL as check-config and logs print it: the password hidden."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def connection_problem(url: str, *, timeout: float = 5) -> str | None:
    """Why a PostgreSQL database cannot be used now (unreachable, refused, wrong credentials,
    no such database), in one line; None when a connection opens and answers (and always for
    SQLite: its file is checked as a file). Synchronous; waits at most about `timeout`."""
    if dialect_of(url) is Dialect.SQLITE:
        return None
    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": timeout})
    try:
        with engine.connect() as conn:
            conn.execute(select(1))
    except DBAPIError as exc:
        lines = str(exc.orig).strip().splitlines() or [type(exc.orig).__name__]
        return f"{shown(url)} cannot be used: {lines[0]}"
    finally:
        engine.dispose()
    return None
