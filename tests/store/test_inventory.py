"""The inventory (tfward/store/inventory.py) on a real SQLite file: a sync never
overwrites a newer one and never stays `syncing`; a state the daemon stores itself is synced in
the transaction that stores it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from tfward.ids import now
from tfward.store import inventory as inv
from tfward.store import outbox, states
from tfward.store import workspaces as ws_store
from tfward.store.db import Store


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


def state(serial: int, *ids: str, broken: bool = False) -> states.ParsedState:
    """A terraform state with one `demo_thing` instance per id (`broken`: a resource block
    without its type, which the inventory cannot read)."""
    blocks: list[dict[str, Any]] = [
        {"mode": "managed", "type": "demo_thing", "name": f"t{n}",
         "provider": 'provider["registry.terraform.io/tfward/demo"]',
         "instances": [{"attributes": {"id": id_}}]}
        for n, id_ in enumerate(ids)
    ]
    if broken:
        del blocks[0]["type"]
    doc = {"version": 4, "serial": serial, "lineage": "l-1", "outputs": {}, "resources": blocks}
    return states.parse_state(json.dumps(doc).encode())


def inventory_jobs(store: Store) -> int:
    return len(store.run_sync(lambda c: outbox.list_rows(c, kind="inventory_sync")))


def test_a_state_stored_with_the_secrets_is_in_the_inventory_when_its_transaction_commits(
    store: Store,
) -> None:
    ws_id = store.run_sync(lambda c: ws_store.sync_configured(c, ["demo"]))["demo"]
    first = store.run_sync(lambda c: states.store(
        c, ws_id, state(1, "a-1"), kind="apply", run_id=None, secrets=[]))
    assert first is not None and status_of(store, ws_id, now())["serial"] == 1
    second = store.run_sync(lambda c: states.store(
        c, ws_id, state(2, "b-1", "thing-hunter2"), kind="apply", run_id=None,
        secrets=["hunter2"]))
    assert second is not None
    rows = store.run_sync(lambda c: inv.list_resources(c, workspace_id=ws_id))
    assert [(r["address"], r["resource_id"], r["state_version_id"]) for r in rows] == [
        ("demo_thing.t0", "b-1", second.id), ("demo_thing.t1", "thing-***", second.id)]
    status = status_of(store, ws_id, now())
    assert (status["status"], status["state_version_id"]) == ("synced", second.id)
    assert status["started_at"] == status["synced_at"] == second.created_at
    assert inventory_jobs(store) == 0  # no job: nothing to claim, nothing to lag behind


def test_a_state_stored_without_the_secrets_or_unreadable_by_the_inventory_gets_the_job(
    store: Store,
) -> None:
    ws_id = store.run_sync(lambda c: ws_store.sync_configured(c, ["demo"]))["demo"]
    store.run_sync(lambda c: states.store(c, ws_id, state(1, "a-1"), kind="apply", run_id=None))
    assert inventory_jobs(store) == 1 and status_of_none(store, ws_id)
    store.run_sync(lambda c: states.store(
        c, ws_id, state(2, "a-1", broken=True), kind="apply", run_id=None, secrets=[]))
    assert inventory_jobs(store) == 2 and status_of_none(store, ws_id)


def test_syncing_at_once_never_overwrites_a_newer_synced_state(store: Store) -> None:
    ws_id = store.run_sync(lambda c: ws_store.sync_configured(c, ["demo"]))["demo"]
    assert sync(store, ws_id, "sv-5", 5, "new.a")
    when = now()
    assert not store.run_sync(lambda c: inv.sync(c, ws_id, "sv-4", 4, [thing("old.a")], when))
    rows = store.run_sync(lambda c: inv.list_resources(c, workspace_id=ws_id))
    assert [(r["address"], r["state_version_id"]) for r in rows] == [("new.a", "sv-5")]


def status_of_none(store: Store, ws_id: str) -> bool:
    return store.run_sync(lambda c: inv.sync_status(c, ws_id, now())) is None
