"""The counts `GET /metrics` reads from the database (tfward/store/tallies.py), on a real
SQLite file: runs by status, queue depth of configured workspaces, outbox rows, run-task
results and the notification delivery log."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import postgres
import pytest
from sqlalchemy import Connection, update

from tfward.ids import now
from tfward.runs.model import Operation, Status
from tfward.store import deliveries, tallies, tasks
from tfward.store import outbox as ob
from tfward.store import runs as run_store
from tfward.store import workspaces as ws_store
from tfward.store.db import Store
from tfward.store.tables import runs


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(postgres.database_url(tmp_path))
    store.migrate()
    yield store
    store.close()


def new_run(conn: Connection, ws_ids: dict[str, str], name: str) -> str:
    return run_store.create_run(
        conn,
        workspace_id=ws_ids[name],
        workspace_name=name,
        operation=Operation.PLAN_AND_APPLY,
        auto_apply=False,
    ).id


def test_runs_are_counted_by_status_with_every_status_present(store: Store) -> None:
    ws = store.run_sync(lambda c: ws_store.sync_configured(c, ["a"]))
    ids = store.run_sync(lambda c: [new_run(c, ws, "a") for _ in range(3)])
    store.run_sync(
        lambda c: c.execute(update(runs).where(runs.c.id == ids[0]).values(status="applied"))
    )
    found = store.run_sync(tallies.read).runs
    assert found == {str(s): 0 for s in Status} | {"pending": 2, "applied": 1}


def test_queue_depth_counts_pending_runs_of_configured_workspaces_only(store: Store) -> None:
    ws = store.run_sync(lambda c: ws_store.sync_configured(c, ["a", "idle", "gone"]))
    store.run_sync(lambda c: [new_run(c, ws, name) for name in ("a", "a", "gone")])
    store.run_sync(lambda c: ws_store.sync_configured(c, ["a", "idle"]))
    assert store.run_sync(tallies.read).queued == {"a": 2, "idle": 0}


def test_outbox_rows_are_counted_by_kind_and_status_and_dead_rows_show(store: Store) -> None:
    for key in ("one", "two"):
        store.run_sync(functools.partial(ob.enqueue, kind="inventory_sync", payload={}, key=key))
    (job,) = store.run_sync(lambda c: ob.claim(c, now(), 1, 60.0))
    store.run_sync(lambda c: ob.fail(c, job, "gave up", None))
    found = store.run_sync(tallies.read).outbox
    assert found == {
        ("inventory_sync", "queued"): 1,
        ("inventory_sync", "running"): 0,
        ("inventory_sync", "done"): 0,
        ("inventory_sync", "dead"): 1,
    }


def test_run_task_results_are_counted_by_task_and_status(store: Store) -> None:
    ws = store.run_sync(lambda c: ws_store.sync_configured(c, ["a"]))
    run_id = store.run_sync(lambda c: new_run(c, ws, "a"))
    when = now()
    results = [
        tasks.NewResult(
            f"rtr-{i}",
            run_id,
            ws["a"],
            name,
            "post_plan",
            "mandatory",
            b"",
            f"j{i}",
            when + timedelta(hours=1),
        )
        for i, name in enumerate(["scan", "scan", "lint"])
    ]
    store.run_sync(lambda c: tasks.create(c, results, when))
    store.run_sync(lambda c: tasks.finish(c, "rtr-0", tasks.PASSED, when, message=None))
    store.run_sync(lambda c: tasks.finish(c, "rtr-2", tasks.FAILED, when, message="no"))
    assert store.run_sync(tallies.read).run_tasks == {
        ("scan", "passed"): 1,
        ("scan", "pending"): 1,
        ("lint", "failed"): 1,
    }


def test_delivery_attempts_and_failures_are_counted_per_destination(store: Store) -> None:
    def attempt(destination: str, number: int, delivered: bool) -> deliveries.Attempt:
        return deliveries.Attempt(
            "ob-1",
            destination,
            "run:created",
            None,
            None,
            number,
            delivered,
            200 if delivered else 503,
            5,
            None if delivered else "503",
            now(),
        )

    log = [attempt("hook", 1, False), attempt("hook", 2, False), attempt("hook", 3, True)]
    log.append(attempt("chat", 1, True))
    store.run_sync(lambda c: [deliveries.record(c, a) for a in log])
    assert store.run_sync(tallies.read).deliveries == {"hook": (3, 2), "chat": (1, 0)}
