"""The inventory (tfward/store/inventory.py) on a real SQLite file: a sync never
overwrites a newer one and never stays `syncing`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import postgres
import pytest

from tfward.ids import now
from tfward.store import inventory as inv
from tfward.store import workspaces as ws_store
from tfward.store.db import Store
from tfward.store.sealing import Sealer


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(postgres.database_url(tmp_path), sealer=Sealer(bytes(32)))
    store.migrate()
    yield store
    store.close()


def thing(address: str) -> inv.Resource:
    return inv.Resource(address, "managed", "demo_thing", "x", None, "demo", None, address)


def sync(store: Store, ws_id: str, sv: str, serial: int, *addresses: str) -> bool:
    when = now()
    if not store.run_sync(lambda c: inv.begin_sync(c, ws_id, sv, serial, when,
                                                   when + timedelta(seconds=60))):
        return False
    resources = [thing(a) for a in addresses]
    return store.run_sync(lambda c: inv.complete_sync(c, ws_id, sv, serial, resources, when))


def test_a_sync_of_an_older_state_never_overwrites_a_newer_one(store: Store) -> None:
    ws_id = store.run_sync(lambda c: ws_store.sync_configured(c, ["demo"]))["demo"]
    assert sync(store, ws_id, "sv-2", 2, "new.a", "new.b")
    assert not sync(store, ws_id, "sv-1", 1, "old.a")
    when = now()
    # Begun before the newer state was synced, finished after: still refused.
    store.run_sync(lambda c: inv.begin_sync(c, ws_id, "sv-3", 3, when, when))
    assert sync(store, ws_id, "sv-4", 4, "newest.a")
    assert not store.run_sync(lambda c: inv.complete_sync(c, ws_id, "sv-3", 3, [thing("x")], when))
    rows = store.run_sync(lambda c: inv.list_resources(c, workspace_id=ws_id))
    assert [(r["address"], r["state_version_id"]) for r in rows] == [("newest.a", "sv-4")]
    assert status_of(store, ws_id, now())["serial"] == 4


def test_a_sync_whose_lease_ran_out_reads_interrupted_not_syncing(store: Store) -> None:
    ws_id = store.run_sync(lambda c: ws_store.sync_configured(c, ["demo"]))["demo"]
    start = now()
    store.run_sync(lambda c: inv.begin_sync(c, ws_id, "sv-1", 1, start,
                                            start + timedelta(seconds=5)))
    assert status_of(store, ws_id, start)["status"] == "syncing"
    later = start + timedelta(seconds=6)
    status = status_of(store, ws_id, later)
    assert status["status"] == "interrupted" and status["started_at"] == start
    store.run_sync(lambda c: inv.fail_sync(c, ws_id, "sv-1", "disk full"))
    failed = status_of(store, ws_id, later)
    assert (failed["status"], failed["error"]) == ("failed", "disk full")


def status_of(store: Store, ws_id: str, when: datetime) -> dict[str, Any]:
    status = store.run_sync(lambda c: inv.sync_status(c, ws_id, when))
    assert status is not None
    return status
