"""The release state machine (tfward/releases/model.py), pure: every transition from the
statuses that matter, the refusals, and the counts after each."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tfward.errors import InvalidTransition
from tfward.releases import model
from tfward.releases.model import Counts, Item, ItemStatus, Release, ReleaseStatus

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=1)
BATCHES = [["dev-a", "dev-b"], ["stg"], ["prod-eu", "prod-us"]]

S, F, K, C, P, R = (
    ItemStatus.SUCCEEDED,
    ItemStatus.FAILED,
    ItemStatus.SKIPPED,
    ItemStatus.CANCELLED,
    ItemStatus.PENDING,
    ItemStatus.RUNNING,
)


def _new() -> Release:
    ids = [f"ri-{ws}" for batch in BATCHES for ws in batch]
    return model.new_release("rel-1", "r1", BATCHES, ids, T0)


def _running() -> Release:
    return model.start(_new(), T0)


def _claimed(*workspaces: str, release: Release | None = None) -> Release:
    release = release or _running()
    for ws in workspaces:
        release = model.claim(release, f"ri-{ws}", f"run-{ws}", T0)
    return release


def _succeeded(*workspaces: str, release: Release | None = None) -> Release:
    release = release or _running()
    for ws in workspaces:
        release = model.claim(release, f"ri-{ws}", f"run-{ws}", T0)
        release = model.settle(release, f"ri-{ws}", S, T1)
    return release


def _statuses(release: Release) -> dict[str, ItemStatus]:
    return {i.workspace: i.status for i in release.items}


def _assert_exact(release: Release) -> None:
    assert release.counts == Counts.of(release.items)
    by_status = {s: len(release.with_status(s)) for s in ItemStatus}
    assert sum(by_status.values()) == release.counts.total == len(release.items)


def test_a_new_release_is_pending_with_its_items_in_batch_order() -> None:
    release = _new()
    assert release.status is ReleaseStatus.PENDING
    assert [[i.workspace for i in batch] for batch in release.batches] == BATCHES
    assert [i.batch for i in release.items] == [1, 1, 2, 3, 3]
    assert release.counts == Counts(total=5)
    assert model.current_batch(release) == 1


@pytest.mark.parametrize(
    "batches",
    [[], [[]], [["a"], []]],
    ids=["no-batch", "an-empty-batch", "an-empty-later-batch"],
)
def test_a_release_needs_batches_that_are_not_empty(batches: list[list[str]]) -> None:
    with pytest.raises(InvalidTransition):
        model.new_release("rel-1", "r", batches, ["ri-a"], T0)


def test_starting_a_pending_release_makes_it_running_once() -> None:
    release = _running()
    assert release.status is ReleaseStatus.RUNNING and release.started_at == T0
    with pytest.raises(InvalidTransition, match="it is running"):
        model.start(release, T0)


def test_claiming_an_item_records_its_run_and_bumps_the_version() -> None:
    before = _running()
    after = model.claim(before, "ri-dev-a", "run-1", T1)
    item = after.item("ri-dev-a")
    assert (item.status, item.run_id, item.started_at) == (R, "run-1", T1)
    assert after.version == before.version + 1
    _assert_exact(after)


@pytest.mark.parametrize(
    ("build", "item", "max_parallel", "words"),
    [
        (_new, "ri-dev-a", 0, "the release is pending"),
        (lambda: _claimed("dev-a"), "ri-dev-a", 0, "it is running"),
        (_running, "ri-stg", 0, "it is in batch 2, the current is 1"),
        (lambda: _succeeded("dev-a"), "ri-stg", 0, "it is in batch 2, the current is 1"),
        (lambda: _claimed("dev-a"), "ri-dev-b", 1, "at most 1"),
        (lambda: model.request_cancel(_claimed("dev-a"), T1), "ri-dev-b", 0, "it is skipped"),
        (
            lambda: model.settle(_claimed("dev-a", "dev-b"), "ri-dev-a", F, T1),
            "ri-stg",
            0,
            "it is skipped",
        ),
    ],
    ids=[
        "release-not-started",
        "item-already-running",
        "a-later-batch",
        "a-later-batch-while-the-current-is-unfinished",
        "max-parallel-reached",
        "release-cancelled",
        "release-failing",
    ],
)
def test_claiming_is_refused_unless_the_item_may_start_now(
    build: Callable[[], Release], item: str, max_parallel: int, words: str
) -> None:
    with pytest.raises(InvalidTransition, match=words):
        model.claim(build(), item, "run-x", T1, max_parallel=max_parallel)


def test_the_next_batch_may_start_once_every_item_of_the_current_one_succeeded() -> None:
    release = _succeeded("dev-a", "dev-b")
    assert model.current_batch(release) == 2
    release = model.claim(release, "ri-stg", "run-stg", T1)
    assert release.item("ri-stg").status is R


def test_every_item_succeeding_makes_the_release_succeed_with_exact_counts() -> None:
    release = _succeeded("dev-a", "dev-b", "stg", "prod-eu", "prod-us")
    assert release.status is ReleaseStatus.SUCCEEDED and release.finished_at == T1
    assert release.counts == Counts(total=5, succeeded=5)
    assert model.current_batch(release) is None


def test_a_failure_skips_every_item_not_started_and_waits_for_the_running_ones() -> None:
    release = _succeeded("dev-a", "dev-b")
    release = _claimed("stg", release=release)
    release = model.settle(release, "ri-stg", F, T1, error="run run-stg failed: apply: boom")
    assert release.status is ReleaseStatus.FAILED
    assert _statuses(release) == {"dev-a": S, "dev-b": S, "stg": F, "prod-eu": K, "prod-us": K}
    assert release.counts == Counts(total=5, succeeded=2, failed=1, skipped=2)
    assert release.error == "stg (batch 2): run run-stg failed: apply: boom"


def test_the_other_running_item_of_a_failing_batch_finishes_and_may_succeed() -> None:
    release = _claimed("dev-a", "dev-b")
    release = model.settle(release, "ri-dev-a", F, T1, error="boom")
    assert release.status is ReleaseStatus.RUNNING, "dev-b still runs"
    assert _statuses(release) == {"dev-a": F, "dev-b": R, "stg": K, "prod-eu": K, "prod-us": K}
    _assert_exact(release)
    release = model.settle(release, "ri-dev-b", S, T1)
    assert release.status is ReleaseStatus.FAILED
    assert release.counts == Counts(total=5, succeeded=1, failed=1, skipped=3)
    assert release.error == "dev-a (batch 1): boom", "the first failure is kept"


def test_items_of_the_failing_batch_that_wait_for_room_are_skipped_too() -> None:
    release = model.claim(_running(), "ri-dev-a", "run-a", T0, max_parallel=1)
    release = model.settle(release, "ri-dev-a", F, T1)
    assert _statuses(release)["dev-b"] is K
    assert release.status is ReleaseStatus.FAILED


def test_a_run_cancelled_by_someone_else_fails_the_release() -> None:
    release = model.settle(_claimed("dev-a", "dev-b"), "ri-dev-a", C, T1, error="cancelled")
    release = model.settle(release, "ri-dev-b", S, T1)
    assert release.status is ReleaseStatus.FAILED
    assert release.counts == Counts(total=5, succeeded=1, cancelled=1, skipped=3)


def test_an_item_that_cannot_start_fails_from_pending() -> None:
    release = model.settle(_running(), "ri-dev-a", F, T1, error="not configured")
    assert _statuses(release)["dev-a"] is F and release.status is ReleaseStatus.FAILED


@pytest.mark.parametrize(
    ("build", "item", "outcome", "words"),
    [
        (_running, "ri-dev-a", S, "it is pending"),
        (lambda: _succeeded("dev-a"), "ri-dev-a", F, "it is succeeded"),
        (_claimed, "ri-dev-a", K, "cannot end as skipped"),
        (lambda: _claimed("dev-a"), "ri-dev-a", P, "cannot end as pending"),
        (_new, "ri-dev-a", F, "it is pending"),
    ],
    ids=[
        "success-of-an-item-never-started",
        "an-item-already-settled",
        "skipped-is-not-an-outcome",
        "pending-is-not-an-outcome",
        "a-release-not-started",
    ],
)
def test_settling_is_refused_for_items_that_are_not_running(
    build: Callable[[], Release], item: str, outcome: ItemStatus, words: str
) -> None:
    with pytest.raises(InvalidTransition, match=words):
        model.settle(build(), item, outcome, T1)


def test_cancelling_a_pending_release_skips_everything_and_ends_it() -> None:
    release = model.request_cancel(_new(), T1)
    assert release.status is ReleaseStatus.CANCELLED
    assert release.counts == Counts(total=5, skipped=5)


def test_cancelling_a_running_release_skips_the_rest_and_waits_for_its_running_items() -> None:
    release = model.request_cancel(_claimed("dev-a", "dev-b"), T1)
    assert release.status is ReleaseStatus.RUNNING and release.cancel_requested_at == T1
    assert _statuses(release) == {"dev-a": R, "dev-b": R, "stg": K, "prod-eu": K, "prod-us": K}
    assert model.request_cancel(release, T1) == release, "idempotent"
    release = model.settle(release, "ri-dev-a", C, T1)
    release = model.settle(release, "ri-dev-b", S, T1)
    assert release.status is ReleaseStatus.CANCELLED
    assert release.counts == Counts(total=5, succeeded=1, skipped=3, cancelled=1)


def test_a_finished_release_cannot_be_cancelled() -> None:
    with pytest.raises(InvalidTransition, match="it is succeeded"):
        model.request_cancel(_succeeded("dev-a", "dev-b", "stg", "prod-eu", "prod-us"), T1)


def test_counts_are_exact_after_every_transition_of_a_whole_release() -> None:
    release = _new()
    steps: list[Callable[[Release], Release]] = [
        lambda r: model.start(r, T0),
        lambda r: model.claim(r, "ri-dev-a", "run-a", T0),
        lambda r: model.claim(r, "ri-dev-b", "run-b", T0),
        lambda r: model.settle(r, "ri-dev-a", S, T1),
        lambda r: model.settle(r, "ri-dev-b", S, T1),
        lambda r: model.claim(r, "ri-stg", "run-s", T1),
        lambda r: model.settle(r, "ri-stg", S, T1),
        lambda r: model.claim(r, "ri-prod-eu", "run-e", T1),
        lambda r: model.claim(r, "ri-prod-us", "run-u", T1),
        lambda r: model.settle(r, "ri-prod-us", F, T1),
        lambda r: model.settle(r, "ri-prod-eu", S, T1),
    ]
    versions = [release.version]
    for step in steps:
        release = step(release)
        _assert_exact(release)
        versions.append(release.version)
    assert versions == sorted(set(versions)), "every transition bumps the version"
    assert release.status is ReleaseStatus.FAILED
    assert release.counts == Counts(total=5, succeeded=4, failed=1)


@pytest.mark.parametrize(
    ("statuses", "word"),
    [
        ([P, P], "pending"),
        ([R, P], "running"),
        ([S, P], "running"),
        ([S, S], "succeeded"),
        ([F, R], "running"),
        ([F, S], "failed"),
        ([C, K], "cancelled"),
        ([S, K], "skipped"),
        ([K, K], "skipped"),
    ],
)
def test_a_batch_is_summed_up_by_its_most_telling_item(
    statuses: list[ItemStatus], word: str
) -> None:
    items = [Item(f"ri-{n}", 1, n, f"ws{n}", status=s) for n, s in enumerate(statuses)]
    assert model.batch_status(items) == word
