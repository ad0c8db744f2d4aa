"""What differs on PostgreSQL (store/dialect.py, store/health.py): the server gone is a storage
fault ("unavailable": storage degraded) that a patient write waits out, resuming once the
server is back; a conflict between two writers is run again, not an error. Each test here
starts PostgreSQL servers of its own (tests/postgres.py starts the shared one), so stopping
one harms no other test."""

from __future__ import annotations

import shutil
import signal
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import postgres
import pytest
import trio
from sqlalchemy import Connection, select

from tfward.errors import StorageUnavailable
from tfward.runs.model import Operation
from tfward.store import runs as run_store
from tfward.store import workspaces as ws_store
from tfward.store.db import Store
from tfward.store.health import Problem
from tfward.store.tables import runs


def start_server(pgdata: Path) -> tuple[Any, str]:
    """A new PostgreSQL server on `pgdata`, and its SQLAlchemy URL."""
    import pgserver

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(str(pgdata), cleanup_mode=None)  # type: ignore[attr-defined]
    uri: str = server.get_uri()
    return server, uri.replace("postgresql://", "postgresql+psycopg://", 1).replace(":@/", "@/")


def restart(server: Any) -> None:
    """Start a stopped server again, as pgserver first started it (its socket in pgdata)."""
    from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

    args = ["-w", "-o", '-h ""', "-o", f"-k {server.pgdata}", "-l", str(server.log), "start"]
    pg_ctl(args, pgdata=server.pgdata, user=server.system_user, timeout=30)


@pytest.fixture
def own_server() -> Iterator[tuple[Any, str]]:
    postgres.require()
    pgdata = Path(tempfile.mkdtemp(prefix="tfpgo-", dir="/tmp")) / "d"
    yield start_server(pgdata)
    postgres._signal_postmaster(pgdata, signal.SIGQUIT)  # immediate stop, the data thrown away
    shutil.rmtree(pgdata.parent, ignore_errors=True)


def names(conn: Connection) -> list[str]:
    return [name for _, name, _ in ws_store.list_workspaces(conn)]


async def test_the_server_stopping_degrades_storage_and_a_patient_write_resumes_when_it_is_back(
    own_server: tuple[Any, str],
) -> None:
    server, url = own_server
    store = Store(url)
    try:
        store.migrate()
        await store.write(lambda c: ws_store.sync_configured(c, ["a"]))
        postgres._signal_postmaster(server.pgdata, signal.SIGINT)  # a fast shutdown
        with pytest.raises(StorageUnavailable) as refused:
            await store.write(lambda c: ws_store.sync_configured(c, ["a", "b"]), patient=False)
        assert refused.value.problem == Problem.UNAVAILABLE
        assert store.health.degraded is not None

        async def back_later() -> None:
            await trio.sleep(1)  # the outage: waited out by the write below, not by the test
            await trio.to_thread.run_sync(restart, server)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(back_later)
            with trio.fail_after(60):
                await store.write(lambda c: ws_store.sync_configured(c, ["a", "b"]), patient=True)
        assert store.health.degraded is None
        assert await store.read(names) == ["a", "b"]
    finally:
        store.close()


async def test_two_daemons_creating_runs_at_once_get_every_run_with_its_own_number() -> None:
    """`max(seq) + 1` read and written by two writers at once: SERIALIZABLE makes one of two
    conflicting transactions fail, and the store runs it again."""
    url = postgres.fresh_database_url()
    first, second = Store(url), Store(url)
    try:
        ws_id = first.run_sync(lambda c: ws_store.sync_configured(c, ["demo"]))["demo"]

        def create(conn: Connection) -> str:
            run = run_store.create_run(conn, workspace_id=ws_id, workspace_name="demo",
                                       operation=Operation.PLAN, auto_apply=False)  # fmt: skip
            return run.id

        def numbers(conn: Connection) -> list[int]:
            return sorted(conn.execute(select(runs.c.seq)).scalars())

        created: list[str] = []

        async def many(store: Store) -> None:
            for _ in range(10):
                created.append(await store.write(create))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(many, first)
                nursery.start_soon(many, second)
        assert len(set(created)) == 20 and await first.read(numbers) == list(range(1, 21))
    finally:
        first.close()
        second.close()
