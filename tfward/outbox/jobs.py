"""What each outbox job kind does, and what a job can ask of the worker.

A handler gets a `JobContext`, raises `JobFailed` (retried per the kind's policy) or
`PermanentFailure` (dead at once), and may end with `ctx.finish_with(fn)`: `fn` and marking the
row done commit together, so the effect and "done" can never be split by a crash. Kinds:

- `notify`: fan-out; one `deliver` row per destination of the workspace whose triggers include
  the row's trigger, all in one transaction (idempotency key: run, trigger, destination and
  the notify row). A release's end (`release:completed` / `release:failed`) has no workspace:
  it goes to every destination named by a workspace of the release, each once;
- `deliver`: one POST to one destination, every attempt in the delivery log;
- `run_trigger`, `inventory_sync`, `drift_clear`, `plan_json`: see `followups.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpx
import trio
from sqlalchemy import Connection

from tfward.errors import NotFound, TfwardError
from tfward.ids import now
from tfward.runs.model import Run, Status
from tfward.store import deliveries
from tfward.store import outbox as outbox_store
from tfward.store import runs as run_store

from . import notifications

if TYPE_CHECKING:
    from tfward.actors.runtime import Runtime
    from tfward.actors.workspace import Message

log = logging.getLogger(__name__)

T = TypeVar("T")


class JobFailed(TfwardError):
    """This attempt failed; the job is retried per its kind's policy (raised by handlers)."""


class PermanentFailure(TfwardError):
    """The job can never succeed (its destination or workspace is gone): dead at once."""


class LeaseLost(TfwardError):
    """The row is no longer this attempt's: its lease ran out and another worker claimed it."""


class Teller(Protocol):
    """The supervisor, as the worker sees it: posts a message to a workspace actor."""

    def tell(self, workspace: str, msg: Message) -> None: ...

    def owns(self, workspace: str) -> bool:
        """Whether this daemon drives the workspace now (its actor runs here)."""
        ...


@dataclass
class JobContext:
    rt: Runtime
    teller: Teller
    client: httpx.AsyncClient
    job: outbox_store.Job
    finished: bool = False

    async def finish_with(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` and mark the job done in one transaction; LeaseLost (and nothing written)
        when the row is no longer this attempt's."""
        job = self.job

        def tx(conn: Connection) -> T:
            result = fn(conn)
            if not outbox_store.finish(conn, job, now()):
                raise LeaseLost(f"outbox row {job.id}: lease lost before it finished")
            return result

        result = await self.rt.store.write(tx)
        self.finished = True
        return result

    @property
    def http_timeout(self) -> float:
        """A request ends well within the job's limit (half the lease), so its failure is
        recorded as the receiver's, and no other worker can start the job again meanwhile."""
        return min(notifications.REQUEST_TIMEOUT, self.rt.config.outbox.lease * 0.4)


Handler = Callable[[JobContext], Awaitable[None]]


# ---- notify ----------------------------------------------------------------------------------


async def notify(ctx: JobContext) -> None:
    count = await ctx.finish_with(lambda conn: _fan_out(conn, ctx))
    if count:
        log.info("notification %s: %d deliveries queued", ctx.job.payload.get("trigger"), count)


def _fan_out(conn: Connection, ctx: JobContext) -> int:
    job, config = ctx.job, ctx.rt.config
    payload = job.payload
    trigger = str(payload.get("trigger"))
    if payload.get("release_id"):
        return _fan_out_release(conn, ctx)
    try:
        ws = config.workspace(str(payload.get("workspace")))
    except KeyError:
        return 0  # the workspace left the config: nobody to tell
    run = _run_or_none(conn, payload.get("run_id"))
    if run is not None and run.refresh_only and trigger.startswith("run:"):
        return 0  # drift checks notify only `assessment:drifted`
    count = 0
    for name in ws.notifications:
        try:
            destination = config.notification(name)
        except KeyError:
            continue
        if trigger not in destination.triggers:
            continue
        body = notifications.generic_payload(
            config,
            name,
            trigger,
            run=_facts(run),
            run_status=payload.get("run_status"),
            workspace_id=job.workspace_id,
            workspace_name=ws.name,
            updated_at=job.created_at,
            message=payload.get("message") if trigger == "assessment:drifted" else None,
        )
        count += _deliver(
            conn, job, name, body, cause=str(payload.get("run_id")), run_id=run.id if run else None
        )
    return count


def _fan_out_release(conn: Connection, ctx: JobContext) -> int:
    """A release's end, to every destination a workspace of the release names, once each
    (a workspace no longer configured names none), if it wants the trigger."""
    job, config = ctx.job, ctx.rt.config
    trigger = str(job.payload.get("trigger"))
    names: dict[str, None] = {}
    for workspace in job.payload.get("workspaces") or []:
        try:
            names.update(dict.fromkeys(config.workspace(str(workspace)).notifications))
        except KeyError:
            continue
    count = 0
    for name in names:
        try:
            destination = config.notification(name)
        except KeyError:
            continue
        if trigger not in destination.triggers:
            continue
        body = notifications.release_payload(
            config, name, trigger, job.payload, updated_at=job.created_at
        )
        count += _deliver(conn, job, name, body, cause=str(job.payload["release_id"]))
    return count


def _deliver(
    conn: Connection,
    job: outbox_store.Job,
    name: str,
    body: dict[str, Any],
    *,
    cause: str,
    run_id: str | None = None,
) -> int:
    """One `deliver` row for destination `name` (1), or none if it exists already (0)."""
    trigger = str(job.payload.get("trigger"))
    added = outbox_store.enqueue(
        conn,
        "deliver",
        {
            "destination": name,
            "trigger": trigger,
            "run_id": run_id,
            "workspace": body.get("workspace_name"),
            "notification": body,
            "detail": job.payload.get("message"),
        },
        key=f"deliver:{cause}:{trigger}:{name}:{job.id}",
        run_id=run_id,
        workspace_id=job.workspace_id,
    )
    return int(added)


def _run_or_none(conn: Connection, run_id: Any) -> Run | None:
    if not run_id:
        return None
    try:
        return run_store.get_run(conn, str(run_id))
    except NotFound:
        return None


def _facts(run: Run | None) -> notifications.RunFacts | None:
    if run is None:
        return None
    updated_by = run.confirmed_by if run.status is Status.APPLIED else None
    return notifications.RunFacts(
        run.id, run.message, run.created_at, run.created_by, updated_by or run.created_by
    )


# ---- deliver ---------------------------------------------------------------------------------


async def deliver(ctx: JobContext) -> None:
    job = ctx.job
    payload = job.payload
    name = str(payload.get("destination"))
    try:
        destination = ctx.rt.config.notification(name)
    except KeyError:
        raise PermanentFailure(
            f"notification destination {name!r} is no longer configured"
        ) from None
    body, headers = notifications.request_for(
        destination, payload["notification"], payload.get("detail"), delivery_id=job.id
    )
    started = now()
    try:
        result = await notifications.post(
            ctx.client, destination.url, body, headers, within=ctx.http_timeout
        )
    except trio.Cancelled:
        # Stopped mid-request: say so in the log; the row comes back with its lease.
        cut = notifications.AttemptResult(False, None, 0, "interrupted before an answer")
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await ctx.rt.store.write(
                lambda c: deliveries.record(c, _attempt(job, name, started, cut))
            )
        raise
    attempt = _attempt(job, name, started, result)
    if result.delivered:
        await ctx.finish_with(lambda c: deliveries.record(c, attempt))
        return
    await ctx.rt.store.write(lambda c: deliveries.record(c, attempt))
    raise JobFailed(f"{name}: {result.error}")


def _attempt(
    job: outbox_store.Job, name: str, started: datetime, result: notifications.AttemptResult
) -> deliveries.Attempt:
    return deliveries.Attempt(
        outbox_id=job.id,
        destination=name,
        trigger=str(job.payload.get("trigger")),
        run_id=job.run_id,
        workspace_id=job.workspace_id,
        attempt=job.attempts,
        delivered=result.delivered,
        status_code=result.status_code,
        latency_ms=result.latency_ms,
        error=result.error,
        created_at=started,
    )
