"""The web page's live updates: the API's event streams, for a session (docs/architecture.md
§14).

A browser's EventSource sends the page's cookie, not a bearer token, so the page has two
routes of its own that answer with the very streams of the API (api/streams.py), behind the
session check every page has (app.py) and the role the API's table names for them:

    /runs/{id}/events   is  GET /api/v1/runs/{id}/events   (the run page)
    /events             is  GET /api/v1/events             (the workspaces and releases pages)

A run page's first connection names the log offset its page already shows (`?after=N`: an
EventSource cannot send a header then); a reconnect's `Last-Event-ID` wins over it.

A stream checks its session again once a heartbeat interval has passed (`[daemon]
event_heartbeat`, 15 s), without counting that as a use (an open page is not a person using
it): once the session has ended (sign-out, idle, expiry, its token removed) the stream ends, and
the browser's reconnect gets 401 and stops.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TYPE_CHECKING

import trio
from quart import Blueprint, Response, g, request

from tfward.errors import StorageUnavailable

from ..api import query, streams
from .common import require

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon

AFTER = query.integer(
    "after",
    "The log offset the page already shows (a reconnect's Last-Event-ID wins over it).",
    default=0,
    low=0,
    high=10**18,
)


def register(web: Blueprint, daemon: Daemon) -> None:
    @web.get("/runs/<run_id>/events")
    async def run_events(run_id: str) -> Response:
        require("run_events")
        header = request.headers.get("Last-Event-ID")
        offset = streams.last_event_id(header) if header else query.args()["after"]
        await daemon.run_views.get(run_id)  # 404 for an unknown run, before the stream
        body = streams.run_events(daemon, run_id, offset)
        return streams.response(while_signed_in(daemon, g.signed.session_id, body))

    @web.get("/events")
    async def events() -> Response:
        require("events")
        body = streams.workspace_events(daemon)
        return streams.response(while_signed_in(daemon, g.signed.session_id, body))


async def while_signed_in(
    daemon: Daemon, session_id: str, body: AsyncGenerator[bytes, None]
) -> AsyncGenerator[bytes, None]:
    """The events of `body` while the session lasts; `body` is closed however this ends
    (cancelled with the request when the browser goes away). While storage fails the session
    cannot be read: the stream goes on, and checks again later."""
    checked, every = trio.current_time(), daemon.config.daemon.event_heartbeat
    async with aclosing(body) as events:
        async for event in events:
            if trio.current_time() - checked >= every:
                checked = trio.current_time()
                if not await _still_signed_in(daemon, session_id):
                    return
            yield event


async def _still_signed_in(daemon: Daemon, session_id: str) -> bool:
    try:
        return await daemon.sessions.find(session_id, use=False) is not None
    except StorageUnavailable:
        return True  # unknown for now: the next check decides
