"""Following a run live: its log streams while its status is watched, until it ends or waits.

`follow` runs under trio: one task streams `GET /runs/{id}/logs?follow=true` into
`Progress.log`, one redraws the status line on a TTY, and the calling task long-polls the run.
It returns when the run is terminal (once the rest of its log has arrived) or when the run
waits for a decision (`apply_pending`, not yet confirmed) once its plan output has been shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from tfward.runs.model import Status

from .client import TIMEOUT, CliError, Settings, refused, unreachable
from .render import Progress

LONG_POLL = 0.5  # the status is refreshed this often; a status change returns at once
TICK = 0.25  # redraw of the live status line (elapsed time, spinner)
QUEUE_NOTE_EVERY = 2.0  # while pending: how often to ask what the run waits for
DRAIN = 10.0  # how long to wait for the end of the log once the run has ended
# apply_pending: let the plan output arrive first. The marker line normally comes within a
# flush (0.2 s); the quiet bound only matters when it never comes, so it can be generous.
SETTLE_QUIET, SETTLE_MAX = 2.0, 6.0
RECONNECT = 0.5
# The daemon's own log line once a run waits in apply_pending: the plan output is all there.
WAIT_MARKER = b"[tfward] waiting for confirmation"
_OTHER = {str(s): ",".join(str(o) for o in Status if o is not s) for s in Status}


def is_terminal(run: Mapping[str, Any]) -> bool:
    return Status(run["status"]).is_terminal


def needs_decision(run: Mapping[str, Any]) -> bool:
    """Whether the run waits for someone to confirm or discard it: not once either was asked
    for (the daemon records both at once; the run moves on a moment later)."""
    ts = run["timestamps"]
    return (
        run["status"] == "apply_pending"
        and ts["confirmed_at"] is None
        and ts.get("discard_requested_at") is None
    )


@dataclass
class _Log:
    """What the log stream has shown; survives reconnects (the stream restarts at byte 0)."""

    progress: Progress
    shown: int  # bytes of the stream already on screen (from an earlier `follow` too)
    marker: bool = False
    tail: bytes = b""
    ended: trio.Event = field(default_factory=trio.Event)
    arrived: trio.Event = field(default_factory=trio.Event)

    def take(self, chunk: bytes, pos: int) -> int:
        """Show the part of `chunk` (at stream offset `pos`) not shown yet; the next offset."""
        end = pos + len(chunk)
        if end > self.shown:
            new = chunk[max(0, self.shown - pos) :]
            self.shown = end
            self.progress.log(new)
            window = self.tail + new
            self.marker = self.marker or WAIT_MARKER in window
            self.tail = window[-len(WAIT_MARKER) :]
            self.arrived.set()
            self.arrived = trio.Event()
        return end


async def follow(
    settings: Settings,
    run_id: str,
    progress: Progress,
    *,
    skip: int = 0,
    stop_for_decision: bool = True,
) -> tuple[dict[str, Any], int]:
    """Show the run live until it ends or (`stop_for_decision`) waits for a decision; return
    its view and how many log bytes have been shown (pass that as `skip` to go on without
    repeating the log).

    Cancellation (Ctrl-C) stops following and leaves the run alone. Raises `CliError` when the
    daemon cannot be reached or refuses; a broken log stream alone is reconnected."""
    log = _Log(progress, skip)
    async with httpx.AsyncClient(
        base_url=settings.url, headers=settings.headers(), timeout=TIMEOUT
    ) as http:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_stream, http, settings, run_id, log, name=f"log {run_id}")
                if progress.live:
                    nursery.start_soon(_tick, progress, name="status line")
                run = await _watch(http, settings, run_id, log, stop_for_decision)
                if needs_decision(run):
                    await _settle(log)
                else:
                    with trio.move_on_after(DRAIN):
                        await log.ended.wait()
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise _unwrap(group) from None
        finally:
            progress.clear()
    return run, log.shown


async def _get(http: httpx.AsyncClient, settings: Settings, path: str, **params: Any) -> Any:
    try:
        response = await http.get(path, params=params, timeout=TIMEOUT + LONG_POLL)
    except httpx.TransportError as exc:
        raise unreachable(settings, exc) from None
    if not response.is_success:
        raise refused(settings, response)
    return response.json()["data"]


async def _watch(
    http: httpx.AsyncClient, settings: Settings, run_id: str, log: _Log, stop_for_decision: bool
) -> dict[str, Any]:
    """Long-poll the run, updating the status line, until it is terminal (or needs a
    decision, when `stop_for_decision`)."""
    run: dict[str, Any] = await _get(http, settings, f"/api/v1/runs/{run_id}")
    note, note_at = "", -QUEUE_NOTE_EVERY
    while True:
        if run["status"] == "pending":
            if trio.current_time() - note_at >= QUEUE_NOTE_EVERY:
                note, note_at = await _queue_note(http, settings, run), trio.current_time()
        elif needs_decision(run) and not stop_for_decision:
            note = f"waits for `tfward confirm {run_id}` or `tfward discard {run_id}`"
        else:
            note = ""
        if run["status"] != "apply_pending":
            log.marker = False  # a marker seen so far belongs to an earlier plan
        log.progress.update(run, note)
        if is_terminal(run) or (stop_for_decision and needs_decision(run)):
            return run
        run = await _get(
            http,
            settings,
            f"/api/v1/runs/{run_id}",
            wait_status=_OTHER[run["status"]],
            wait_timeout=LONG_POLL,
        )


async def _queue_note(http: httpx.AsyncClient, settings: Settings, run: Mapping[str, Any]) -> str:
    """What a pending run waits for: the workspace's current run, or a user's lock."""
    ws = await _get(http, settings, f"/api/v1/workspaces/{run['workspace']}")
    current, lock = ws.get("current_run"), ws.get("lock")
    if current and current["id"] != run["id"]:
        return f"queued behind {current['id']} ({current['status']})"
    if lock and lock.get("run_id") is None and not run["is_speculative"]:
        return f"workspace locked: {lock['message']}; `tfward unlock {run['workspace']}`"
    return "queued"


async def _stream(http: httpx.AsyncClient, settings: Settings, run_id: str, log: _Log) -> None:
    """Stream the log into `log` until the daemon ends it; reconnect when it breaks (the
    watcher notices a daemon that is gone). Cancelled when `follow` is done."""
    while True:
        pos = 0
        try:
            async with http.stream(
                "GET",
                f"/api/v1/runs/{run_id}/logs",
                params={"follow": "true"},
                timeout=httpx.Timeout(TIMEOUT, read=None),
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise refused(settings, response)
                async for chunk in response.aiter_bytes():
                    pos = log.take(chunk, pos)
            log.ended.set()
            return
        except httpx.TransportError:
            await trio.sleep(RECONNECT)


async def _tick(progress: Progress) -> None:
    while True:
        progress.draw()
        await trio.sleep(TICK)


async def _settle(log: _Log) -> None:
    """Wait until the plan output is on screen: the daemon's marker line, or the log has been
    quiet for a moment (bounded)."""
    with trio.move_on_after(SETTLE_MAX):
        while not log.marker:
            with trio.move_on_after(SETTLE_QUIET) as quiet:
                await log.arrived.wait()
            if quiet.cancelled_caught:
                return


def _unwrap(group: BaseExceptionGroup[Any]) -> BaseException:
    """The exception a user should see: Ctrl-C first, then a closed stdout (`| head`), then
    the CLI's own error."""
    for wanted in (KeyboardInterrupt, BrokenPipeError, CliError):
        matched, _ = group.split(wanted)
        if matched is not None:
            leaf: BaseException = matched
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            return leaf
    return group
