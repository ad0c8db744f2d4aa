"""The workspace bundles (tfward/store/workspace_bundles.py) on a real database (SQLite, or
PostgreSQL under TFWARD_TEST_DATABASE=postgresql): each bundle holds what the reads of one
workspace give for it, and reading them costs the same statements for one workspace as for
fifty."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, event, update

from tfward.cluster.model import Plan
from tfward.ids import now
from tfward.runs.masking import SecretMask
from tfward.runs.model import Operation, Status
from tfward.store import cluster, drift, inventory, states
from tfward.store import runs as run_store
from tfward.store import workspaces as ws_store
from tfward.store.db import Store
from tfward.store.tables import runs
from tfward.store.workspace_bundles import Bundle, bundles

SECRET = "tfw-bundle-secret-91c2"
# Written out, not imported: the rule the bundle must keep (`list_runs(..., oldest_first=True)`).
IN_SLOT = (Status.PLANNING, Status.APPLY_PENDING, Status.APPLYING)


def one_by_one(conn: Connection, ws_id: str, name: str) -> Bundle:
    """The bundle as the reads of one workspace give it (what the API read before bundles)."""
    current = run_store.list_runs(
        conn, workspace_id=ws_id, statuses=IN_SLOT, limit=1, oldest_first=True
    )
    queued = run_store.list_runs(conn, workspace_id=ws_id, statuses=(Status.PENDING,), limit=None)
    return Bundle(
        id=ws_id,
        name=name,
        current_run=current[0] if current else None,
        queued_runs=len(queued),
        latest_state=states.current(conn, ws_id),
        lock=ws_store.get_lock(conn, ws_id),
        owner=cluster.owner_of(conn, ws_id),
        inventory=inventory.sync_status(conn, ws_id, now()),
        drift=drift.view(conn, ws_id),
    )


def run_in(conn: Connection, ws_id: str, name: str, status: Status, **values: Any) -> str:
    run = run_store.create_run(
        conn, workspace_id=ws_id, workspace_name=name, operation=Operation.PLAN_AND_APPLY,
        auto_apply=False,
    )  # fmt: skip
    conn.execute(update(runs).where(runs.c.id == run.id).values(status=str(status), **values))
    return run.id


def put_state(conn: Connection, ws_id: str, serial: int) -> states.StateVersion:
    outputs = {
        "password": {"value": "pw-1", "type": "string", "sensitive": True},
        "echo": {"value": f"hello {SECRET}", "type": "string"},
        "serial": {"value": serial, "type": "number"},
    }
    raw = json.dumps({"serial": serial, "lineage": "l", "outputs": outputs, "resources": []})
    parsed = states.parse_state(raw.encode(), SecretMask([SECRET]))
    version = states.store(conn, ws_id, parsed, kind="apply", run_id=None)
    assert version is not None
    return version


def drifted(conn: Connection, ws_id: str, name: str, addresses: list[str]) -> None:
    """A drift check planned against the current state found `addresses`."""
    current = states.current(conn, ws_id)
    check = run_in(
        conn, ws_id, name, Status.PLANNED_AND_FINISHED,
        planned_state_version_id=current.id if current else None, refresh_only=True,
    )  # fmt: skip
    assert drift.record_check(conn, ws_id, name, check, addresses, now()) is not None


def synced(conn: Connection, ws_id: str, sv: states.StateVersion) -> None:
    when = now()
    lease = when + timedelta(minutes=1)
    assert inventory.begin_sync(conn, ws_id, sv.id, sv.serial, when, lease)
    thing = inventory.Resource("a.x", "managed", "demo_thing", "a", None, "demo", None, "1")
    assert inventory.complete_sync(conn, ws_id, sv.id, sv.serial, [thing], when)


def owned(conn: Connection, ws_ids: list[str], node: str = "node-a") -> None:
    cluster.tick(conn, node, 60, lambda view: Plan(take=tuple(ws_ids)))


def everything(conn: Connection, ws_id: str, name: str) -> None:
    """Every fact a bundle holds: an old finished run, the current run holding the lock with a
    newer one in the slot, two queued runs, two states, drift, a synced inventory."""
    run_in(conn, ws_id, name, Status.APPLIED)
    current = run_in(conn, ws_id, name, Status.APPLY_PENDING)
    run_in(conn, ws_id, name, Status.PLANNING)
    run_in(conn, ws_id, name, Status.PENDING)
    run_in(conn, ws_id, name, Status.PENDING)
    ws_store.acquire_lock(conn, ws_id, run_id=current, by="tfward")
    put_state(conn, ws_id, 1)
    synced(conn, ws_id, put_state(conn, ws_id, 2))
    drifted(conn, ws_id, name, ["demo_thing.a"])


def varied(conn: Connection) -> dict[str, str]:
    """Workspaces that differ in every fact; one no longer configured. name -> id."""
    names = ["busy", "drifted", "gone", "interrupted", "locked", "never", "stated", "synced"]
    ids = ws_store.sync_configured(conn, names)
    ws_store.acquire_lock(conn, ids["locked"], run_id=None, by="ann", reason="freeze")
    everything(conn, ids["busy"], "busy")
    for serial in (1, 2, 3):
        put_state(conn, ids["stated"], serial)
    drifted(conn, ids["drifted"], "drifted", ["demo_thing.b", "demo_thing.a"])
    synced(conn, ids["synced"], put_state(conn, ids["synced"], 1))
    gone = put_state(conn, ids["interrupted"], 1)
    when = now() - timedelta(minutes=5)
    inventory.begin_sync(conn, ids["interrupted"], gone.id, 1, when, when + timedelta(minutes=1))
    put_state(conn, ids["gone"], 1)
    owned(conn, [ids[n] for n in names if n != "never"])
    ws_store.sync_configured(conn, [n for n in names if n != "gone"])
    return ids


def test_each_bundle_holds_what_the_reads_of_that_one_workspace_give(store: Store) -> None:
    ids = store.run_sync(varied)

    def read(conn: Connection) -> tuple[list[Bundle], list[Bundle], list[Bundle]]:
        every = bundles(conn)
        asked = bundles(conn, [ids["gone"], ids["busy"], "ws-unknown"])
        expected = [one_by_one(conn, ids[name], name) for name in sorted(ids)]
        return every, asked, expected

    every, asked, expected = store.run_sync(read)
    by_name = {bundle.name: bundle for bundle in expected}
    assert every == [b for b in expected if b.name != "gone"]  # configured, by name
    assert asked == [by_name["busy"], by_name["gone"]]  # asked for by id: configured or not
    busy = by_name["busy"]
    assert busy.current_run is not None and busy.current_run.status == Status.APPLY_PENDING
    assert busy.queued_runs == 2 and busy.lock is not None
    assert busy.lock.run_id == busy.current_run.id
    stated = by_name["stated"].latest_state
    assert stated is not None and stated.serial == 3
    assert stated.outputs["password"]["value"] is None
    assert SECRET not in json.dumps(stated.outputs) and "hello " in stated.outputs["echo"]["value"]
    assert by_name["drifted"].drift is not None and by_name["drifted"].drift["drifted"]
    assert by_name["synced"].inventory is not None
    assert by_name["synced"].inventory["status"] == inventory.SYNCED
    assert by_name["interrupted"].inventory is not None
    assert by_name["interrupted"].inventory["status"] == inventory.INTERRUPTED
    lock = by_name["locked"].lock
    assert lock is not None and (lock.locked_by, lock.run_id) == ("ann", None)
    assert by_name["locked"].owner == "node-a" and by_name["never"] == Bundle(
        ids["never"], "never", None, 0, None, None, None, None, None
    )


def test_reading_bundles_costs_the_same_statements_for_one_workspace_as_for_fifty(
    store: Store,
) -> None:
    def statements(count: int) -> list[str]:
        def build(conn: Connection) -> None:
            names = [f"ws-{count}-{i:02d}" for i in range(count)]
            ids = ws_store.sync_configured(conn, names)
            for name in names:
                everything(conn, ids[name], name)
            owned(conn, list(ids.values()), node=f"node-{count}")

        store.run_sync(build)
        seen: list[str] = []

        def count_it(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            seen.append(statement)

        event.listen(store.engine, "before_cursor_execute", count_it)
        try:
            found = store.run_sync(bundles, reading=True)
        finally:
            event.remove(store.engine, "before_cursor_execute", count_it)
        assert len(found) == count and all(b.current_run and b.drift for b in found)
        return seen

    one = statements(1)
    fifty = statements(50)  # the workspace of the first call is configured no more
    assert len(one) == len(fifty), "\n".join(fifty)
    assert sum(s.lstrip().upper().startswith("SELECT") for s in fifty) == 8, "\n".join(fifty)
