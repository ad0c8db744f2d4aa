"""Run endpoints: create, list, show, actions, logs (optionally followed), plan JSON."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import trio
from quart import Response
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

from . import audited, auth, query
from .body import json_object, string_list
from .plans import masked_plan_json
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
LOG_POLL = 0.5
COMMIT_DEBOUNCE = 0.01


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
    async def show_run(run_id: str) -> dict[str, Any]:
        """`?wait_status=a,b&wait_timeout=30` long-polls until the run is in one of the
        statuses (or is terminal), or the timeout passes; the run is returned either way."""
        run = await store.read(lambda c: run_store.get_run(c, run_id))
        wanted: set[str] = set(query.args()["wait_status"] or ())
        timeout: float = query.args()["wait_timeout"]  # checked: 0 to 300 (query.py)
        with trio.move_on_after(timeout):
            while wanted and str(run.status) not in wanted and not run.status.is_terminal:
                committed = store.committed  # taken before reading: no wake-up is missed
                run = await store.read(lambda c: run_store.get_run(c, run_id))
                if str(run.status) not in wanted and not run.status.is_terminal:
                    await committed.wait()
                    # Writes come in bursts (a stage change, its outbox row): read once per burst.
                    await trio.sleep(COMMIT_DEBOUNCE)
        return {"data": run_view(run)}

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
        await store.read(lambda c: run_store.get_run(c, run_id))  # 404 for an unknown run
        follow: bool = query.args()["follow"]
        body = _follow(daemon, run_id) if follow else stored_log(daemon, run_id)
        response = Response(body, content_type="text/plain")
        response.timeout = None
        return response


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


async def _follow(daemon: Daemon, run_id: str) -> AsyncIterator[bytes]:
    """Stream the log from the start until the run ends (or the daemon stops)."""
    last = -1
    while True:
        # Whether it had ended is read before draining: what it stored before ending is sent.
        run = await daemon.store.read(lambda c: run_store.get_run(c, run_id))
        live = daemon.rt.live_logs.get(run_id)
        ended = run.status.is_terminal and live is None
        while batch := await _chunks(daemon, run_id, last):
            last = batch[-1][0]
            for _, data in batch:
                yield data
        if ended or (daemon.stopping and daemon.supervisor.stopped.is_set()):
            return
        with trio.move_on_after(LOG_POLL):
            if live is not None:
                await live.changed.wait()
                await trio.sleep(0.2)  # let the flusher store what just arrived
            else:
                await trio.sleep_forever()
