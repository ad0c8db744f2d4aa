"""The executor's decision (tfward/releases/decide.py), pure: what to do next for a release and
its runs, and what an ended run means for its item."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tfward.releases import decide, model
from tfward.releases.decide import CancelRun, Claim, RunResult, Settle, Start
from tfward.releases.model import ItemStatus, Release
from tfward.runs.model import Status as RunStatus

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=1)
BATCHES = [["dev-a", "dev-b"], ["stg"], ["prod-eu", "prod-us"]]
S, F, C = ItemStatus.SUCCEEDED, ItemStatus.FAILED, ItemStatus.CANCELLED


def _new() -> Release:
    ids = [f"ri-{ws}" for batch in BATCHES for ws in batch]
    return model.new_release("rel-1", "r1", BATCHES, ids, T0)


def _running() -> Release:
    return model.start(_new(), T0)


def _claimed(*workspaces: str) -> Release:
    release = _running()
    for ws in workspaces:
        release = model.claim(release, f"ri-{ws}", f"run-{ws}", T0)
    return release


def _succeeded(*workspaces: str) -> Release:
    release = _running()
    for ws in workspaces:
        release = model.claim(release, f"ri-{ws}", f"run-{ws}", T0)
        release = model.settle(release, f"ri-{ws}", S, T1)
    return release


def _result(ws: str, status: RunStatus, error: str | None = None) -> RunResult:
    return RunResult(f"run-{ws}", status, error)


@pytest.mark.parametrize(
    ("build", "runs", "max_parallel", "expected"),
    [
        (_new, {}, 0, [Start()]),
        (_running, {}, 0, [Claim("ri-dev-a"), Claim("ri-dev-b")]),
        (_running, {}, 1, [Claim("ri-dev-a")]),
        (lambda: _claimed("dev-a"), {"run-dev-a": _result("dev-a", RunStatus.PLANNING)}, 1, []),
        (
            lambda: _claimed("dev-a"),
            {"run-dev-a": _result("dev-a", RunStatus.APPLYING)},
            0,
            [Claim("ri-dev-b")],
        ),
        (
            lambda: _claimed("dev-a", "dev-b"),
            {"run-dev-a": _result("dev-a", RunStatus.APPLIED)},
            0,
            [Settle("ri-dev-a", S)],
        ),
        (
            lambda: _claimed("dev-a", "dev-b"),
            {
                "run-dev-a": _result("dev-a", RunStatus.FAILED, "apply: boom"),
                "run-dev-b": _result("dev-b", RunStatus.PLANNED_AND_FINISHED),
            },
            0,
            [Settle("ri-dev-a", F, "run run-dev-a failed: apply: boom"), Settle("ri-dev-b", S)],
        ),
        (lambda: _succeeded("dev-a", "dev-b"), {}, 0, [Claim("ri-stg")]),
        (
            lambda: model.request_cancel(_claimed("dev-a", "dev-b"), T1),
            {"run-dev-a": _result("dev-a", RunStatus.PLANNING)},
            0,
            [
                CancelRun("ri-dev-a", "run-dev-a", "dev-a"),
                CancelRun("ri-dev-b", "run-dev-b", "dev-b"),
            ],
        ),
        (
            lambda: model.settle(_claimed("dev-a", "dev-b"), "ri-dev-a", F, T1),
            {"run-dev-b": _result("dev-b", RunStatus.APPLYING)},
            0,
            [],
        ),
        (lambda: _succeeded("dev-a", "dev-b", "stg", "prod-eu", "prod-us"), {}, 0, []),
        (lambda: model.request_cancel(_new(), T1), {}, 0, []),
    ],
    ids=[
        "a-pending-release-starts",
        "the-first-batch-starts-at-once",
        "max-parallel-bounds-the-claims",
        "no-room-means-wait",
        "room-left-claims-the-next-item",
        "an-ended-run-is-settled-first",
        "every-ended-run-is-settled",
        "a-finished-batch-opens-the-next",
        "a-cancel-cancels-every-running-run",
        "a-failing-release-only-waits",
        "a-succeeded-release-needs-nothing",
        "a-cancelled-release-needs-nothing",
    ],
)
def test_the_executor_decides_from_the_release_and_its_runs(
    build: Callable[[], Release],
    runs: dict[str, RunResult],
    max_parallel: int,
    expected: list[decide.Action],
) -> None:
    assert decide.next_actions(build(), runs, max_parallel=max_parallel) == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (RunStatus.PENDING, None),
        (RunStatus.PLANNING, None),
        (RunStatus.APPLY_PENDING, None),
        (RunStatus.APPLYING, None),
        (RunStatus.APPLIED, (S, None)),
        (RunStatus.PLANNED_AND_FINISHED, (S, None)),
        (RunStatus.FAILED, (F, "run run-x failed: why")),
        (RunStatus.APPLIED_STATE_ERROR, (F, "run run-x applied_state_error: why")),
        (RunStatus.DISCARDED, (F, "run run-x discarded: why")),
        (RunStatus.CANCELLED, (C, "run run-x cancelled: why")),
        (RunStatus.FORCE_CANCELLED, (C, "run run-x force_cancelled: why")),
    ],
)
def test_an_item_succeeds_only_when_its_run_applied_or_had_nothing_to_apply(
    status: RunStatus, expected: tuple[ItemStatus, str | None] | None
) -> None:
    assert decide.item_outcome(RunResult("run-x", status, "why")) == expected
