"""The workspaces page (`/`), a workspace's page (`/workspaces/{name}`) and its forms: start a
run, lock, unlock, force-unlock, roll a state back; a state version's raw download and a diff of
two configuration versions. Each form calls the function the API's route calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response
from sqlalchemy import Connection

from tfward.errors import BadRequest
from tfward.ids import now
from tfward.runs.model import Run, Status
from tfward.store import artifacts, inventory, overview, states
from tfward.store import drift as drift_store
from tfward.store import runs as run_store
from tfward.store import workspaces as ws_store
from tfward.store.artifacts import ConfigurationVersion
from tfward.store.workspaces import Lock

from ..api import query
from ..api.routes_runs import start_run
from ..api.routes_state import diff_files, download_state, rollback_state
from ..api.routes_workspaces import LOCK_ACTIONS, lock_action
from ..api.views import secret_mask, state_version_view
from . import forms
from .common import context, require, see_other
from .render import page

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon

RUNS_PER_PAGE = 20
STATES_SHOWN = 20
RESOURCES_SHOWN = 500
OPERATIONS = ("plan", "plan_and_apply", "destroy")


@dataclass(frozen=True, slots=True)
class WorkspacePage:
    """Everything a workspace's page shows, read in one transaction."""

    id: str
    lock: Lock | None
    runs: list[Run]
    more_runs: bool
    queued: int
    states: list[dict[str, Any]]
    configurations: list[ConfigurationVersion]
    resources: list[dict[str, Any]]
    drift: dict[str, Any] | None
    inventory: dict[str, Any] | None


def register(web: Blueprint, daemon: Daemon) -> None:
    store = daemon.store

    @web.get("/")
    async def workspaces() -> Response:
        wanted: str = query.args()["name"] or ""
        found = [ws for ws in await store.read(overview.summaries) if ws.configured]
        shown = [ws for ws in found if wanted.lower() in ws.name.lower()]
        values = context("workspaces", workspaces=shown, total=len(found), name=wanted)
        return await page("workspaces.html", values)

    @web.get("/workspaces/<name>")
    async def workspace(name: str) -> Response:
        number: int = query.args()["page"]
        loaded = await store.read(lambda c: _load(c, name, number, daemon))
        values = context(
            "workspaces",
            name=name,
            ws=loaded,
            page_number=number,
            triggers=_triggers(daemon, name),
            configured=_configured(daemon, name),
        )
        return await page("workspace.html", values)

    @web.post("/workspaces/<name>/runs")
    async def create_run(name: str) -> Response:
        form = await forms.fields({"operation", "message", "confirm_name"})
        operation = form.get("operation", "")
        if operation not in OPERATIONS:
            raise BadRequest(f"form field 'operation': expected one of {', '.join(OPERATIONS)}")
        if operation == "destroy" and form.get("confirm_name") != name:
            raise BadRequest(f"to destroy, type the workspace's name ({name}) in the box")
        body = {"operation": operation, "message": form.get("message", "")}
        run = await start_run(daemon, name, body)
        return see_other(f"/runs/{run.id}")

    @web.post("/workspaces/<name>/actions/<action>")
    async def workspace_action(name: str, action: str) -> Response:
        if action not in LOCK_ACTIONS:
            raise BadRequest(f"unknown workspace action {action!r}")
        require("workspace", action)
        form = await forms.fields({"reason"})
        await lock_action(daemon, name, action, form.get("reason") or None)
        return see_other(f"/workspaces/{name}")

    @web.post("/workspaces/<name>/state-versions/<sv_id>/rollback")
    async def rollback(name: str, sv_id: str) -> Response:
        require("rollback")
        await forms.fields(())
        await rollback_state(daemon, name, sv_id)
        return see_other(f"/workspaces/{name}")

    @web.get("/state-versions/<sv_id>/download")
    async def download(sv_id: str) -> Response:
        require("download")
        raw = await download_state(daemon, sv_id)
        disposition = f'attachment; filename="{sv_id}.tfstate"'
        return Response(
            raw,
            content_type="application/json",
            headers={"Content-Disposition": disposition, "Cache-Control": "no-store"},
        )

    @web.get("/configuration-versions/<a>/diff/<b>")
    async def diff(a: str, b: str) -> Response:
        _, old = await store.read(lambda c: artifacts.configuration_archive(c, a))
        _, new = await store.read(lambda c: artifacts.configuration_archive(c, b))
        values = context("workspaces", a=a, b=b, files=diff_files(old, new))
        return await page("diff.html", values)


def _load(conn: Connection, name: str, number: int, daemon: Daemon) -> WorkspacePage:
    ws_id = ws_store.workspace_id(conn, name)
    mask = secret_mask(daemon.config, name)
    found = run_store.list_runs(
        conn, workspace_id=ws_id, limit=RUNS_PER_PAGE + 1, offset=(number - 1) * RUNS_PER_PAGE
    )
    queued = run_store.list_runs(conn, workspace_id=ws_id, statuses=(Status.PENDING,), limit=None)
    return WorkspacePage(
        id=ws_id,
        lock=ws_store.get_lock(conn, ws_id),
        runs=found[:RUNS_PER_PAGE],
        more_runs=len(found) > RUNS_PER_PAGE,
        queued=len(queued),
        states=[
            state_version_view(sv, mask)
            for sv in states.list_versions(conn, ws_id, limit=STATES_SHOWN)
        ],
        configurations=artifacts.list_configurations(conn, ws_id),
        resources=inventory.list_resources(conn, workspace_id=ws_id, limit=RESOURCES_SHOWN),
        drift=drift_store.view(conn, ws_id),
        inventory=inventory.sync_status(conn, ws_id, now()),
    )


def _triggers(daemon: Daemon, name: str) -> dict[str, list[str]]:
    """Run triggers: the workspaces an apply here starts runs in, and those whose applies
    start runs here."""
    config = daemon.config
    out = list(config.workspace(name).triggers_runs_in) if _configured(daemon, name) else []
    into = sorted(ws.name for ws in config.workspaces if name in ws.triggers_runs_in)
    return {"out": out, "in": into}


def _configured(daemon: Daemon, name: str) -> bool:
    return any(ws.name == name for ws in daemon.config.workspaces)
