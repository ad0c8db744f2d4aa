"""The release executor's decision, as pure code: given a release and the runs of its running
items, what to do next (`next_actions`), and what an ended run means for its item.

The executor performs each action in its own transaction, where the transitions of `model`
check it again against the release as it is then; so a decision made on a snapshot another loop
has since moved on from is refused there, never carried out twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tfward.runs.model import Status as RunStatus

from .model import ItemStatus, Release, ReleaseStatus, current_batch

# What an item's run ending means for the item.
_RUN_OUTCOMES = {
    RunStatus.APPLIED: ItemStatus.SUCCEEDED,
    RunStatus.PLANNED_AND_FINISHED: ItemStatus.SUCCEEDED,
    RunStatus.CANCELLED: ItemStatus.CANCELLED,
    RunStatus.FORCE_CANCELLED: ItemStatus.CANCELLED,
    RunStatus.FAILED: ItemStatus.FAILED,
    RunStatus.APPLIED_STATE_ERROR: ItemStatus.FAILED,
    RunStatus.DISCARDED: ItemStatus.FAILED,
}


@dataclass(frozen=True, slots=True)
class RunResult:
    """What the executor read about an item's run."""

    run_id: str
    status: RunStatus
    error: str | None = None


def item_outcome(result: RunResult) -> tuple[ItemStatus, str | None] | None:
    """The item's outcome once its run has ended (None while it runs), with an error text."""
    outcome = _RUN_OUTCOMES.get(result.status)
    if outcome is None:
        return None
    if outcome is ItemStatus.SUCCEEDED:
        return outcome, None
    return outcome, f"run {result.run_id} {result.status}" + (
        f": {result.error}" if result.error else ""
    )


@dataclass(frozen=True, slots=True)
class Start:
    pass


@dataclass(frozen=True, slots=True)
class Claim:
    item_id: str


@dataclass(frozen=True, slots=True)
class Settle:
    item_id: str
    outcome: ItemStatus
    error: str | None = None


@dataclass(frozen=True, slots=True)
class CancelRun:
    item_id: str
    run_id: str
    workspace: str


Action = Start | Claim | Settle | CancelRun


def next_actions(
    release: Release, runs: Mapping[str, RunResult], *, max_parallel: int = 0
) -> list[Action]:
    """What to do next with a release, given the runs of its running items. Settling ended
    runs comes first (it can stop the release); then, if the release was cancelled, cancel
    the running items' runs; otherwise claim the current batch's pending items, bounded by
    `max_parallel` (0: all). An empty list means: wait for a run to end."""
    if release.status.is_terminal:
        return []
    if release.status is ReleaseStatus.PENDING:
        return [Start()]
    running = release.with_status(ItemStatus.RUNNING)
    settles: list[Action] = []
    for item in running:
        result = runs.get(item.run_id or "")
        ended = item_outcome(result) if result is not None else None
        if ended is not None:
            settles.append(Settle(item.id, ended[0], ended[1]))
    if settles:
        return settles
    if release.cancel_requested_at is not None:
        return [CancelRun(i.id, i.run_id, i.workspace) for i in running if i.run_id]
    if release.stopping:
        return []
    batch = current_batch(release)
    room = max(0, max_parallel - len(running)) if max_parallel else len(release.items)
    pending = [i for i in release.with_status(ItemStatus.PENDING) if i.batch == batch]
    return [Claim(i.id) for i in sorted(pending, key=lambda i: i.position)[:room]]
