"""Follow-up outbox rows (tfward/store/followups.py) on a real database (SQLite, or PostgreSQL
under TFWARD_TEST_DATABASE=postgresql): what the termination funnel's final transaction queues
after a run that applied."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import Connection, insert

from tfward.ids import now
from tfward.runs.model import Operation, Run, Status
from tfward.store import followups
from tfward.store import outbox as ob
from tfward.store import runs as run_store
from tfward.store import workspaces as ws_store
from tfward.store.db import Store
from tfward.store.tables import state_versions, workspace_drift


@pytest.fixture
def ws_id(store: Store) -> str:
    return store.run_sync(lambda c: ws_store.sync_configured(c, ["app", "db"]))["app"]


def _applied(store: Store, ws_id: str, serials: tuple[int, ...]) -> Run:
    """A run of `app` that ended `applied` having stored these state serials, in this order."""

    def create(conn: Connection) -> Run:
        run = run_store.create_run(
            conn, workspace_id=ws_id, workspace_name="app", operation=Operation.PLAN_AND_APPLY,
            auto_apply=True, notified=False,
        )  # fmt: skip
        for serial in serials:
            conn.execute(
                insert(state_versions).values(
                    id=f"sv-{run.id[-6:]}-{serial}", workspace_id=ws_id, serial=serial,
                    lineage="l", sha256="s", state=b"{}", outputs=b"{}", resource_count=0,
                    kind="apply", run_id=run.id, created_at=now(),
                )
            )  # fmt: skip
        return replace(run, status=Status.APPLIED)

    return store.run_sync(create)


def _queued(store: Store) -> list[tuple[str, dict[str, object]]]:
    rows = store.run_sync(lambda c: ob.list_rows(c, status=ob.QUEUED))
    return [(row["kind"], row["payload"]) for row in rows]


def test_the_newest_state_a_run_stored_is_its_state_version(store: Store, ws_id: str) -> None:
    run = _applied(store, ws_id, (1, 3, 2))
    sv = store.run_sync(lambda c: followups.state_version_of_run(c, run.id))
    assert sv == (f"sv-{run.id[-6:]}-3", 3)
    none = _applied(store, ws_id, ())
    assert store.run_sync(lambda c: followups.state_version_of_run(c, none.id)) is None


def test_an_applied_run_queues_a_trigger_per_downstream_workspace_and_a_drift_clear_if_drifted(
    store: Store, ws_id: str
) -> None:
    run = _applied(store, ws_id, (4,))
    store.run_sync(lambda c: followups.after_finish(c, run, ws_id, ["db"]))
    sv_id = f"sv-{run.id[-6:]}-4"
    trigger = {"source_run_id": run.id, "source_workspace": "app", "workspace": "db",
               "state_version_id": sv_id}  # fmt: skip
    assert _queued(store) == [("run_trigger", trigger)]  # not drifted: nothing to clear
    store.run_sync(
        lambda c: c.execute(
            insert(workspace_drift).values(workspace_id=ws_id, drifted=True, addresses=["a.b"])
        )
    )
    later = _applied(store, ws_id, (5,))
    store.run_sync(lambda c: followups.after_finish(c, later, ws_id, []))
    clear = {"run_id": later.id, "workspace": "app", "state_version_id": f"sv-{later.id[-6:]}-5",
             "serial": 5}  # fmt: skip
    assert _queued(store) == [("run_trigger", trigger), ("drift_clear", clear)]


def test_a_run_that_did_not_apply_or_stored_no_state_queues_nothing(
    store: Store, ws_id: str
) -> None:
    store.run_sync(
        lambda c: c.execute(
            insert(workspace_drift).values(workspace_id=ws_id, drifted=True, addresses=["a.b"])
        )
    )
    stored = _applied(store, ws_id, (1,))
    failed = replace(stored, status=Status.FAILED)
    store.run_sync(lambda c: followups.after_finish(c, failed, ws_id, ["db"]))
    nothing = _applied(store, ws_id, ())
    store.run_sync(lambda c: followups.after_finish(c, nothing, ws_id, ["db"]))
    assert _queued(store) == []
