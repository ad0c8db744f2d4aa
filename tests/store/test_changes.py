"""Change events (tfward/store/changes.py): a real store on a real SQLite file publishes what a
committed transaction changed, to the waiters of exactly those keys."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing
from sqlalchemy import Connection

from tfward.runs.model import Operation, Run
from tfward.store import runs as run_store
from tfward.store import workspaces as ws_store
from tfward.store.changes import OUTBOX, ChangeHub, Key, Topic
from tfward.store.db import Store, sqlite_url


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(sqlite_url(tmp_path / "tfward.db"))
    store.migrate()
    yield store
    store.close()


def _runs(store: Store, count: int) -> tuple[str, list[Run]]:
    def create(conn: Connection) -> tuple[str, list[Run]]:
        ws_id = ws_store.sync_configured(conn, ["demo"])["demo"]
        made = [
            run_store.create_run(
                conn,
                workspace_id=ws_id,
                workspace_name="demo",
                operation=Operation.PLAN_AND_APPLY,
                auto_apply=False,
            )
            for _ in range(count)
        ]
        return ws_id, made

    return store.run_sync(create)


class Refused(Exception):
    pass


def _note(conn: Connection, run_id: str) -> None:
    """A change of the run's row (one more warning), saved as every run change is."""
    run_store.transition(conn, run_id, lambda r: replace(r, warnings=(*r.warnings, "noted")))


async def test_a_write_tells_its_keys_only_once_it_committed(store: Store) -> None:
    ws_id, (run,) = _runs(store, 1)
    with store.changes.subscribe(Key.run(run.id)) as sub:

        def touch_then_fail(conn: Connection) -> None:
            ws_store.acquire_lock(conn, ws_id, run_id=None, by="someone")
            _note(conn, run.id)
            raise Refused("rolled back")

        with pytest.raises(Refused):
            await store.write(touch_then_fail)
        assert not sub.pending
        await store.write(lambda c: _note(c, run.id))
        assert sub.pending
        assert await sub.wait() == {Key.run(run.id)}


async def test_a_waiter_hears_only_its_keys_and_a_topic_waiter_learns_which_changed(
    store: Store,
) -> None:
    ws_id, (a, b) = _runs(store, 2)
    every_workspace = Key.every(Topic.WORKSPACE)
    with (
        store.changes.subscribe(Key.run(a.id)) as on_a,
        store.changes.subscribe(every_workspace) as overview,
        store.changes.subscribe(OUTBOX) as outbox,
    ):
        for _ in range(100):
            await store.write(lambda c: _note(c, b.id))
        assert not on_a.pending and not outbox.pending
        assert await overview.wait() == {Key.workspace(ws_id)}
        await store.write(lambda c: ws_store.acquire_lock(c, ws_id, run_id=None, by="me"))
        assert not on_a.pending
        assert await overview.wait() == {Key.workspace(ws_id)}


async def test_a_change_between_subscribing_and_waiting_is_not_missed(store: Store) -> None:
    _, (run,) = _runs(store, 1)
    with store.changes.subscribe(Key.run(run.id)) as sub:
        # The waiter reads here; the change commits before it waits.
        await store.write(lambda c: _note(c, run.id))
        with trio.fail_after(5):
            assert await sub.wait() == {Key.run(run.id)}


async def test_a_wait_with_nothing_heard_ends_at_the_fallback_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = ChangeHub(fallback=30)
    with hub.subscribe(Key.run("run-x")) as sub:
        start = trio.current_time()
        assert await sub.wait() == set()
        assert trio.current_time() - start == pytest.approx(30)


async def test_closing_the_hub_wakes_every_waiter_for_good() -> None:
    hub = ChangeHub()
    woken: list[set[Key]] = []
    with hub.subscribe(Key.run("run-x")) as sub:
        async with trio.open_nursery() as nursery:

            async def waiter() -> None:
                woken.append(await sub.wait())

            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            hub.close()
        assert woken == [set()]
        with trio.fail_after(1):
            assert await sub.wait() == set()  # at once, every time


def test_leaving_a_subscription_forgets_it() -> None:
    hub = ChangeHub()
    with hub.subscribe(Key.run("run-x"), Key.log("run-x")):
        assert hub.watching(Key.run("run-x")) == 1
    assert hub.watching(Key.run("run-x")) == 0 and not hub._subs
    hub.publish([Key.run("run-x")])
    assert hub.wakeups[Topic.RUN] == 0 and hub.published[Topic.RUN] == 1
