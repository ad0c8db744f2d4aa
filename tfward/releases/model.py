"""A release and its state machine, as pure code.

A release rolls one change (the current source, a pinned configuration version, variable
overrides) through ordered batches of workspaces. Each workspace is an item; an item runs as
one auto-applied `plan_and_apply` run in its workspace's queue.

    release:  pending ──start──> running ──(no item pending or running)──> succeeded
                 │                  │                                      | failed
                 └──request_cancel──┴──────────────────────────────────>   | cancelled

    item:     pending ──claim──> running ──settle──> succeeded | failed | cancelled
                 └──(a failure or a cancel stops the release)──> skipped

Batches run strictly in order: an item may be claimed only while every item of the earlier
batches has succeeded. The first item that does not succeed stops the release: every item not
yet started, in its batch or a later one, is skipped in the same transition, the items still
running finish, and then the release ends `failed` (or `cancelled` when a cancel was asked).
The counts are recomputed from the items by every transition, so a release saved with its
items always has exact counts. Every function returns a new `Release` or raises
`InvalidTransition`. The executor's decision, pure as well, is `decide.py`.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tfward.errors import InvalidTransition


class ReleaseStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (ReleaseStatus.SUCCEEDED, ReleaseStatus.FAILED, ReleaseStatus.CANCELLED)


class ItemStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self not in (ItemStatus.PENDING, ItemStatus.RUNNING)


@dataclass(frozen=True, slots=True)
class Rollout:
    """What a release rolls out. Neither field set: each run snapshots the workspace's
    current source, as any run does."""

    configuration_version_id: str | None = None
    configuration_sha256: str | None = None
    variables: Mapping[str, Any] | None = None

    @property
    def kind(self) -> str:
        parts = [
            name
            for name, present in (
                ("configuration_version", self.configuration_version_id is not None),
                ("variables", bool(self.variables)),
            )
            if present
        ]
        return "+".join(parts) or "source"

    def describe(self) -> str:
        parts = []
        if self.configuration_version_id:
            parts.append(
                f"configuration version {self.configuration_version_id}"
                f" ({(self.configuration_sha256 or '')[:12]})"
            )
        if self.variables:
            parts.append("variables " + ", ".join(sorted(self.variables)))
        return " with ".join(parts) or "the current source"


@dataclass(frozen=True, slots=True)
class Counts:
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: int = 0

    @classmethod
    def of(cls, items: Sequence[Item]) -> Counts:
        tally = {status: 0 for status in ItemStatus}
        for item in items:
            tally[item.status] += 1
        return cls(
            total=len(items),
            succeeded=tally[ItemStatus.SUCCEEDED],
            failed=tally[ItemStatus.FAILED],
            skipped=tally[ItemStatus.SKIPPED],
            cancelled=tally[ItemStatus.CANCELLED],
        )


@dataclass(frozen=True, slots=True)
class Item:
    """One workspace of a release. `batch` counts from 1; `position` orders a batch."""

    id: str
    batch: int
    position: int
    workspace: str
    status: ItemStatus = ItemStatus.PENDING
    run_id: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Release:
    """A release with all of its items, in batch order. `version` goes up by one with every
    transition: the store saves a release only over the version it loaded."""

    id: str
    name: str
    status: ReleaseStatus
    created_at: datetime
    items: tuple[Item, ...]
    rollout: Rollout = field(default_factory=Rollout)
    counts: Counts = field(default_factory=Counts)
    version: int = 1
    created_by: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    error: str | None = None

    def item(self, item_id: str) -> Item:
        for item in self.items:
            if item.id == item_id:
                return item
        raise InvalidTransition(f"release {self.id} has no item {item_id}")

    def with_status(self, *statuses: ItemStatus) -> list[Item]:
        return [item for item in self.items if item.status in statuses]

    @property
    def batches(self) -> list[list[Item]]:
        grouped: dict[int, list[Item]] = {}
        for item in sorted(self.items, key=lambda i: (i.batch, i.position)):
            grouped.setdefault(item.batch, []).append(item)
        return [grouped[b] for b in sorted(grouped)]

    @property
    def stopping(self) -> bool:
        """No item starts any more: a cancel was asked, or an item did not succeed."""
        return self.cancel_requested_at is not None or bool(
            self.with_status(ItemStatus.FAILED, ItemStatus.CANCELLED)
        )


def new_release(
    release_id: str,
    name: str,
    batches: Sequence[Sequence[str]],
    item_ids: Sequence[str],
    now: datetime,
    *,
    rollout: Rollout | None = None,
    created_by: str | None = None,
) -> Release:
    """A pending release. `item_ids` gives one id per workspace, in batch order."""
    names = [name for batch in batches for name in batch]
    if not names or any(not batch for batch in batches):
        raise InvalidTransition("a release needs at least one batch, and no batch may be empty")
    if len(item_ids) != len(names):
        raise InvalidTransition("one item id per workspace is needed")
    ids = iter(item_ids)
    items = tuple(
        Item(id=next(ids), batch=b, position=p, workspace=ws)
        for b, batch in enumerate(batches, start=1)
        for p, ws in enumerate(batch)
    )
    return Release(
        id=release_id,
        name=name,
        status=ReleaseStatus.PENDING,
        created_at=now,
        items=items,
        rollout=rollout or Rollout(),
        counts=Counts.of(items),
        created_by=created_by,
    )


def _next(release: Release, items: Sequence[Item] | None = None, **changes: Any) -> Release:
    """The release after a transition: counts recomputed from the items, version + 1."""
    items = tuple(release.items if items is None else items)
    return dataclasses.replace(
        release, items=items, counts=Counts.of(items), version=release.version + 1, **changes
    )


def _replace_item(release: Release, item: Item) -> tuple[Item, ...]:
    return tuple(item if i.id == item.id else i for i in release.items)


def current_batch(release: Release) -> int | None:
    """The first batch with an item that has not succeeded (None: every item succeeded)."""
    open_batches = [i.batch for i in release.items if i.status is not ItemStatus.SUCCEEDED]
    return min(open_batches) if open_batches else None


def start(release: Release, now: datetime) -> Release:
    if release.status is not ReleaseStatus.PENDING:
        raise InvalidTransition(f"cannot start release {release.id}: it is {release.status}")
    return _next(release, status=ReleaseStatus.RUNNING, started_at=now)


def check_claim(release: Release, item_id: str, *, max_parallel: int = 0) -> None:
    """Raise InvalidTransition unless the item may start now: it is pending in the current
    batch, the release is running and not stopping, and fewer than `max_parallel` items run
    (0: no bound). The store checks this before it creates the item's run."""
    item = release.item(item_id)
    refuse = f"cannot start item {item.workspace} of release {release.id}"
    if release.status is not ReleaseStatus.RUNNING:
        raise InvalidTransition(f"{refuse}: the release is {release.status}")
    if item.status is not ItemStatus.PENDING:
        raise InvalidTransition(f"{refuse}: it is {item.status}")
    if release.stopping:
        raise InvalidTransition(f"{refuse}: the release is stopping")
    batch = current_batch(release)
    if item.batch != batch:
        raise InvalidTransition(f"{refuse}: it is in batch {item.batch}, the current is {batch}")
    running = len(release.with_status(ItemStatus.RUNNING))
    if max_parallel and running >= max_parallel:
        raise InvalidTransition(f"{refuse}: {running} items run already (at most {max_parallel})")


def claim(
    release: Release, item_id: str, run_id: str, now: datetime, *, max_parallel: int = 0
) -> Release:
    """Mark an item running with the run that executes it (created in the same transaction).
    Refused as `check_claim` says."""
    check_claim(release, item_id, max_parallel=max_parallel)
    item = release.item(item_id)
    started = dataclasses.replace(item, status=ItemStatus.RUNNING, run_id=run_id, started_at=now)
    return _next(release, _replace_item(release, started))


def settle(
    release: Release,
    item_id: str,
    outcome: ItemStatus,
    now: datetime,
    *,
    error: str | None = None,
) -> Release:
    """An item's run ended (or the item could not start: `failed` from `pending`). Anything but
    success stops the release: items not started are skipped. The release ends once no item
    is pending or running."""
    item = release.item(item_id)
    if outcome not in (ItemStatus.SUCCEEDED, ItemStatus.FAILED, ItemStatus.CANCELLED):
        raise InvalidTransition(f"an item cannot end as {outcome}")
    if release.status is not ReleaseStatus.RUNNING:
        raise InvalidTransition(
            f"cannot settle an item of release {release.id}: it is {release.status}"
        )
    if not (
        item.status is ItemStatus.RUNNING
        or (item.status is ItemStatus.PENDING and outcome is ItemStatus.FAILED)
    ):
        raise InvalidTransition(
            f"cannot settle item {item.workspace} of release {release.id} as {outcome}: it is "
            f"{item.status}"
        )
    ended = dataclasses.replace(item, status=outcome, finished_at=now, error=error)
    after = _next(release, _replace_item(release, ended))
    if outcome is not ItemStatus.SUCCEEDED:
        first = after.error or f"{item.workspace} (batch {item.batch}): {error or outcome}"
        after = _skip_pending(dataclasses.replace(after, error=first), now)
    return _conclude(after, now)


def request_cancel(release: Release, now: datetime) -> Release:
    """Ask the release to stop: items not started are skipped at once; the caller cancels the
    runs of the running items. Idempotent; refused once the release has ended."""
    if release.status.is_terminal:
        raise InvalidTransition(f"cannot cancel release {release.id}: it is {release.status}")
    if release.cancel_requested_at is not None:
        return release
    after = _skip_pending(_next(release, cancel_requested_at=now), now)
    return _conclude(after, now)


def _skip_pending(release: Release, now: datetime) -> Release:
    pending = release.with_status(ItemStatus.PENDING)
    if not pending:
        return release
    skipped = {i.id for i in pending}
    items = tuple(
        dataclasses.replace(i, status=ItemStatus.SKIPPED, finished_at=now) if i.id in skipped else i
        for i in release.items
    )
    return dataclasses.replace(release, items=items, counts=Counts.of(items))


def _conclude(release: Release, now: datetime) -> Release:
    """End the release once nothing is pending or running."""
    if release.status.is_terminal or release.with_status(ItemStatus.PENDING, ItemStatus.RUNNING):
        return release
    if release.cancel_requested_at is not None:
        status = ReleaseStatus.CANCELLED
    elif release.with_status(ItemStatus.FAILED, ItemStatus.CANCELLED):
        status = ReleaseStatus.FAILED
    else:
        status = ReleaseStatus.SUCCEEDED
    return dataclasses.replace(release, status=status, finished_at=now)


def batch_status(items: Sequence[Item]) -> str:
    """One word for a batch, for people: the most telling of its items' statuses."""
    statuses = {i.status for i in items}
    for status in (
        ItemStatus.RUNNING,
        ItemStatus.FAILED,
        ItemStatus.CANCELLED,
        ItemStatus.SKIPPED,
    ):
        if status in statuses:
            return str(status)
    if statuses == {ItemStatus.SUCCEEDED}:
        return "succeeded"
    if statuses == {ItemStatus.PENDING}:
        return "pending"
    return "running"  # some succeeded, the rest wait for room (max_parallel_per_batch)
