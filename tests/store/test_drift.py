"""Workspace drift (tfward/store/drift.py) on a real SQLite file: a check against a
state that moved on is ignored, a new finding is notified once, only a newer state clears it."""

from __future__ import annotations

import json

from sqlalchemy import Connection, update

from tfward.ids import now
from tfward.runs.model import Operation
from tfward.store import drift as drift_store
from tfward.store import outbox as outbox_store
from tfward.store import runs as run_store
from tfward.store import states
from tfward.store import workspaces as ws_store
from tfward.store.db import Store
from tfward.store.tables import runs


def put_state(conn: Connection, ws_id: str, serial: int) -> states.StateVersion:
    raw = json.dumps({"serial": serial, "lineage": "l", "resources": []}).encode()
    version = states.store(conn, ws_id, states.parse_state(raw), kind="apply", run_id=None)
    assert version is not None
    return version


def check(conn: Connection, ws_id: str, planned: str | None, addresses: list[str]) -> bool | None:
    """A drift-check run planned against `planned`, recording `addresses`."""
    run = run_store.create_run(conn, workspace_id=ws_id, workspace_name="demo",
                               operation=Operation.PLAN, auto_apply=False, refresh_only=True)
    conn.execute(update(runs).where(runs.c.id == run.id)
                 .values(planned_state_version_id=planned))
    return drift_store.record_check(conn, ws_id, "demo", run.id, addresses, now())


def alerts(conn: Connection) -> list[str]:
    return [r["payload"]["message"] for r in outbox_store.list_rows(conn, limit=None)
            if r["payload"].get("trigger") == "assessment:drifted"]


def test_drift_is_notified_when_found_or_changed_and_cleared_only_by_a_newer_state(
    store: Store,
) -> None:
    ws_id = store.run_sync(lambda c: ws_store.sync_configured(c, ["demo"]))["demo"]
    first = store.run_sync(lambda c: put_state(c, ws_id, 1))
    assert store.run_sync(lambda c: check(c, ws_id, first.id, ["a.x", "b.x"])) is True
    assert store.run_sync(lambda c: check(c, ws_id, first.id, ["b.x", "a.x"])) is True
    assert store.run_sync(lambda c: check(c, ws_id, first.id, ["a.x"])) is True
    assert len(store.run_sync(alerts)) == 2  # found, then changed; the repeat said nothing
    assert not store.run_sync(lambda c: drift_store.clear(c, ws_id, "run-old", 1, now()))
    second = store.run_sync(lambda c: put_state(c, ws_id, 2))
    assert store.run_sync(lambda c: check(c, ws_id, first.id, ["z.x"])) is None  # stale check
    assert store.run_sync(lambda c: drift_store.clear(c, ws_id, "run-fix", 2, now()))
    view = store.run_sync(lambda c: drift_store.view(c, ws_id))
    assert view is not None
    assert (view["drifted"], view["addresses"], view["cleared_by_run_id"]) == (
        False, [], "run-fix")
    assert store.run_sync(lambda c: check(c, ws_id, second.id, [])) is False
    assert len(store.run_sync(alerts)) == 2
