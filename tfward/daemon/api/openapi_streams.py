"""The event streams of the OpenAPI document (streams.py), written as openapi_paths.py writes
the other routes: `text/event-stream` answers, and the `Last-Event-ID` header a run's stream
resumes from."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .openapi_paths import RUN, STRING
from .openapi_schemas import Schema

if TYPE_CHECKING:
    from .openapi import Paths

EVENTS = "text/event-stream"
# The offset a log event gave as its id: the run's event stream resumes there.
LAST_EVENT_ID: Schema = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "Resume the log from this byte offset (the id of the last `log` event).",
    "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
}


def streams(p: Paths) -> None:
    p.add(
        "GET",
        f"{RUN}/events",
        "run_events",
        "The run's events, streamed until it ends",
        tag="runs",
        ok=STRING,
        media=EVENTS,
        errors=[404],
        headers=[LAST_EVENT_ID],
        notes=(
            "Server-sent events: `run` (data: the run's view, first at once, then after each "
            "change), `log` (data: `{offset, lines}`, the masked log lines stored from byte "
            "`offset` on; its `id` is the byte offset just past them), `end` (data: `{id, "
            "status}`; the stream closes after it). A comment line every `[daemon] "
            "event_heartbeat` (15 s) while nothing happens. `Last-Event-ID` resumes the log "
            "from that offset: every line once."
        ),
    )
    p.add(
        "GET",
        "/api/v1/events",
        "workspace_events",
        "Workspace events for overview pages, streamed",
        tag="workspaces",
        ok=STRING,
        media=EVENTS,
        notes=(
            "Server-sent events: `workspace` (data: a workspace's row — `name`, `latest_run`, "
            "`current_run` (`id`, `operation`, `status`, `stage`, `error_kind`, times), "
            "`queued_runs`, `lock`, `drift`, `latest_state_version`), one per configured "
            "workspace when the stream starts and again whenever that row changes; "
            "`workspace_removed` (data: `{name}`) when one leaves the config. A comment line "
            "every `[daemon] event_heartbeat` (15 s) while nothing happens. Events carry no "
            "id: a new connection starts with every workspace again."
        ),
    )
