"""Inventory endpoints: the resources of each workspace's newest synced state.

    GET /api/v1/workspaces/{name}/resources?type=...
    GET /api/v1/resources?type=...&workspace=...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart_trio import QuartTrio
from sqlalchemy import Connection

from tfward.store import inventory
from tfward.store import workspaces as ws_store

from . import query
from .routes_outbox import plain

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon

LIMIT = 10_000


def resource_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "workspace": row["workspace"],
        "address": row["address"],
        "type": row["type"],
        "name": row["name"],
        "mode": row["mode"],
        "module": row["module"],
        "provider": row["provider"],
        "index": row["index_key"],
        "id": row["resource_id"],
        "state_version_id": row["state_version_id"],
        "serial": row["serial"],
    }


def followup_views(sync: dict[str, Any] | None, drift: dict[str, Any] | None) -> dict[str, Any]:
    """The inventory sync status (`inventory.sync_status`) and the drift (`drift.view`) of a
    workspace, as the workspace view shows them."""
    return {
        "inventory": plain(sync) if sync else None,
        "drift": plain(drift) if drift else {"drifted": False, "addresses": [], "checked_at": None},
    }


def register(app: QuartTrio, daemon: Daemon) -> None:
    store = daemon.store

    @app.get("/api/v1/workspaces/<name>/resources")
    async def workspace_resources(name: str) -> dict[str, Any]:
        type_: str | None = query.args()["type"]

        def load(conn: Connection) -> list[dict[str, Any]]:
            ws_id = ws_store.workspace_id(conn, name)
            return inventory.list_resources(conn, workspace_id=ws_id, type_=type_, limit=LIMIT)

        return {"data": [resource_view(r) for r in await store.read(load)]}

    @app.get("/api/v1/resources")
    async def all_resources() -> dict[str, Any]:
        type_, workspace = query.args()["type"], query.args()["workspace"]

        def load(conn: Connection) -> list[dict[str, Any]]:
            ws_id = ws_store.workspace_id(conn, workspace) if workspace else None
            return inventory.list_resources(conn, workspace_id=ws_id, type_=type_, limit=LIMIT)

        return {"data": [resource_view(r) for r in await store.read(load)]}
