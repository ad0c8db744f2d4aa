"""The outbox worker: claims due rows with a lease and runs them, bounded, retried, in order.

    loop:  claim due rows (one short write: compare-and-set to `running` with a lease)
           -> start each as a task holding a token of the concurrency limiter
           -> sleep until a commit, a finished job, or the next due time

- At most `[outbox] concurrency` jobs run at once (seed M3): a row is claimed only when a
  limiter token is free, and the job holds that token until its outcome is written.
- A failed attempt is retried after an exponential backoff with jitter, up to the kind's limit,
  then the row is `dead` with its last error (seed M4); `POST /api/v1/outbox/{id}/actions/retry`
  queues it again.
- Rows of one workspace run in creation order: the claim skips a row while an earlier row of
  its workspace is queued or running (seed H5).
- A job never outlives half its lease; a row whose lease ran out (its process died or hung) is
  claimable again, and every write about an attempt checks the attempt still owns the row.
- The worker wakes when a row becomes due (the store publishes the outbox's change key when a
  row is queued, retried or re-queued: store/changes.py; `COALESCE` later, so that one look
  takes what a burst of commits queued), when one of its jobs ends that held the last free
  slot or that rows of its workspace may wait behind, and otherwise at the next due time (at
  most MAX_IDLE, which also catches rows another process queued).
- Rows done, and notification delivery attempts, older than `[outbox] keep` are deleted in
  short batches, hourly; queued, running and dead rows are never deleted.
Stopping: no new claims; jobs in flight get `stop_grace` seconds, then are cancelled and left
`running` with their lease — the next start (or the lease running out) queues them again. No
row is lost.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import NamedTuple

import httpx
import trio
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from tfward.actors.runtime import Runtime
from tfward.errors import StorageUnavailable
from tfward.ids import now
from tfward.obs import logs
from tfward.store import deliveries
from tfward.store import outbox as outbox_store
from tfward.store.changes import OUTBOX
from tfward.store.health import Backoff

from . import followups, jobs, notifications
from .jobs import Handler, JobContext, JobFailed, LeaseLost, PermanentFailure, Teller
from .policy import policy_for

log = logging.getLogger(__name__)

HANDLERS: Mapping[str, Handler] = {
    "notify": jobs.notify,
    "deliver": jobs.deliver,
    "run_trigger": followups.run_trigger,
    "inventory_sync": followups.inventory_sync,
    "drift_clear": followups.drift_clear,
    "plan_json": followups.plan_json,
}
# Longest sleep without a reason to wake (guards against writes made by other processes).
MAX_IDLE = 30.0
# Shortest sleep when rows looked due but none could be claimed (another worker took them).
MIN_POLL = 0.05
# How long the worker lets a burst of commits settle before it looks at newly queued rows: a
# run's end queues its inventory sync and then its notification a few milliseconds apart, and
# the run's own last writes (the state, the funnel) go first; one look claims both.
COALESCE = 0.05
# Pruning: how often (at most), and rows per write (short transactions, runs go on meanwhile).
PRUNE_EVERY = 3600.0
PRUNE_BATCH = 500


class _NextDue(NamedTuple):
    """When the next queued row becomes claimable (`at` None: no row is queued)."""

    at: datetime | None


class OutboxWorker:
    def __init__(
        self,
        rt: Runtime,
        teller: Teller,
        *,
        reclaim_at_start: bool = False,
        stop_grace: float = 5.0,
        handlers: Mapping[str, Handler] = HANDLERS,
    ) -> None:
        self.rt = rt
        self.teller = teller
        self.reclaim_at_start = reclaim_at_start
        self.stop_grace = stop_grace
        self.handlers = handlers
        self.limiter = trio.CapacityLimiter(rt.config.outbox.concurrency)
        self.in_flight: dict[str, outbox_store.Job] = {}
        self.stopped = trio.Event()
        self._stopping = False
        self._wake = trio.Event()
        self._client: httpx.AsyncClient | None = None

    @property
    def lease(self) -> float:
        return self.rt.config.outbox.lease

    def stop(self) -> None:
        """Claim nothing more; `run` returns once the jobs in flight end (or `stop_grace`)."""
        self._stopping = True
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until `stop`. On cancellation (hard stop) jobs in flight are abandoned with their
        lease and their rows come back later; errors of single jobs never end the worker."""
        try:
            headers = {"User-Agent": notifications.USER_AGENT}
            async with httpx.AsyncClient(headers=headers) as client:
                self._client = client
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_queue, name="outbox-queue-watch")
                    nursery.start_soon(self._prune, name="outbox-prune")
                    task_status.started()
                    await self._loop(nursery)
                    with trio.move_on_after(self.stop_grace):
                        while self.in_flight:
                            await self._idle()
                    if self.in_flight:
                        log.warning(
                            "outbox: abandoning %d jobs in flight (their rows come back)",
                            len(self.in_flight),
                        )
                    nursery.cancel_scope.cancel()
        finally:
            self.stopped.set()

    async def _watch_queue(self) -> None:
        """Wake the loop whenever a row became due (the outbox's change key), `COALESCE`
        seconds after, once for all the rows queued meanwhile. Ends when the hub closes (the
        daemon stops serving; the worker has stopped before that)."""
        hub = self.rt.store.changes
        with hub.subscribe(OUTBOX) as queued:
            while not hub.closed:
                if await queued.wait():
                    await trio.sleep(COALESCE)
                    if queued.pending:
                        await queued.wait()  # queued meanwhile: the same look sees it
                    self._wake.set()

    async def _prune(self) -> None:
        """Delete what `[outbox] keep` no longer keeps, now and then every PRUNE_EVERY (or a
        quarter of `keep`, when shorter). Cancelled with the worker; a database error skips one
        round (it is logged), since housekeeping must never stop the delivery of follow-ups."""
        while True:
            keep = self.rt.config.outbox.keep
            before = now() - timedelta(seconds=keep)
            try:
                done = await self._prune_batches(outbox_store.prune_done, before)
                attempts = await self._prune_batches(deliveries.prune, before)
            except (SQLAlchemyError, StorageUnavailable) as exc:
                log.warning("outbox: pruning failed, trying again later: %s", exc)
            else:
                if done or attempts:
                    log.info(
                        "outbox: pruned %d done rows and %d delivery attempts older than %s",
                        done,
                        attempts,
                        before.isoformat(timespec="seconds"),
                    )
            await trio.sleep(min(PRUNE_EVERY, keep / 4))

    async def _prune_batches(
        self, prune: Callable[[Connection, datetime, int], int], before: datetime
    ) -> int:
        total = 0
        while True:
            deleted = await self.rt.store.write(lambda c: prune(c, before, PRUNE_BATCH))
            total += deleted
            if deleted < PRUNE_BATCH:
                return total

    async def _idle(self) -> None:
        self._wake = trio.Event()
        await self._wake.wait()

    async def _loop(self, nursery: trio.Nursery) -> None:
        failures = 0
        storage = Backoff(first=0.5, cap=MAX_IDLE)
        reclaim = self.reclaim_at_start
        while not self._stopping:
            self._wake = trio.Event()  # reset before reading: no commit after this is missed
            self.limiter.total_tokens = self.rt.config.outbox.concurrency
            free = int(self.limiter.available_tokens)
            try:
                if reclaim:
                    await self._reclaim()
                    reclaim = False
                claimed, due = await self._claim(nursery, free) if free > 0 else (0, None)
                if free > 0 and claimed == free:
                    continue  # maybe more are due
                await self._sleep(free, claimed, due)
                failures = 0
                storage.reset()
            except StorageUnavailable:  # said once by the store's health; wait for it
                await self.rt.store.health.wait(storage.next(), self._wake)
            except Exception:  # a database hiccup must not stop the follow-ups
                failures += 1
                log.exception("outbox: claiming failed (%d in a row)", failures)
                await trio.sleep(min(MAX_IDLE, 0.5 * 2**failures))

    async def _reclaim(self) -> None:
        """Rows a previous process left `running` are queued again (nothing holds them)."""
        node = self.rt.node_id
        count = await self.rt.store.write(lambda c: outbox_store.reclaim_running(c, now(), node))
        if count:
            log.warning("outbox: %d rows a previous process left running re-queued", count)

    async def _claim(self, nursery: trio.Nursery, free: int) -> tuple[int, _NextDue | None]:
        """Claim and start up to `free` due rows; how many, and, unless every free slot was
        taken, when the next row will be due (read with the look or the claim: `_sleep` need
        not read it again)."""
        exclude = frozenset(self.in_flight)

        def look(conn: Connection) -> _NextDue | None:
            if outbox_store.has_due(conn, now(), exclude):
                return None
            return _NextDue(outbox_store.next_due(conn, exclude))

        if (due := await self.rt.store.read(look)) is not None:
            return 0, due
        lease = self.lease

        def claim(conn: Connection) -> tuple[list[outbox_store.Job], _NextDue | None]:
            claimed = outbox_store.claim(conn, now(), free, lease, exclude, self.rt.node_id)
            if len(claimed) == free:
                return claimed, None  # more may be due: the loop looks again at once
            # Every due row is claimed: when the next one will be, in the same transaction.
            mine = exclude | {job.id for job in claimed}
            return claimed, _NextDue(outbox_store.next_due(conn, mine))

        claimed, due = await self.rt.store.write(claim)
        for job in claimed:
            self.limiter.acquire_on_behalf_of_nowait(job.id)
            self.in_flight[job.id] = job
            nursery.start_soon(self._run_job, job, name=f"outbox-{job.kind}-{job.id}")
        return len(claimed), due

    async def _sleep(self, free: int, claimed: int, known: _NextDue | None) -> None:
        """Until a row may be due (`known`: when, as `_claim` read it), or a wake-up."""
        if self._stopping:
            return
        delay = MAX_IDLE
        if free > 0:
            if known is None:
                exclude = frozenset(self.in_flight)
                known = _NextDue(
                    await self.rt.store.read(lambda c: outbox_store.next_due(c, exclude))
                )
            due = known.at
            if due is not None:
                delay = min(MAX_IDLE, max(0.0, (due - now()).total_seconds()))
            if not claimed:
                delay = max(delay, MIN_POLL)
        with trio.move_on_after(delay):
            await self._wake.wait()

    # ---- one job ------------------------------------------------------------------------

    async def _run_job(self, job: outbox_store.Job) -> None:
        """Run one attempt and write its outcome. Cancellation (stop) leaves the row running
        with its lease; every other failure is recorded on the row."""
        run_id = job.run_id or job.payload.get("run_id") or job.payload.get("source_run_id")
        try:
            with logs.bound(job_id=job.id, run_id=run_id, workspace=job.payload.get("workspace")):
                await self._attempt(job)
        except StorageUnavailable as exc:  # the lease brings it back once storage does
            log.warning("outbox %s %s: could not record the outcome: %s", job.kind, job.id, exc)
        except Exception:  # the outcome could not be written: the lease brings it back
            log.exception("outbox %s %s: could not record the outcome", job.kind, job.id)
        finally:
            full = self.limiter.available_tokens == 0
            self.in_flight.pop(job.id, None)
            self.limiter.release_on_behalf_of(job.id)
            if full or job.workspace_id is not None:
                # Rows may wait for this slot, or behind this row (its workspace's order);
                # otherwise nothing became due (a row queued or retried wakes the loop itself).
                self._wake.set()

    async def _attempt(self, job: outbox_store.Job) -> None:
        handler = self.handlers.get(job.kind)
        assert self._client is not None
        ctx = JobContext(self.rt, self.teller, self._client, job)
        try:
            if handler is None:
                raise PermanentFailure(f"unknown outbox job kind {job.kind!r}")
            limit = self.lease / 2
            with trio.move_on_after(limit) as scope:
                await handler(ctx)
            if scope.cancelled_caught:
                raise JobFailed(f"the job took longer than {limit:g}s (half its lease)")
            if not ctx.finished:
                await ctx.finish_with(lambda c: None)
        except LeaseLost as exc:
            log.warning("outbox %s %s: %s", job.kind, job.id, exc)
        except PermanentFailure as exc:
            await self._failed(job, str(exc), retry=False)
        except Exception as exc:  # noqa: BLE001 — every failure is recorded and retried
            await self._failed(job, _describe(exc), retry=True)

    async def _failed(self, job: outbox_store.Job, error: str, *, retry: bool) -> None:
        when = now()
        retry_at: datetime | None = None
        if retry:
            policy = policy_for(job.kind, job.payload, self.rt.config)
            retry_at = policy.next_attempt(job.attempts, when, random.random())
        written = await self.rt.store.write(lambda c: outbox_store.fail(c, job, error, retry_at))
        if not written:
            log.warning("outbox %s %s: lease lost; outcome not recorded", job.kind, job.id)
        elif retry_at is None:
            log.error(
                "outbox %s %s dead after %d attempts: %s", job.kind, job.id, job.attempts, error
            )
        else:
            log.warning(
                "outbox %s %s attempt %d failed, retry in %.1fs: %s",
                job.kind,
                job.id,
                job.attempts,
                (retry_at - when).total_seconds(),
                error,
            )


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, JobFailed):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
