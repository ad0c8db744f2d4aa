"""The disk reserve and the storage watcher (tfward/store/reserve.py) on a real small tmpfs: the
reserve is made at start, freed the moment the disk fills (its space left to terraform: the
store does not even try to write), and made again when the disk has room; a failing database
is probed until it answers (docs/architecture.md §10)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from sqlalchemy import Connection
from storagefaults import FullDisk, ReadOnlyDatabase, tmpfs

from tfward.errors import StorageUnavailable
from tfward.store import workspaces as ws_store
from tfward.store.db import Store, sqlite_url
from tfward.store.health import Problem
from tfward.store.reserve import RESERVE_FILE, StorageWatcher

RESERVE = 4 << 20


@asynccontextmanager
async def watched(data_dir: Path, db_dir: Path) -> AsyncIterator[tuple[Store, StorageWatcher]]:
    store = Store(sqlite_url(db_dir / "tfward.db"))
    store.migrate()
    watcher = StorageWatcher(store, data_dir, RESERVE)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(watcher.run)
            yield store, watcher
            nursery.cancel_scope.cancel()
    finally:
        store.close()


async def until(condition: Callable[[], bool], within: float = 10) -> None:
    with trio.fail_after(within):
        while not condition():
            await trio.sleep(0.02)


def add(name: str) -> Callable[[Connection], dict[str, str]]:
    return lambda conn: ws_store.sync_configured(conn, [name])


async def test_a_full_disk_frees_the_reserve_for_terraform_holds_writes_and_resumes_when_freed(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "data", 20) as data:
        async with watched(data, data) as (store, watcher):
            reserve = data / RESERVE_FILE
            assert reserve.stat().st_blocks * 512 >= RESERVE
            filler = FullDisk(data)
            await trio.to_thread.run_sync(filler.start)
            try:
                # The reserve is removed in a worker thread, then the watcher holds the store:
                # wait for both, not for the file alone.
                await until(lambda: not reserve.exists() and store.health.degraded is not None)
                degraded = store.health.degraded
                assert degraded is not None and degraded.problem is Problem.DISK_FULL
                assert "reserve was freed" in degraded.reason
                # The daemon writes nothing more (not even an attempt: the space is terraform's) ...
                with pytest.raises(StorageUnavailable):
                    await store.write(add("a"), patient=False)
                # ... while terraform can still write its state there.
                (data / "terraform.tfstate").write_bytes(b"s" * 1_000_000)
            finally:
                filler.stop()
            await until(lambda: not store.health.failing)
            assert reserve.stat().st_blocks * 512 >= RESERVE
            await store.write(add("a"))


async def test_a_failing_database_is_probed_until_it_answers_even_with_nothing_to_write(
    tmp_path: Path,
) -> None:
    async with watched(tmp_path, tmp_path) as (store, _):
        with ReadOnlyDatabase(tmp_path / "tfward.db"):
            with pytest.raises(StorageUnavailable):
                await store.write(add("b"), patient=False)
            await trio.sleep(1.0)  # probes fail meanwhile
            assert store.health.failing
        await until(lambda: not store.health.failing)  # nobody wrote: the probe found out
