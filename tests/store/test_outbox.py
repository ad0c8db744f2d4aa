"""Outbox rows (tfward/store/outbox.py) on a real SQLite file: claims with a lease,
order per workspace, compare-and-set outcomes, reclaim at start, dead-letter retry."""

from __future__ import annotations

import functools
from datetime import timedelta

import pytest

from tfward.errors import InvalidTransition, NotFound
from tfward.ids import now
from tfward.store import outbox as ob
from tfward.store import workspaces as ws_store
from tfward.store.db import Store


@pytest.fixture
def ws(store: Store) -> dict[str, str]:
    return store.run_sync(lambda c: ws_store.sync_configured(c, ["a", "b"]))


def add(store: Store, key: str, ws_id: str | None = None) -> None:
    store.run_sync(lambda c: ob.enqueue(c, "notify", {"n": key}, key=key,
                                               workspace_id=ws_id))


def claim(store: Store, limit: int = 10, lease: float = 60.0, at: object = None) -> list[ob.Job]:
    when = at or now()
    return store.run_sync(lambda c: ob.claim(c, when, limit, lease))  # type: ignore[arg-type]


def test_a_claim_takes_only_the_first_row_of_each_workspace_and_rows_without_one(
    store: Store, ws: dict[str, str]
) -> None:
    for key, where in [("a1", ws["a"]), ("b1", ws["b"]), ("a2", ws["a"]), ("free", None)]:
        add(store, key, where)
    first = claim(store)
    assert [j.payload["n"] for j in first] == ["a1", "b1", "free"]
    assert all(j.attempts == 1 for j in first)
    assert claim(store) == []  # a2 waits while a1 runs
    assert store.run_sync(lambda c: ob.finish(c, first[0], now()))
    assert [j.payload["n"] for j in claim(store)] == ["a2"]


def test_a_row_waiting_to_be_retried_holds_back_the_later_rows_of_its_workspace(
    store: Store, ws: dict[str, str]
) -> None:
    add(store, "a1", ws["a"])
    add(store, "a2", ws["a"])
    [job] = claim(store)
    later = now() + timedelta(seconds=30)
    assert store.run_sync(lambda c: ob.fail(c, job, "boom", later))
    assert claim(store) == []
    assert store.run_sync(lambda c: ob.next_due(c)) == later
    assert [j.payload["n"] for j in claim(store, at=later)] == ["a1"]


def test_an_expired_lease_makes_the_row_claimable_again_and_the_old_attempt_powerless(
    store: Store, ws: dict[str, str]
) -> None:
    add(store, "a1", ws["a"])
    [old] = claim(store, lease=5.0)
    assert claim(store) == []
    assert store.run_sync(lambda c: ob.next_due(c)) == old.lease_expires_at
    [new] = claim(store, at=old.lease_expires_at)
    assert (new.id, new.attempts) == (old.id, 2)
    assert not store.run_sync(lambda c: ob.finish(c, old, now()))
    assert not store.run_sync(lambda c: ob.fail(c, old, "late", None))
    assert store.run_sync(lambda c: ob.finish(c, new, now()))
    assert store.run_sync(lambda c: ob.get_row(c, new.id))["status"] == "done"


def test_rows_left_running_by_a_dead_process_are_queued_again_at_start(
    store: Store, ws: dict[str, str]
) -> None:
    add(store, "a1", ws["a"])
    add(store, "b1", ws["b"])
    claim(store, lease=3600.0)
    assert store.run_sync(lambda c: ob.reclaim_running(c, now())) == 2
    assert sorted(j.attempts for j in claim(store)) == [2, 2]


def test_only_dead_rows_can_be_retried_and_they_get_a_fresh_set_of_attempts(
    store: Store, ws: dict[str, str]
) -> None:
    add(store, "a1", ws["a"])
    [job] = claim(store)
    with pytest.raises(InvalidTransition, match="it is running"):
        store.run_sync(lambda c: ob.retry_dead(c, job.id, now()))
    store.run_sync(lambda c: ob.fail(c, job, "gone for good", None))
    row = store.run_sync(lambda c: ob.retry_dead(c, job.id, now()))
    assert (row["status"], row["attempts"], row["workspace"]) == ("queued", 0, "a")
    with pytest.raises(NotFound):
        store.run_sync(lambda c: ob.retry_dead(c, "ob-missing", now()))
    assert store.run_sync(ob.counts) == {"queued": 1, "running": 0, "done": 0, "dead": 0}


def test_pruning_takes_only_rows_done_before_the_cutoff_in_batches(store: Store) -> None:
    for key in ("done-1", "done-2", "done-3", "dead", "queued"):
        add(store, key)
    t0 = now()
    jobs = {j.payload["n"]: j for j in claim(store, limit=4, at=t0)}
    for key in ("done-1", "done-2", "done-3"):
        assert store.run_sync(functools.partial(ob.finish, job=jobs[key], when=t0))
    assert store.run_sync(lambda c: ob.fail(c, jobs["dead"], "boom", None))  # no retry: dead
    later = t0 + timedelta(seconds=10)
    assert store.run_sync(lambda c: ob.prune_done(c, t0, 10)) == 0  # none done *before* t0
    assert store.run_sync(lambda c: ob.prune_done(c, later, 2)) == 2  # a batch of at most 2
    assert store.run_sync(lambda c: ob.prune_done(c, later, 2)) == 1
    left = store.run_sync(lambda c: ob.list_rows(c, limit=10))
    assert sorted((r["payload"]["n"], r["status"]) for r in left) == [
        ("dead", "dead"),
        ("queued", "queued"),
    ]
