"""A run's page (`/runs/{id}`), its actions and its whole log (`/runs/{id}/log`).

The page sends only the log's last `LOG_TAIL` bytes, with a link to the whole log: a run of
50 MB of output costs the browser the tail until someone asks for more. Actions call
`routes_runs.act_on_run`, as the API's route does, with the role its table names.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from quart import Blueprint, Response
from sqlalchemy import Connection

from tfward.errors import BadRequest, NotFound
from tfward.ids import now
from tfward.runs.model import Run, allowed_actions
from tfward.store import artifacts, tasks
from tfward.store import runs as run_store
from tfward.store.runs import TimelineEntry
from tfward.store.tasks import TaskResult

from ..api import query
from ..api.plans import masked_plan_json
from ..api.routes_runs import act_on_run, stored_log
from . import forms, views
from .common import context, may, require, see_other
from .render import page

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon

LOG_TAIL = 256 * 1024  # bytes of the log a run page starts with
RUN_ACTIONS = ("confirm", "discard", "cancel", "force-cancel")


@dataclass(frozen=True, slots=True)
class Tail:
    start: int  # byte offset of the first byte shown
    size: int  # bytes in the whole log
    text: str

    @property
    def cut(self) -> bool:
        return self.start > 0


def register(web: Blueprint, daemon: Daemon) -> None:
    store = daemon.store

    @web.get("/runs/<run_id>")
    async def run(run_id: str) -> Response:
        live: bool = query.args()["live"]

        def load(conn: Connection) -> tuple[Run, list[TimelineEntry], list[TaskResult], Tail]:
            found = run_store.get_run(conn, run_id)
            start, size, data = (0, 0, b"") if live else artifacts.read_log_tail(
                conn, run_id, LOG_TAIL
            )  # fmt: skip
            tail = Tail(start, size, data.decode("utf-8", "replace"))
            return found, run_store.timeline(conn, run_id), tasks.list_for_run(conn, run_id), tail

        found, entries, results, tail = await store.read(load)
        changes, total = await _changes(daemon, found)
        allowed = allowed_actions(found)
        values = context(
            "workspaces",
            run=found,
            steps=views.timeline(found, entries, now()),
            changes=changes,
            total_changes=total,
            stages=views.tasks_by_stage(results),
            safe_link=views.safe_link,
            tail=tail,
            live=live,
            # Buttons the role allows; shown while the run's state allows them (the script
            # shows and hides them as the run moves on).
            buttons=[(a, a in allowed) for a in RUN_ACTIONS if may("run", a)],
        )
        return await page("run.html", values)

    @web.post("/runs/<run_id>/actions/<action>")
    async def run_action(run_id: str, action: str) -> Response:
        if action not in RUN_ACTIONS:
            raise BadRequest(f"unknown run action {action!r}")
        require("run", action)
        form = await forms.fields({"comment"})
        await act_on_run(daemon, run_id, action, form.get("comment") or None)
        return see_other(f"/runs/{run_id}")

    @web.get("/runs/<run_id>/log")
    async def full_log(run_id: str) -> Response:
        await store.read(lambda c: run_store.get_run(c, run_id))  # 404 for an unknown run
        response = Response(stored_log(daemon, run_id), content_type="text/plain; charset=utf-8")
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.timeout = None
        return response


async def _changes(daemon: Daemon, run: Run) -> tuple[list[views.Change], int]:
    """The run's planned resource changes (masked), if it has a plan."""
    if run.planned_at is None:
        return [], 0
    try:
        plan = await masked_plan_json(daemon, run.id)
    except NotFound:
        return [], 0
    return await trio.to_thread.run_sync(functools.partial(views.resource_changes, plan))
