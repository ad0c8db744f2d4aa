"""Following a run live through its event stream, until it ends or waits for a decision.

`follow` runs under trio: one task reads `GET /api/v1/runs/{id}/events` (server-sent events:
`log`, `run`, `end`) into a channel, one redraws the status line on a TTY, and the calling task
takes the events in order — log lines to `Progress.log`, each new view of the run to the
status line. It returns when the run is terminal (the stream's `end`: every log line has been
sent before it) or when the run waits for a decision (`apply_pending`, not yet confirmed) once
its plan output has been shown. A stream that breaks is opened again with `Last-Event-ID` (the
log offset shown so far): no line is lost or shown twice. A daemon that is gone is exit 4.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from tfward.runs.model import Status

from .client import TIMEOUT, CliError, Settings, refused, unreachable
from .render import Progress

TICK = 0.25  # redraw of the live status line (elapsed time, spinner)
QUEUE_NOTE_EVERY = 2.0  # while pending: how often to ask what the run waits for
# apply_pending: let the plan output arrive first. The marker line normally comes within a
# flush (0.2 s); the quiet bound only matters when it never comes, so it can be generous.
SETTLE_QUIET, SETTLE_MAX = 2.0, 6.0
RECONNECT = 0.5
# The daemon's own log line once a run waits in apply_pending: the plan output is all there.
WAIT_MARKER = b"[tfward] waiting for confirmation"


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


@dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event: its name, its data (JSON), its id (a log offset) if it had one."""

    kind: str
    data: Any
    id: int | None = None


@dataclass
class _Log:
    """What the stream has shown; `shown` is the log offset to resume from (from an earlier
    `follow` too)."""

    progress: Progress
    shown: int
    marker: bool = False
    tail: bytes = b""

    def take(self, event: Event) -> None:
        """Show a `log` event's lines unless they were shown already."""
        end = event.id if event.id is not None else self.shown
        if end <= self.shown:
            return
        new = event.data["lines"].encode()
        if event.data["offset"] < self.shown:  # overlaps what was shown (not from the daemon)
            new = new[self.shown - event.data["offset"] :]
        self.shown = end
        self.progress.log(new)
        window = self.tail + new
        self.marker = self.marker or WAIT_MARKER in window
        self.tail = window[-len(WAIT_MARKER) :]


async def follow(
    settings: Settings,
    run_id: str,
    progress: Progress,
    *,
    skip: int = 0,
    stop_for_decision: bool = True,
) -> tuple[dict[str, Any], int]:
    """Show the run live until it ends or (`stop_for_decision`) waits for a decision; return
    its view and the log offset shown up to (pass that as `skip` to go on without repeating
    the log).

    Cancellation (Ctrl-C) stops following and leaves the run alone. Raises `CliError` when the
    daemon cannot be reached or refuses; a broken stream alone is opened again."""
    log = _Log(progress, skip)
    async with httpx.AsyncClient(
        base_url=settings.url, headers=settings.headers(), timeout=TIMEOUT
    ) as http:
        try:
            async with trio.open_nursery() as nursery:
                send, receive = trio.open_memory_channel[Event](math.inf)
                nursery.start_soon(_read, http, settings, run_id, log, send, name=f"run {run_id}")
                if progress.live:
                    nursery.start_soon(_tick, progress, name="status line")
                run = await _watch(http, settings, log, receive, stop_for_decision)
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise _unwrap(group) from None
        finally:
            progress.clear()
    return run, log.shown


async def _watch(
    http: httpx.AsyncClient,
    settings: Settings,
    log: _Log,
    receive: trio.MemoryReceiveChannel[Event],
    stop_for_decision: bool,
) -> dict[str, Any]:
    """Take the stream's events until the run ends (or needs a decision, when
    `stop_for_decision`); its last view. While it is queued, what it waits for is asked every
    QUEUE_NOTE_EVERY seconds."""
    run: dict[str, Any] | None = None
    while True:
        queued = run is not None and run["status"] == "pending"
        with trio.move_on_after(QUEUE_NOTE_EVERY if queued else math.inf):
            event = await receive.receive()
            if event.kind == "log":
                log.take(event)
                continue
            if event.kind == "end" and run is not None:
                return run
            if event.kind != "run":
                continue
            run = event.data
        assert run is not None  # a timeout only happens once a run was seen
        note = await _note(http, settings, run, stop_for_decision)
        if run["status"] != "apply_pending":
            log.marker = False  # a marker seen so far belongs to an earlier plan
        log.progress.update(run, note)
        if stop_for_decision and needs_decision(run):
            await _settle(log, receive)
            return run


async def _note(
    http: httpx.AsyncClient, settings: Settings, run: Mapping[str, Any], stop_for_decision: bool
) -> str:
    if run["status"] == "pending":
        return await _queue_note(http, settings, run)
    if needs_decision(run) and not stop_for_decision:
        return f"waits for `tfward confirm {run['id']}` or `tfward discard {run['id']}`"
    return ""


async def _queue_note(http: httpx.AsyncClient, settings: Settings, run: Mapping[str, Any]) -> str:
    """What a pending run waits for: the workspace's current run, or a user's lock."""
    try:
        response = await http.get(f"/api/v1/workspaces/{run['workspace']}")
    except httpx.TransportError as exc:
        raise unreachable(settings, exc) from None
    if not response.is_success:
        raise refused(settings, response)
    ws = response.json()["data"]
    current, lock = ws.get("current_run"), ws.get("lock")
    if current and current["id"] != run["id"]:
        return f"queued behind {current['id']} ({current['status']})"
    if lock and lock.get("run_id") is None and not run["is_speculative"]:
        return f"workspace locked: {lock['message']}; `tfward unlock {run['workspace']}`"
    return "queued"


async def _read(
    http: httpx.AsyncClient,
    settings: Settings,
    run_id: str,
    log: _Log,
    send: trio.MemorySendChannel[Event],
) -> None:
    """Read the run's event stream into `send` until its `end`. A stream that breaks or ends
    without it (the daemon stopped) is opened again from the last log offset received; a
    daemon that cannot be reached raises CliError (exit 4), one that refuses CliError too."""
    offset = log.shown
    while True:
        resume = {"Last-Event-ID": str(offset)} if offset else {}
        try:
            async with http.stream(
                "GET",
                f"/api/v1/runs/{run_id}/events",
                headers=resume,
                timeout=httpx.Timeout(TIMEOUT, read=None),
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise refused(settings, response)
                parser, ended = _Parser(), False
                # Read to the stream's end (it closes after `end`), so no iterator is
                # left half-read.
                async for line in response.aiter_lines():
                    if (event := parser.feed(line)) is not None:
                        await send.send(event)
                        ended = ended or event.kind == "end"
                        offset = max(offset, event.id or 0)
                if ended:
                    return
        except httpx.ConnectError as exc:
            raise unreachable(settings, exc) from None
        except httpx.TransportError:
            pass  # broken mid-stream: open it again
        await trio.sleep(RECONNECT)


class _Parser:
    """Server-sent events from the stream's lines, one line at a time (comments, such as the
    heartbeat, are skipped)."""

    def __init__(self) -> None:
        self.kind = "message"
        self.id: int | None = None
        self.data: list[str] = []

    def feed(self, line: str) -> Event | None:
        """The event this line completes, if any."""
        if not line:
            event = (
                Event(self.kind, json.loads("\n".join(self.data)), self.id) if self.data else None
            )
            self.kind, self.id, self.data = "message", None, []
            return event
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.kind = value
        elif name == "data":
            self.data.append(value)
        elif name == "id" and value.isdecimal():
            self.id = int(value)
        return None


async def _tick(progress: Progress) -> None:
    while True:
        progress.draw()
        await trio.sleep(TICK)


async def _settle(log: _Log, receive: trio.MemoryReceiveChannel[Event]) -> None:
    """Wait until the plan output is on screen: the daemon's marker line, or the stream has
    been quiet for a moment (bounded)."""
    with trio.move_on_after(SETTLE_MAX):
        while not log.marker:
            with trio.move_on_after(SETTLE_QUIET) as quiet:
                event = await receive.receive()
            if quiet.cancelled_caught:
                return
            if event.kind == "log":
                log.take(event)


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
