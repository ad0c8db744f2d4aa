"""The release executor: drives every unfinished release, one task per release.

Each release task is a thin loop around a pure decision (`decide.next_actions`): read the release
and the runs of its running items, decide, perform each action in its own short transaction,
then wait until the release's change key is published (store/changes.py: a write to the
release or its items — a claim, a cancel asked — or to the run of one of its items) and look
again. The executor's own loop wakes when a release is created. Nothing polls on a timer (the
hub's fallback re-check aside, docs/architecture.md §13).

Every action is a compare-and-set on what it read, so two loops driving one release (two
executors, or a new daemon after a restart) never act twice: a loop that loses a race gets
InvalidTransition, and looks again. An item claimed before a restart already has its run; the
run is in its workspace's queue (the workspace actor loads pending runs at start), and the item
is resumed by watching that run, never by creating another.
"""

from __future__ import annotations

import enum
import logging

import trio

from tfward.actors.actions import cancel_run
from tfward.actors.runtime import Runtime
from tfward.actors.supervisor import Supervisor
from tfward.actors.workspace import Submitted
from tfward.errors import InvalidTransition, NotFound, StorageUnavailable
from tfward.ids import now
from tfward.releases import model
from tfward.releases.decide import Action, CancelRun, Claim, Settle, Start, next_actions
from tfward.releases.model import ItemStatus, Release
from tfward.store import releases as release_store
from tfward.store.changes import RELEASES, Key, Subscription
from tfward.store.health import Backoff

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0


class _Pass(enum.Enum):
    DONE = "done"  # the release has ended
    ACTED = "acted"  # something was written: look again at once
    IDLE = "idle"  # nothing to do until the next commit


async def cancel_item_run(supervisor: Supervisor, run_id: str) -> bool:
    """Cancel a release item's run the way the API's run cancel does (`cancel_run`). A run
    that has ended already is left alone; returns whether a cancel was sent."""
    try:
        await cancel_run(supervisor, run_id)
    except (InvalidTransition, NotFound) as exc:
        # Ended already, or its workspace was removed from the config (its runs wait, like
        # every run of a removed workspace, until it is configured again).
        log.info("release item run %s not cancelled: %s", run_id, exc)
        return False
    return True


class ReleaseExecutor:
    """Started by the daemon (only with `[releases] enabled`) after the workspace actors."""

    def __init__(
        self, rt: Runtime, supervisor: Supervisor, *, max_parallel: int | None = None
    ) -> None:
        self.rt = rt
        self.supervisor = supervisor
        self._max_parallel = max_parallel
        self._scope = trio.CancelScope()
        self._driving: set[str] = set()
        # Runs this executor asked to cancel: asked once per executor (and again after a
        # restart, which is harmless: cancelling twice is a no-op).
        self._cancels_sent: set[str] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drive every unfinished release until `stop()`. When a release is created, start a
        task for any release not driven yet. On cancellation (stop, daemon hard stop) the
        release tasks stop between transactions (a write in flight commits or rolls back
        first); whatever they claimed is resumed by the next executor."""
        storage = Backoff(first=0.5, cap=MAX_BACKOFF)
        with self._scope, self.rt.store.changes.subscribe(RELEASES) as created:
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    try:
                        unfinished = await self.rt.store.read(release_store.unfinished)
                    except StorageUnavailable:  # logged once by the store's health
                        await self.rt.store.health.wait(storage.next())
                        continue
                    storage.reset()
                    for release_id in unfinished:
                        if release_id not in self._driving:
                            self._driving.add(release_id)
                            nursery.start_soon(
                                self._drive, release_id, name=f"release-{release_id}"
                            )
                    if self.rt.store.changes.closed:
                        self.stop()  # the daemon stops serving (a shutdown stopped us before)
                    await created.wait()

    def stop(self) -> None:
        self._scope.cancel()

    @property
    def max_parallel(self) -> int:
        """Items of a batch running at once (0: all); read from the config each time, so a
        reload applies to the next claim."""
        if self._max_parallel is not None:
            return self._max_parallel
        return self.rt.config.releases.max_parallel_per_batch

    async def _drive(self, release_id: str) -> None:
        """Drive one release until it ends. A lost race (InvalidTransition) means another loop
        acted first: look again after the release's next change. Any other error is logged
        and the pass retried with backoff; the release is never left half-written, since
        every action is one transaction."""
        with self.rt.store.changes.subscribe(Key.release(release_id)) as changed:
            try:
                await self._drive_loop(release_id, changed)
            finally:
                self._driving.discard(release_id)

    async def _drive_loop(self, release_id: str, changed: Subscription) -> None:
        """`_drive`'s loop: a pass, then a wait on the release's key (subscribed before the
        first read, so no change is missed)."""
        backoff = 0.0
        while True:
            try:
                outcome = await self._pass(release_id)
                backoff = 0.0
            except InvalidTransition as exc:
                log.debug("release %s: %s", release_id, exc)
                await changed.wait()
                continue
            except StorageUnavailable:  # logged once by the store's health
                backoff = min(MAX_BACKOFF, max(0.5, backoff * 2))
                await self.rt.store.health.wait(backoff)
                continue
            except Exception:
                # A failed pass (e.g. the database briefly unavailable) changes nothing it
                # had not committed; the loop retries with backoff. Cancelled is not caught.
                backoff = min(MAX_BACKOFF, max(0.5, backoff * 2))
                log.exception(
                    "release %s: executor pass failed; retrying in %.1fs", release_id, backoff
                )
                await trio.sleep(backoff)
                continue
            if outcome is _Pass.DONE:
                return
            if outcome is _Pass.IDLE:
                await changed.wait()

    async def _pass(self, release_id: str) -> _Pass:
        release, runs = await self.rt.store.read(lambda c: release_store.snapshot(c, release_id))
        if release.status.is_terminal:
            return _Pass.DONE
        acted = False
        for action in next_actions(release, runs, max_parallel=self.max_parallel):
            acted = await self._perform(release, action) or acted
        return _Pass.ACTED if acted else _Pass.IDLE

    async def _perform(self, release: Release, action: Action) -> bool:
        """Do one action; returns whether it wrote to the release."""
        store, rid = self.rt.store, release.id
        match action:
            case Start():
                await store.write(
                    lambda c: release_store.transition(c, rid, lambda r: model.start(r, now()))
                )
                log.info("release %s (%s) started", rid, release.name)
            case Settle(item_id, outcome, error):
                after = await store.write(
                    lambda c: release_store.transition(
                        c, rid, lambda r: model.settle(r, item_id, outcome, now(), error=error)
                    )
                )
                self._log_settled(after, item_id)
            case Claim(item_id):
                await self._claim(release, item_id)
            case CancelRun(_, run_id, _):
                if run_id not in self._cancels_sent:
                    self._cancels_sent.add(run_id)
                    await cancel_item_run(self.supervisor, run_id)
                return False
        return True

    async def _claim(self, release: Release, item_id: str) -> None:
        """Claim an item and queue its run. An item whose workspace is no longer configured
        cannot start: it fails, and so stops the release. The run goes to the workspace's
        actor, on this daemon or on the one that owns the workspace (§15)."""
        item = release.item(item_id)
        ws_id = self.rt.workspace_ids.get(item.workspace)
        if ws_id is None or not any(w.name == item.workspace for w in self.rt.config.workspaces):
            error = f"workspace {item.workspace} is not configured"
            await self.rt.store.write(
                lambda c: release_store.transition(
                    c,
                    release.id,
                    lambda r: model.settle(r, item_id, ItemStatus.FAILED, now(), error=error),
                )
            )
            return
        _, run = await self.rt.store.write(
            lambda c: release_store.claim(
                c, release.id, item_id, workspace_id=ws_id, max_parallel=self.max_parallel
            )
        )
        try:
            self.supervisor.tell(item.workspace, Submitted(run.id, speculative=False))
        except NotFound:
            # Removed from the config just now: the run waits in the database, and its actor
            # queues it when the workspace is configured again.
            log.warning(
                "release %s: run %s waits for workspace %s", release.id, run.id, item.workspace
            )
        log.info(
            "release %s: batch %d, %s: run %s queued",
            release.id,
            item.batch,
            item.workspace,
            run.id,
        )

    def _log_settled(self, release: Release, item_id: str) -> None:
        item = release.item(item_id)
        log.info(
            "release %s: batch %d, %s %s%s",
            release.id,
            item.batch,
            item.workspace,
            item.status,
            f": {item.error}" if item.error else "",
        )
        if release.status.is_terminal:
            log.info("release %s (%s) %s", release.id, release.name, release.status)
