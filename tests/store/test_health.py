"""Storage health (tfward/store/health.py) and the store under real storage faults: the errors
SQLite really gives for a read-only database, a write lock held by another process and a
full disk are told from bugs; the store degrades once per outage and recovers on the next
write that works; patient calls wait and give up only when told; impatient ones raise at once
(docs/architecture.md §10)."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError, OperationalError
from storagefaults import FullDisk, HeldWriteLock, ReadOnlyDatabase, tmpfs

from tfward.errors import StorageUnavailable
from tfward.store import workspaces as ws_store
from tfward.store.db import Store, sqlite_url
from tfward.store.health import Problem, StorageHealth, classify, patient


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(sqlite_url(tmp_path / "tfward.db"))
    store.migrate()
    yield store
    store.close()


def add_workspace(name: str) -> Callable[[Connection], dict[str, str]]:
    return lambda conn: ws_store.sync_configured(conn, [name])


def _raw_error(store: Store, sql: str) -> OperationalError:
    try:
        store.run_sync(lambda c: c.execute(text(sql)))
    except OperationalError as exc:
        return exc
    raise AssertionError("no error")


# ---- classify ---------------------------------------------------------------------------------


def test_a_read_only_database_is_a_storage_fault(tmp_path: Path, store: Store) -> None:
    with ReadOnlyDatabase(tmp_path / "tfward.db"):
        exc = _raw_error(store, "INSERT INTO storage_probe VALUES (7, 'x')")
    fault = classify(exc)
    assert fault is not None and fault.problem in (Problem.IO_ERROR, Problem.READ_ONLY)
    assert fault.reason.startswith("database: ")


def test_a_write_lock_held_by_another_process_is_a_storage_fault(
    tmp_path: Path, store: Store
) -> None:
    with HeldWriteLock(tmp_path / "tfward.db"):
        exc = _raw_error(store, "INSERT INTO storage_probe VALUES (7, 'x')")
    fault = classify(exc)
    assert fault is not None and fault.problem is Problem.LOCKED


def test_a_full_disk_is_a_storage_fault(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", 2) as disk:
        with FullDisk(disk), pytest.raises(OSError) as caught:
            (disk / "state").write_bytes(b"x" * 100_000)
        fault = classify(caught.value, "state backup")
    assert fault is not None and fault.problem is Problem.DISK_FULL
    assert fault.reason.startswith("state backup: ")


@pytest.mark.parametrize(
    "exc",
    [
        IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed")),
        OSError(errno.ENOENT, "No such file or directory"),
        ValueError("a bug"),
    ],
    ids=["integrity", "missing-file", "bug"],
)
def test_what_waiting_cannot_cure_is_no_storage_fault(exc: Exception) -> None:
    assert classify(exc) is None


# ---- the health of a store --------------------------------------------------------------------


async def test_a_failing_write_degrades_once_per_outage_and_the_next_good_write_recovers(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tfward.store.health")
    with ReadOnlyDatabase(tmp_path / "tfward.db"):
        for _ in range(3):
            with pytest.raises(StorageUnavailable):
                await store.write(add_workspace("a"))
        assert store.health.failing and store.health.outages
        degraded = store.health.degraded
        assert degraded is not None and "database" in degraded.reason
        assert store.health.status()["status"] == "degraded"
        assert await store.read(lambda c: 1 + 1) == 2  # reads still answer
    await store.write(add_workspace("a"))
    assert not store.health.failing and store.health.status() == {"status": "ok"}
    messages = [r.getMessage() for r in caplog.records]
    assert sum("storage degraded" in m for m in messages) == 1
    assert sum("storage recovered" in m for m in messages) == 1


async def test_a_patient_write_waits_for_storage_and_then_commits(
    tmp_path: Path, store: Store
) -> None:
    done: list[dict[str, str]] = []
    fault = ReadOnlyDatabase(tmp_path / "tfward.db")

    async def write() -> None:
        with patient():
            done.append(await store.write(add_workspace("b")))

    async with trio.open_nursery() as nursery:
        fault.start()
        try:
            nursery.start_soon(write)
            with trio.fail_after(20):
                while not store.health.failing:
                    await trio.sleep(0.05)
            await trio.sleep(1.0)
            assert not done
        finally:
            fault.stop()
    assert done and "b" in done[0]


async def test_a_patient_write_raises_once_the_daemon_gives_up(
    tmp_path: Path, store: Store
) -> None:
    give_up = trio.Event()
    with ReadOnlyDatabase(tmp_path / "tfward.db"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_set_after, give_up, 1.0)
            with trio.fail_after(20), patient(give_up), pytest.raises(StorageUnavailable):
                await store.write(add_workspace("c"))


async def _set_after(event: trio.Event, seconds: float) -> None:
    await trio.sleep(seconds)
    event.set()


async def test_a_write_lock_held_elsewhere_degrades_the_store_after_the_busy_timeout(
    tmp_path: Path, store: Store
) -> None:
    with HeldWriteLock(tmp_path / "tfward.db"):
        with trio.fail_after(30), pytest.raises(StorageUnavailable) as caught:
            await store.write(add_workspace("d"))
        assert caught.value.problem == Problem.LOCKED
        assert store.health.failing
    await store.probe()
    assert not store.health.failing


async def test_an_error_that_is_no_storage_fault_propagates_and_degrades_nothing(
    store: Store,
) -> None:
    def broken(conn: Connection) -> None:
        raise ValueError("a bug in a store function")

    with patient(), pytest.raises(ValueError):
        await store.write(broken)
    assert not store.health.failing


async def test_health_waiters_wake_when_storage_recovers() -> None:
    health = StorageHealth()
    health.failed(StorageUnavailable(Problem.LOCKED, "database: database is locked"))
    woke: list[float] = []

    async def waiter() -> None:
        await health.wait(60)
        woke.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(0.1)
        assert not woke
        health.succeeded()
    assert woke


async def test_a_store_that_first_met_the_database_read_only_writes_once_it_is_writable(
    tmp_path: Path, store: Store
) -> None:
    store.close()
    fresh = Store(sqlite_url(tmp_path / "tfward.db"))  # a daemon starting during the outage
    try:
        with ReadOnlyDatabase(tmp_path / "tfward.db"):
            assert await fresh.read(lambda c: 1) == 1
            with pytest.raises(StorageUnavailable):
                await fresh.write(add_workspace("e"))
        await fresh.write(add_workspace("e"))
    finally:
        fresh.close()


async def test_a_stage_deadline_does_not_run_while_storage_fails_and_resumes_with_what_was_left(
    autojump_clock: trio.testing.MockClock,
) -> None:
    health = StorageHealth()
    fired_at: list[float] = []
    with trio.move_on_after(10) as deadline, health.paused_while_failing(deadline):
        await trio.sleep(4)
        health.failed(StorageUnavailable(Problem.READ_ONLY, "database: read-only"))
        await trio.sleep(100)  # the outage: the stage's own limit does not run
        assert not deadline.cancelled_caught
        health.succeeded()
        try:
            await trio.sleep_forever()
        finally:
            fired_at.append(trio.current_time())
    assert deadline.cancelled_caught and fired_at == [pytest.approx(110)]
