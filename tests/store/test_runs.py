"""Persistence of runs (tfward/store/runs.py) on a real database (SQLite, or PostgreSQL under
TFWARD_TEST_DATABASE=postgresql): a created run reads back as `create_run` returned it, the
columns only the pipeline writes, and the release a release item's run belongs to."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import pytest
from sqlalchemy import Connection, select

from tfward.runs.model import Operation, Run, Status
from tfward.store import artifacts, changes
from tfward.store import releases as release_store
from tfward.store import runs as run_store
from tfward.store import workspaces as ws_store
from tfward.store.changes import Key
from tfward.store.db import Store
from tfward.store.tables import release_items, runs


@pytest.fixture
def ws_id(store: Store) -> str:
    return store.run_sync(lambda c: ws_store.sync_configured(c, ["app"]))["app"]


def _plain(conn: Connection, ws_id: str) -> Run:
    return run_store.create_run(
        conn, workspace_id=ws_id, workspace_name="app", operation=Operation.PLAN, auto_apply=False
    )


def test_a_created_run_reads_back_as_create_run_returned_it_with_every_option(
    store: Store, ws_id: str
) -> None:
    def create(conn: Connection) -> tuple[Run, Run]:
        cv = artifacts.put_configuration(conn, ws_id, b"archive", 1, "sha-app")
        plain = _plain(conn, ws_id)
        full = run_store.create_run(
            conn,
            workspace_id=ws_id,
            workspace_name="app",
            operation=Operation.PLAN_AND_APPLY,
            auto_apply=True,
            message="ship it",
            targets=["null_resource.a", "null_resource.b"],
            replace=["null_resource.c"],
            created_by="alice",
            pinned_configuration_version_id=cv.id,
            variable_overrides={"size": 3, "note": None},
            source_run_id=plain.id,
            refresh_only=True,
            notified=False,
        )
        return plain, full

    plain, full = store.run_sync(create)
    for made in (plain, full):
        assert store.run_sync(partial(run_store.get_run, run_id=made.id)) == made
    assert full.configuration_sha256 == "sha-app"
    assert full.variable_overrides == {"size": 3, "note": None}
    assert (plain.status, plain.targets, plain.variable_overrides) == (Status.PENDING, (), None)
    rows = store.run_sync(
        lambda c: c.execute(
            select(runs.c.seq, runs.c.variable_overrides.is_(None)).order_by(runs.c.seq)
        ).all()
    )
    # One after the other in the FIFO queue; no overrides is SQL NULL, not a JSON null.
    assert [tuple(row) for row in rows] == [(1, True), (2, False)]


def test_the_configuration_and_the_state_a_run_is_planned_against_are_read_back(
    store: Store, ws_id: str
) -> None:
    def record(conn: Connection) -> tuple[str, str, changes.Changes]:
        run = _plain(conn, ws_id)
        cv = artifacts.put_configuration(conn, ws_id, b"archive", 1, "sha-app")
        changes.take(conn)
        run_store.set_configuration(conn, run.id, cv.id, "sv-1")
        return run.id, cv.id, changes.take(conn)

    run_id, cv_id, touched = store.run_sync(record)
    assert set(touched) == {Key.run(run_id), Key.workspace(ws_id)}
    assert store.run_sync(lambda c: run_store.planned_state_version(c, run_id)) == "sv-1"
    assert store.run_sync(lambda c: run_store.get_run(c, run_id)).configuration_sha256 == (
        "sha-app"
    )
    store.run_sync(lambda c: run_store.set_configuration(c, run_id, cv_id, None))
    assert store.run_sync(lambda c: run_store.planned_state_version(c, run_id)) is None
    assert store.run_sync(lambda c: run_store.planned_state_version(c, "run-unknown")) is None

    def unknown(conn: Connection) -> changes.Changes:
        run_store.set_configuration(conn, "run-unknown", cv_id, None)
        return changes.take(conn)

    assert store.run_sync(unknown) == {}  # nothing changed, and no view is told it did


def test_a_change_of_a_release_items_run_is_a_change_of_its_release(
    store: Store, ws_id: str
) -> None:
    def start(conn: Connection) -> tuple[str, str, changes.Changes]:
        release = release_store.create_release(conn, name="r", batches=[["app"]])
        item_id = conn.execute(select(release_items.c.id)).scalar_one()
        run = run_store.create_run(
            conn,
            workspace_id=ws_id,
            workspace_name="app",
            operation=Operation.PLAN_AND_APPLY,
            auto_apply=True,
            release_item_id=item_id,
        )
        changes.take(conn)
        run_store.transition(conn, run.id, lambda r: replace(r, warnings=("noted",)))
        return release.id, run.id, changes.take(conn)

    release_id, run_id, touched = store.run_sync(start)
    assert set(touched) == {Key.run(run_id), Key.workspace(ws_id), Key.release(release_id)}
    plain = store.run_sync(lambda c: _plain(c, ws_id))
    touched = store.run_sync(
        lambda c: (run_store.transition(c, plain.id, lambda r: replace(r, warnings=("noted",))),
                   changes.take(c))[1]
    )  # fmt: skip
    assert set(touched) == {Key.run(plain.id), Key.workspace(ws_id)}
