"""The API's streams: a run's events (server-sent events), its followed log, workspace events.

    GET /api/v1/runs/{id}/events   event: run   data: the run's view, first, then after each
                                                change
                                   event: log   data: {"offset": N, "lines": "..."}, id: the
                                                offset just past those lines
                                   event: end   data: {"id": ..., "status": ...} once the run
                                                has ended and all its log was sent; it closes
    GET /api/v1/runs/{id}/logs?follow=true      the log's bytes as they are stored
    GET /api/v1/events             event: workspace          data: a workspace's summary row
                                   event: workspace_removed  data: {"name": ...}

Nothing here polls (docs/architecture.md §13). A stream subscribes to the change hub's keys
(store/changes.py) before it reads; it wakes when its run or its run's log changed (or, for
workspace events, when a workspace did, learning which), reads what it needs and sends what is
new. A run's view comes from `RunViews` (read once per change, shared by all its followers),
new log lines from the live run log's window (actors/logtail.py), so twenty followers of a run
cost about one. Quiet streams get a comment every `[daemon] event_heartbeat` (15 s).

`Last-Event-ID: N` (an offset a `log` event gave) resumes a run's stream from byte N of the
log: every line after it, none twice. The `run` event comes first on every connection and
carries no id (the last offset stays the one to resume from); a view is sent before the log
lines stored after it was read. A workspace stream starts with
every configured workspace on every connection, so it needs no id to resume.

Streams end when the daemon has drained its runs and closes the hub, before the API stops
(docs/architecture.md §16, traps 2 and 3: the routes set no response timeout, and Hypercorn's
graceful shutdown does not wait for them), and when the client goes away (cancellation; the
subscription is dropped with the generator).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from quart import Response

from tfward.actors import logtail
from tfward.errors import BadRequest
from tfward.ids import rfc3339
from tfward.store import overview
from tfward.store.changes import Key, Subscription, Topic

from .runviews import RunEntry, encode
from .views import lock_view

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon

EVENT_STREAM = "text/event-stream"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
LOG_EVENT_BYTES = 64 << 10  # log lines per event at most (a longer line goes whole)
HEARTBEAT = b": heartbeat\n\n"
_OFFSET = re.compile(r"[0-9]{1,18}")


def response(body: AsyncIterator[bytes]) -> Response:
    """An event stream as the answer to a request: no response timeout (docs/architecture.md
    §16, trap 2; the stream ends with the daemon or the client). The API's routes and the web page's
    (daemon/web/pages_events.py) answer with it."""
    answer = Response(body, content_type=EVENT_STREAM, headers=HEADERS)
    answer.timeout = None
    return answer


def sse(event: str, data: bytes, event_id: int | None = None) -> bytes:
    """One server-sent event; `data` is one line of JSON."""
    ident = b"" if event_id is None else b"id: %d\n" % event_id
    return b"event: " + event.encode() + b"\n" + ident + b"data: " + data + b"\n\n"


@dataclass(frozen=True, slots=True)
class LogPiece:
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class RunChanged:
    entry: RunEntry
    last: bool  # the run has ended and its whole log was sent: nothing follows


_Beat = None  # a quiet interval passed


async def run_feed(
    daemon: Daemon, run_id: str, offset: int
) -> AsyncGenerator[LogPiece | RunChanged | None, None]:
    """What happens to a run, from byte `offset` of its log on: its view when it changed
    (first at once), log pieces as they are stored, None for a quiet heartbeat interval; once
    it has ended and its log is sent, `RunChanged` with `last`, and nothing more. Ends early
    when the hub closes. NotFound before anything for an unknown run; StorageUnavailable when
    the database does not read."""
    hub = daemon.store.changes
    sent = b""
    with hub.subscribe(Key.run(run_id), Key.log(run_id)) as sub:
        while True:
            # Read before the log is drained: what a run stored before it ended is sent.
            entry = await daemon.run_views.get(run_id)
            if entry.view != sent:
                sent = entry.view
                yield RunChanged(entry, False)
            while data := await _stored(daemon, run_id, offset):
                yield LogPiece(offset, data)
                offset += len(data)
            if entry.run.status.is_terminal:
                yield RunChanged(entry, True)
                return
            if hub.closed:
                return
            while await _quietly(sub, daemon.config.daemon.event_heartbeat) is None:
                yield _Beat


async def _stored(daemon: Daemon, run_id: str, offset: int) -> bytes:
    live = daemon.rt.live_logs.get(run_id)
    window = live.window if live is not None else None
    return await logtail.read_at(daemon.store, window, run_id, offset, LOG_EVENT_BYTES)


async def _quietly(sub: Subscription, heartbeat: float) -> set[Key] | None:
    """Wait for a change: the keys that changed (empty after the hub's fallback interval or
    its close), or None when `heartbeat` passed first."""
    changed: set[Key] | None = None
    with trio.move_on_after(heartbeat):
        changed = await sub.wait()
    return changed


async def run_events(
    daemon: Daemon, run_id: str, offset: int
) -> AsyncGenerator[bytes, None]:
    """The run's event stream (see the module's docstring)."""
    async with aclosing(run_feed(daemon, run_id, offset)) as feed:
        async for item in feed:
            yield _run_event(item)


def _run_event(item: LogPiece | RunChanged | None) -> bytes:
    """An item of `run_feed` as server-sent events."""
    if isinstance(item, LogPiece):
        lines = item.data.decode("utf-8", "replace")
        data = encode({"offset": item.offset, "lines": lines})
        return sse("log", data, item.offset + len(item.data))
    if isinstance(item, RunChanged):
        if not item.last:
            return sse("run", item.entry.view)
        run = item.entry.run
        return sse("end", encode({"id": run.id, "status": str(run.status)}))
    return HEARTBEAT


async def followed_log(daemon: Daemon, run_id: str) -> AsyncIterator[bytes]:
    """The run's log from the start, as it is stored, until the run ends."""
    async with aclosing(run_feed(daemon, run_id, 0)) as feed:
        async for item in feed:
            if isinstance(item, LogPiece):
                yield item.data


def summary_view(summary: overview.Summary) -> dict[str, Any]:
    """A workspace as a row of an overview page."""
    return {
        "name": summary.name,
        "latest_run": _brief_view(summary.latest_run),
        "current_run": _brief_view(summary.current_run),
        "queued_runs": summary.queued_runs,
        "lock": lock_view(summary.lock),
        "drift": _times(summary.drift),
        "latest_state_version": _times(summary.latest_state),
    }


def _brief_view(run: overview.RunBrief | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "id": run.id,
        "operation": run.operation,
        "status": run.status,
        "stage": run.stage,
        "error_kind": run.error_kind,
        "created_at": rfc3339(run.created_at),
        "finished_at": rfc3339(run.finished_at),
    }


def _times(found: dict[str, Any] | None) -> dict[str, Any] | None:
    if found is None:
        return None
    return {k: rfc3339(v) if k.endswith("_at") else v for k, v in found.items()}


async def workspace_events(daemon: Daemon) -> AsyncGenerator[bytes, None]:
    """Every configured workspace's summary, then each one again when it changed (see the
    module's docstring); until the hub closes."""
    hub = daemon.store.changes
    sent: dict[str, bytes] = {}
    names: dict[str, str] = {}
    with hub.subscribe(Key.every(Topic.WORKSPACE)) as sub:
        wanted: list[str] | None = None  # all
        while True:
            found = await daemon.store.read(functools.partial(overview.summaries, ws_ids=wanted))
            for summary in found:
                if not summary.configured:
                    if sent.pop(summary.id, None) is not None:
                        yield sse("workspace_removed", encode({"name": names.pop(summary.id)}))
                    continue
                data = encode(summary_view(summary))
                if sent.get(summary.id) != data:
                    sent[summary.id], names[summary.id] = data, summary.name
                    yield sse("workspace", data)
            if hub.closed:
                return
            while (changed := await _quietly(sub, daemon.config.daemon.event_heartbeat)) is None:
                yield HEARTBEAT
            # The fallback (nothing heard) reads them all again.
            wanted = [key.id for key in changed] or None


def last_event_id(header: str | None) -> int:
    """The log offset a reconnecting client names (`Last-Event-ID`), 0 without one."""
    if header is None or header == "":
        return 0
    if not _OFFSET.fullmatch(header):
        raise BadRequest(
            f"header 'Last-Event-ID': expected a log offset (a number a log event gave as its "
            f"id), got {json.dumps(header[:60])}"
        )
    return int(header)
