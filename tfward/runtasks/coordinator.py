"""The run-task coordinator: runs one stage's tasks and waits until each result is final.

`run_stage` creates the stage's results (each with its access token, stored encrypted), sends
every request concurrently in one nursery, and waits for all of them. A result ends by
  - a callback `passed` / `failed` (the API records it, then wakes the waiter: `notify`);
  - `webhook_error`, when delivery never got a 200 (seed O4);
  - `timeout`, when no progress arrived for the task's `timeout`: the waiting task marks it
    itself, at once, not a later sweep (seed M10). A `running` callback restarts the timer.
The stage outcome is the most restrictive of the results: any mandatory `failed`, `timeout` or
`webhook_error` blocks, even when every webhook is down (seed C3).

Cancellation (the run is cancelled, the daemon stops) ends the waits and requests at once; the
results not final yet get their tokens revoked here (shielded), and the run's termination
funnel revokes every token of the run again in its final transaction.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import trio
from sqlalchemy import Connection

from tfward.config import RunTaskConfig, format_duration
from tfward.errors import BadRequest
from tfward.ids import new_id, now
from tfward.store import runs as run_store
from tfward.store import tasks
from tfward.store.db import Store
from tfward.store.tasks import NewResult, TaskResult

from .callbacks import authorize, authorize_configuration, parse_callback, record_callback
from .delivery import USER_AGENT, deliver, worst_case
from .payload import Links, request_body
from .tokens import TokenService, lifetime_for

log = logging.getLogger(__name__)

BLOCKING = (tasks.FAILED, tasks.TIMEOUT, tasks.WEBHOOK_ERROR)
ABANDON_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Attached:
    """A task attached to the stage being run, with the workspace's enforcement level."""

    task: RunTaskConfig
    enforcement: str


@dataclass(frozen=True, slots=True)
class StageOutcome:
    stage: str
    results: tuple[TaskResult, ...]

    @property
    def blocking(self) -> list[TaskResult]:
        """Mandatory results that failed, timed out or could not be delivered."""
        return [r for r in self.results if r.enforcement == "mandatory" and r.status in BLOCKING]

    @property
    def advisory_failures(self) -> list[TaskResult]:
        return [r for r in self.results if r.enforcement != "mandatory" and r.status in BLOCKING]

    @property
    def passed(self) -> bool:
        return not self.blocking


def describe(result: TaskResult) -> str:
    """`<task>: <status>: <message>`, the form used in errors, warnings and the run log."""
    return f"{result.task_name}: {result.status}" + (
        f": {result.message}" if result.message else ""
    )


def stage_budget(tasks_: Sequence[RunTaskConfig]) -> float:
    """How long a stage with these tasks may wait: the slowest delivery plus its timeout."""
    return max((t.timeout + worst_case(t) for t in tasks_), default=0.0)


@dataclass(frozen=True, slots=True)
class _Sent:
    result_id: str
    attached: Attached
    body: dict[str, Any]
    token_expires_at: datetime


class RunTaskCoordinator:
    """Shared by every run (one per daemon); the API tells it about callbacks."""

    def __init__(self, store: Store, tokens: TokenService) -> None:
        self.store = store
        self.tokens = tokens
        # result id -> the waiting task's inbox of statuses reported by callbacks.
        self._waiters: dict[str, trio.MemorySendChannel[str]] = {}

    # ---- the stage ---------------------------------------------------------------------------

    async def run_stage(
        self,
        *,
        run_id: str,
        workspace_id: str,
        stage: str,
        attached: Sequence[Attached],
        links: Links,
    ) -> StageOutcome:
        """Send every attached task its request and wait for every result to be final. Errors
        in our own code (the database) propagate; cancellation ends every wait and request,
        revokes the unfinished results' tokens, and propagates."""
        sent = await self.store.write(
            lambda c: self._create(c, run_id, workspace_id, stage, attached, links)
        )
        ids = [s.result_id for s in sent]
        inboxes: dict[str, trio.MemoryReceiveChannel[str]] = {}
        for s in sent:
            send, inboxes[s.result_id] = trio.open_memory_channel[str](math.inf)
            self._waiters[s.result_id] = send
        try:
            async with httpx.AsyncClient(headers={"User-Agent": USER_AGENT}) as client:
                async with trio.open_nursery() as nursery:
                    for s in sent:
                        nursery.start_soon(
                            self._drive,
                            client,
                            s,
                            inboxes[s.result_id],
                            name=f"run-task-{s.attached.task.name}-{s.result_id}",
                        )
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(ABANDON_TIMEOUT):
                await self.store.write(
                    lambda c: tasks.abandon(
                        c, ids, now(), "the run stopped waiting before the task finished"
                    )
                )
            raise
        finally:
            for result_id in ids:
                self._waiters.pop(result_id, None)
        results = await self.store.read(lambda c: tasks.get_many(c, ids))
        return StageOutcome(stage, tuple(results))

    def _create(
        self,
        conn: Connection,
        run_id: str,
        workspace_id: str,
        stage: str,
        attached: Sequence[Attached],
        links: Links,
    ) -> list[_Sent]:
        run = run_store.get_run(conn, run_id)
        when = now()
        new: list[NewResult] = []
        sent: list[_Sent] = []
        for item in attached:
            result_id = new_id("taskrs")
            token = self.tokens.issue(
                result_id=result_id,
                run_id=run_id,
                workspace_id=workspace_id,
                stage=stage,
                lifetime=lifetime_for(item.task.timeout),
                when=when,
            )
            new.append(
                NewResult(
                    id=result_id,
                    run_id=run_id,
                    workspace_id=workspace_id,
                    task_name=item.task.name,
                    stage=stage,
                    enforcement=item.enforcement,
                    token_ciphertext=self.tokens.encrypt(token.token, result_id),
                    token_jti=token.jti,
                    token_expires_at=token.expires_at,
                )
            )
            body = request_body(
                links,
                run=run,
                workspace_id=workspace_id,
                stage=stage,
                result_id=result_id,
                enforcement=item.enforcement,
                access_token=token.token,
            )
            sent.append(_Sent(result_id, item, body, token.expires_at))
        tasks.create(conn, new, when)
        return sent

    async def _drive(
        self, client: httpx.AsyncClient, sent: _Sent, inbox: trio.MemoryReceiveChannel[str]
    ) -> None:
        """Deliver one request, then wait for the result to become final (see module doc)."""
        task, result_id = sent.attached.task, sent.result_id
        delivery = await deliver(client, task, sent.body)
        if not delivery.delivered:
            log.warning("run task %s (%s): %s", task.name, result_id, delivery.reason)
            await self._finish(
                result_id, tasks.WEBHOOK_ERROR, f"delivery failed: {delivery.reason}"
            )
            return
        await self.store.write(lambda c: tasks.mark_running(c, result_id, now()))
        # Once the token has expired no callback can be accepted: waiting longer is pointless.
        expires = trio.current_time() + (sent.token_expires_at - now()).total_seconds()
        progress = trio.current_time()
        while True:
            with trio.move_on_at(min(progress + task.timeout, expires)):
                status = await inbox.receive()
                if status in tasks.FINAL:
                    return
                progress = trio.current_time()  # `running`: the no-progress timer restarts
                continue
            # Seed M10: the waiter marks the timeout itself, now. If a final callback won the
            # race, `finish` changes nothing and that callback's status stands.
            limit = format_duration(task.timeout)
            await self._finish(
                result_id,
                tasks.TIMEOUT,
                f"no progress reported for {limit}"
                if progress + task.timeout <= expires
                else f"no result before the access token expired (task timeout {limit})",
            )
            return

    async def _finish(self, result_id: str, status: str, message: str) -> bool:
        return await self.store.write(
            lambda c: tasks.finish(c, result_id, status, now(), message=message)
        )

    # ---- what task services send back ----------------------------------------------------------

    async def callback(self, result_id: str, token: str | None, raw: bytes) -> TaskResult:
        """Record a callback (see callbacks.py for the answers) and wake the result's waiter."""
        update: Any
        try:
            update = parse_callback(raw)
        except BadRequest as exc:
            update = exc
        result = await self.store.write(
            lambda c: record_callback(c, self.tokens, result_id, token, update, now())
        )
        self.notify(result_id, result.status)
        return result

    async def authorize(self, result_id: str, token: str | None) -> TaskResult:
        """The result, if `token` may read its plan (AccessDenied / NotFound otherwise)."""
        return await self.store.read(lambda c: authorize(c, self.tokens, result_id, token))

    async def authorize_configuration(self, cv_id: str, token: str | None) -> None:
        await self.store.read(lambda c: authorize_configuration(c, self.tokens, cv_id, token))

    def notify(self, result_id: str, status: str) -> None:
        send = self._waiters.get(result_id)
        if send is None:
            return  # nobody waits: the stage ended, or the result belongs to an older daemon
        try:
            send.send_nowait(status)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
