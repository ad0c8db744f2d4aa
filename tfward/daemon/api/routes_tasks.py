"""Run-task endpoints: callbacks from task services, and what those services may read with
their access token (the plan JSON, its resource changes, the configuration archive).

Task services authenticate with the result's access token (`Authorization: Bearer ...`); the
answers are in `tfward/runtasks/callbacks.py` and docs/protocols.md. Listing and showing results
need no token and never show one.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from quart import Response, request
from quart_trio import QuartTrio
from sqlalchemy import Connection
from werkzeug.exceptions import ServiceUnavailable

from tfward.ids import rfc3339
from tfward.runtasks.callbacks import bearer_token
from tfward.runtasks.coordinator import RunTaskCoordinator
from tfward.store import artifacts, tasks
from tfward.store import runs as run_store
from tfward.store.tasks import TaskResult

from .plans import masked_plan_json

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon


def task_result_view(result: TaskResult) -> dict[str, Any]:
    return {
        "id": result.id,
        "run_id": result.run_id,
        "workspace_id": result.workspace_id,
        "task_name": result.task_name,
        "stage": result.stage,
        "enforcement": result.enforcement,
        "status": result.status,
        "message": result.message,
        "url": result.url,
        "outcomes": result.outcomes,
        "timestamps": {
            "created_at": rfc3339(result.created_at),
            "updated_at": rfc3339(result.updated_at),
            "last_progress_at": rfc3339(result.last_progress_at),
            "token_expires_at": rfc3339(result.token_expires_at),
            "token_revoked_at": rfc3339(result.token_revoked_at),
        },
    }


def register(app: QuartTrio, daemon: Daemon) -> None:
    store = daemon.store

    def coordinator() -> RunTaskCoordinator:
        found = daemon.rt.run_tasks
        if found is None:
            raise ServiceUnavailable("run tasks are not available yet")
        return found

    def token() -> str | None:
        return bearer_token(request.headers.get("Authorization"))

    @app.route("/api/v1/run-task-results/<result_id>/callback", methods=["PATCH", "POST"])
    async def task_callback(result_id: str) -> dict[str, Any]:
        raw = await request.get_data()
        body = raw.encode() if isinstance(raw, str) else raw
        result = await coordinator().callback(result_id, token(), body)
        return {"data": task_result_view(result)}

    @app.get("/api/v1/run-task-results/<result_id>")
    async def show_task_result(result_id: str) -> dict[str, Any]:
        return {"data": task_result_view(await store.read(lambda c: tasks.get(c, result_id)))}

    @app.get("/api/v1/run-task-results/<result_id>/plan-json")
    async def task_plan_json(result_id: str) -> Response:
        result = await coordinator().authorize(result_id, token())
        raw = await masked_plan_json(daemon, result.run_id)
        return Response(raw, content_type="application/json")

    @app.get("/api/v1/run-task-results/<result_id>/resource-changes")
    async def task_resource_changes(result_id: str) -> dict[str, Any]:
        result = await coordinator().authorize(result_id, token())
        plan = json.loads(await masked_plan_json(daemon, result.run_id)) or {}
        return {"data": plan.get("resource_changes") or []}

    @app.get("/api/v1/runs/<run_id>/task-results")
    async def run_task_results(run_id: str) -> dict[str, Any]:
        def load(conn: Connection) -> list[TaskResult]:
            run_store.get_run(conn, run_id)  # 404 for an unknown run
            return tasks.list_for_run(conn, run_id)

        return {"data": [task_result_view(r) for r in await store.read(load)]}

    @app.get("/api/v1/configuration-versions/<cv_id>/download")
    async def download_configuration(cv_id: str) -> Response:
        await coordinator().authorize_configuration(cv_id, token())
        _, archive = await store.read(lambda c: artifacts.configuration_archive(c, cv_id))
        return Response(
            archive,
            content_type="application/gzip",
            headers={"Content-Disposition": f'attachment; filename="{cv_id}.tar.gz"'},
        )
