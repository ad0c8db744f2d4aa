"""Run endpoints: create, list, show (long-polled), actions, logs (optionally followed), the run's
event stream, plan JSON. The streams are in streams.py; the view of a run comes from RunViews
(runviews.py), and fastpath.py answers the plain `GET /api/v1/runs/{id}` without Quart."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, request
from quart_trio import QuartTrio
from sqlalchemy import Connection
from werkzeug.exceptions import NotFound as HTTPNotFound
from werkzeug.exceptions import ServiceUnavailable

from tfward.actors.actions import cancel_run, confirm_run, discard_run
from tfward.actors.workspace import Submitted
from tfward.errors import BadRequest
from tfward.runs.model import Operation, Run
from tfward.store import artifacts
from tfward.store import runs as run_store
from tfward.store import workspaces as ws_store
from tfward.store.audit import AuditAction
from tfward.store.changes import Key

from . import audited, auth, query, streams
from .body import json_object, string_list
from .plans import masked_plan_json
from .runviews import RunEntry
from .views import run_view

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon

_CREATE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "operation": str,
    "auto_apply": bool,
    "message": str,
    "targets": list,
    "replace": list,
    "configuration_version_id": str,
}


def register(app: QuartTrio, daemon: Daemon) -> None:
    store = daemon.store

    @app.post("/api/v1/workspaces/<name>/runs")
    async def create_run(name: str) -> tuple[dict[str, Any], int]:
        if daemon.stopping:
            raise ServiceUnavailable(f"not accepting runs: {daemon.stop_reason}")
        run = await start_run(daemon, name, await json_object(_CREATE_FIELDS))
        return {"data": run_view(run)}, 201

    @app.get("/api/v1/workspaces/<name>/runs")
    async def list_runs(name: str) -> dict[str, Any]:
        limit: int = query.args()["limit"]

        def load(conn: Connection) -> list[Run]:
            return run_store.list_runs(
                conn, workspace_id=ws_store.workspace_id(conn, name), limit=limit
            )

        return {"data": [run_view(r) for r in await store.read(load)]}

    @app.get("/api/v1/runs/<run_id>")
    async def show_run(run_id: str) -> Response:
        """`?wait_status=a,b&wait_timeout=30` long-polls until the run is in one of the
        statuses (or is terminal), or the timeout passes; the run is returned either way."""
        entry = await daemon.run_views.get(run_id)
        wanted: set[str] = set(query.args()["wait_status"] or ())
        if wanted and not _reached(entry, wanted):
            timeout: float = query.args()["wait_timeout"]  # checked: 0 to 300 (query.py)
            with trio.move_on_after(timeout), store.changes.subscribe(Key.run(run_id)) as sub:
                # Subscribed before reading: a change after this read wakes the wait.
                while not _reached(entry := await daemon.run_views.get(run_id), wanted):
                    if store.changes.closed:
                        break  # the daemon stops serving: answer with what is
                    await sub.wait()
        return Response(entry.body, content_type="application/json")

    @app.post("/api/v1/runs/<run_id>/actions/<action>")
    async def run_action(run_id: str, action: str) -> tuple[dict[str, Any], int]:
        body = await json_object({"comment": str})
        run = await act_on_run(daemon, run_id, action, body.get("comment"))
        return {"data": run_view(run)}, 202

    @app.get("/api/v1/runs/<run_id>/plan")
    async def plan_json(run_id: str) -> Response:
        return Response(await masked_plan_json(daemon, run_id), content_type="application/json")

    @app.get("/api/v1/runs/<run_id>/logs")
    async def logs(run_id: str) -> Response:
        await daemon.run_views.get(run_id)  # 404 for an unknown run
        follow: bool = query.args()["follow"]
        body = streams.followed_log(daemon, run_id) if follow else stored_log(daemon, run_id)
        response = Response(body, content_type="text/plain")
        response.timeout = None  # a followed log ends with the run (docs/architecture.md §16)
        return response

    @app.get("/api/v1/runs/<run_id>/events")
    async def run_events(run_id: str) -> Response:
        """The run's event stream (streams.py); `Last-Event-ID` resumes the log."""
        offset = streams.last_event_id(request.headers.get("Last-Event-ID"))
        await daemon.run_views.get(run_id)  # 404 for an unknown run, before the stream
        return streams.response(streams.run_events(daemon, run_id, offset))


def _reached(entry: RunEntry, wanted: set[str]) -> bool:
    status = entry.run.status
    return str(status) in wanted or status.is_terminal


async def start_run(daemon: Daemon, name: str, body: Mapping[str, Any]) -> Run:
    """Create a run of workspace `name` as `body` (the API's create fields, already checked for
    their types) asks, for the current caller, and hand it to the workspace's actor. A
    speculative plan needs the role `plan` (the route's), anything else `apply`
    (AccessDenied). 422 for a bad value, 404 for an unknown workspace or configuration version;
    503 while the daemon stops. The API's route and the web page's form both come here."""
    if daemon.stopping:
        raise ServiceUnavailable(f"not accepting runs: {daemon.stop_reason}")
    try:
        operation = Operation(body.get("operation") or "plan_and_apply")
    except ValueError:
        raise BadRequest(
            f"field 'operation': expected one of {', '.join(o.value for o in Operation)}"
        ) from None
    auth.require_role(auth.OPERATION_ROLES[operation])  # `plan` was the route's own check
    targets, replace = string_list(body, "targets"), string_list(body, "replace")
    # A configured workspace's id is known in memory: no read on the way to the run.
    ws_id = daemon.rt.workspace_ids.get(name)
    if ws_id is None:  # not configured: 404, as the database names it
        ws_id = await daemon.store.read(lambda c: ws_store.workspace_id(c, name))
    ws = daemon.rt.workspace(name)
    auto_apply, by = body.get("auto_apply"), auth.caller()
    cv_id = body.get("configuration_version_id")

    def tx(conn: Connection) -> Run:
        if cv_id is not None:  # an older configuration of this workspace, applied as it is
            artifacts.configuration_of_workspace(conn, cv_id, ws_id, name)
        return run_store.create_run(
            conn,
            workspace_id=ws_id,
            workspace_name=name,
            operation=operation,
            auto_apply=ws.auto_apply if auto_apply is None else auto_apply,
            message=body.get("message") or "",
            targets=targets,
            replace=replace,
            created_by=by,
            pinned_configuration_version_id=cv_id,
            notified=daemon.rt.notifies(name, "run:created"),
        )

    run = await daemon.store.write(tx)
    daemon.supervisor.tell(name, Submitted(run.id, run.is_speculative))
    return run


async def act_on_run(daemon: Daemon, run_id: str, action: str, comment: str | None) -> Run:
    """Confirm, discard, cancel or force-cancel a run for the current caller (whose role the
    route has checked): the actions of actors/actions.py, force-cancel through the audit
    trail. 404 for an unknown action or run, 409 when the run's state machine refuses."""
    by = auth.caller()
    if action == "confirm":
        return await confirm_run(daemon.supervisor, run_id, by=by)
    if action == "discard":
        reason = comment or f"discarded by {by}"
        return await discard_run(daemon.supervisor, run_id, by=by, reason=reason)
    if action == "cancel":
        return await cancel_run(daemon.supervisor, run_id)
    if action == "force-cancel":
        tried = audited.attempt(AuditAction.FORCE_CANCEL, f"run {run_id}")
        async with audited.refusals_recorded(daemon.store, tried):
            return await cancel_run(daemon.supervisor, run_id, force=True, audit=tried)
    raise HTTPNotFound(f"unknown run action {action!r}")


LOG_BATCH = 8  # chunks per read: a large log streams without being held in memory


async def _chunks(daemon: Daemon, run_id: str, after: int) -> list[tuple[int, bytes]]:
    read = functools.partial(artifacts.read_log, run_id=run_id, after_seq=after, limit=LOG_BATCH)
    return await daemon.store.read(read)


async def stored_log(daemon: Daemon, run_id: str) -> AsyncIterator[bytes]:
    """The log as stored now, chunk by chunk."""
    after = -1
    while batch := await _chunks(daemon, run_id, after):
        after = batch[-1][0]
        for _, data in batch:
            yield data
