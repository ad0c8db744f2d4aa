"""Membership, leases and fencing in the store (store/cluster.py, store/fencing.py) on a real
database: SQLite, or PostgreSQL under TFWARD_TEST_DATABASE=postgresql; the tests of several
daemons writing at once run on PostgreSQL always (tests/postgres.py), as does the migration
check: every migration runs on an empty PostgreSQL database and ends at tables.py's schema."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import postgres
import pytest
import trio
import trio.lowlevel
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from tfward.cluster import model
from tfward.errors import FencedOut
from tfward.store import cluster
from tfward.store import workspaces as ws_store
from tfward.store.changes import Key
from tfward.store.db import Store
from tfward.store.fencing import Fence, fenced
from tfward.store.sealing import Sealer
from tfward.store.tables import metadata

NAMES = [f"ws{i:02d}" for i in range(20)]


def open_store(url: str) -> Store:
    store = Store(url, sealer=Sealer(bytes(32)))
    store.migrate()
    return store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = open_store(postgres.database_url(tmp_path))
    yield store
    store.close()


@pytest.fixture
def pg_url() -> str:
    return postgres.fresh_database_url()


def me(node_id: str) -> model.Node:
    t = datetime.now(UTC)
    return model.Node(node_id, "host", f"/data/{node_id}", t, t, pid=1)


async def tick(store: Store, node_id: str, ttl: float = 15) -> cluster.Tick:
    decide = functools.partial(lambda v, n: model.decide(v, n, ttl), n=node_id)
    return await store.write(lambda c: cluster.tick(c, node_id, ttl, decide), lease=True)


def test_every_migration_runs_on_an_empty_postgresql_database_and_ends_at_tables_py() -> None:
    store = Store(postgres.fresh_database_url(migrated=False))
    try:
        store.migrate()

        def diff(conn: Connection) -> list[object]:
            return list(compare_metadata(MigrationContext.configure(conn), metadata))

        assert store.run_sync(diff) == []
    finally:
        store.close()


async def test_a_daemon_alone_owns_every_workspace_and_gives_them_all_back_on_leaving(
    store: Store,
) -> None:
    ids = store.run_sync(lambda c: ws_store.sync_configured(c, NAMES))
    await store.write(lambda c: cluster.join(c, me("a")))
    first = await tick(store, "a")
    assert set(first.owned) == set(ids.values()) and set(first.owned.values()) == {1}
    assert first.taken == {ws: None for ws in ids.values()}
    again = await tick(store, "a")
    assert again.owned == first.owned and again.taken == {}  # renewed, same epochs
    assert await store.read(lambda c: cluster.owner_of(c, ids["ws00"])) == "a"
    assert await store.write(lambda c: cluster.leave(c, "a")) == 20
    assert await store.read(lambda c: cluster.owner_of(c, ids["ws00"])) is None
    node = await store.read(lambda c: cluster.node(c, "a"))
    assert node is not None and node.left_at is not None


async def test_three_daemons_ticking_at_once_share_the_workspaces_each_with_one_owner(
    pg_url: str,
) -> None:
    stores = [open_store(pg_url) for _ in range(3)]
    try:
        stores[0].run_sync(lambda c: ws_store.sync_configured(c, NAMES))
        for store, name in zip(stores, "abc", strict=True):
            await store.write(lambda c, n=name: cluster.join(c, me(n)))  # type: ignore[misc]
        owned: dict[str, dict[str, int]] = {}

        async def ticks(store: Store, name: str) -> None:
            for _ in range(4):
                try:
                    owned[name] = (await tick(store, name)).owned
                except cluster.LeaseConflict:
                    continue  # lost a race: the next tick sees the winner
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            for store, name in zip(stores, "abc", strict=True):
                nursery.start_soon(ticks, store, name)
        for name in "abc":
            owned[name] = (await tick(stores[0], name)).owned
        everyone = [ws for mine in owned.values() for ws in mine]
        assert sorted(everyone) == sorted(set(everyone)) and len(everyone) == 20
        assert all(6 <= len(mine) <= 7 for mine in owned.values()), owned
    finally:
        for store in stores:
            store.close()


async def test_a_daemon_whose_lease_was_taken_over_can_never_write_for_the_workspace_again(
    store: Store,
) -> None:
    ids = store.run_sync(lambda c: ws_store.sync_configured(c, ["demo"]))
    ws = ids["demo"]
    for name in "ab":
        await store.write(lambda c, n=name: cluster.join(c, me(n)))  # type: ignore[misc]
    # a owns the workspace with a lease that has run out already (a paused a long time).
    epoch = (await tick(store, "a", ttl=-1)).owned[ws]
    old = Fence(ws, "a", epoch)
    with fenced(old):
        await store.write(lambda c: ws_store.acquire_lock(c, ws, run_id=None, by="a's run"))
        await store.write(lambda c: ws_store.release_lock(c, ws, run_id=None, by="a's run"))
    taken = await tick(store, "b")
    assert taken.owned[ws] == epoch + 1 and taken.taken == {ws: "a"}
    with fenced(old), pytest.raises(FencedOut):
        await store.write(lambda c: ws_store.acquire_lock(c, ws, run_id=None, by="a's run"))
    assert await store.read(lambda c: ws_store.get_lock(c, ws)) is None  # nothing written
    with fenced(Fence(ws, "b", epoch + 1)):
        await store.write(lambda c: ws_store.acquire_lock(c, ws, run_id=None, by="b's run"))
    # a's next tick renews nothing of it: the workspace is b's.
    assert ws not in (await tick(store, "a")).owned


async def test_what_one_daemon_writes_is_heard_by_the_others_after_the_commit_not_its_own(
    pg_url: str,
) -> None:
    writer, other = open_store(pg_url), open_store(pg_url)
    listeners = [cluster.Listener(s.engine, s.origin) for s in (writer, other)]
    try:
        for listener in listeners:
            await trio.to_thread.run_sync(listener.receive, 0.01)  # LISTEN from now on
        ws = writer.run_sync(lambda c: ws_store.sync_configured(c, ["demo"]))["demo"]
        await writer.write(lambda c: ws_store.acquire_lock(c, ws, run_id=None, by="someone"))
        mine, theirs = [await trio.to_thread.run_sync(li.receive, 5.0) for li in listeners]
        assert Key.workspace(ws) in theirs.changes and mine.changes == set()
    finally:
        for listener in listeners:
            listener.close()
        writer.close()
        other.close()
