"""Workspace endpoints: list, show (lock holder, current run, latest state), lock actions, and
the stream of workspace events for overview pages (streams.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Response
from quart_trio import QuartTrio
from sqlalchemy import Connection
from werkzeug.exceptions import NotFound as HTTPNotFound

from tfward.actors.workspace import LockChanged
from tfward.errors import InvalidTransition
from tfward.ids import rfc3339
from tfward.runs.masking import SecretMask
from tfward.store import audit
from tfward.store import workspaces as ws_store
from tfward.store.audit import Attempt, AuditAction
from tfward.store.workspace_bundles import Bundle, bundles

from . import audited, auth, streams
from .body import json_object
from .routes_inventory import followup_views
from .views import lock_view, run_view, secret_mask, state_version_view

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon

def workspace_view(bundle: Bundle, mask: SecretMask) -> dict[str, Any]:
    """The workspace as the API shows it, from its bundle (`store/workspace_bundles.py`);
    `mask`: its secrets (`views.secret_mask`)."""
    current, latest = bundle.current_run, bundle.latest_state
    return {
        "id": bundle.id,
        "name": bundle.name,
        "lock": lock_view(bundle.lock),
        # The daemon that drives the workspace now (docs/architecture.md §15).
        "owner": bundle.owner,
        "current_run": run_view(current) if current else None,
        "queued_runs": bundle.queued_runs,
        "latest_state_version": state_version_view(latest, mask) if latest else None,
        **followup_views(bundle.inventory, bundle.drift),  # "inventory" sync status and "drift"
    }


def view_of(conn: Connection, ws_id: str, mask: SecretMask) -> dict[str, Any]:
    """The view of one workspace, read by the list's own function (one code path: the list
    and the show cannot disagree)."""
    (bundle,) = bundles(conn, [ws_id])
    return workspace_view(bundle, mask)


def register(app: QuartTrio, daemon: Daemon) -> None:
    store = daemon.store

    @app.get("/api/v1/workspaces")
    async def list_workspaces() -> dict[str, Any]:
        def load(conn: Connection) -> list[dict[str, Any]]:
            return [
                workspace_view(bundle, secret_mask(daemon.config, bundle.name))
                for bundle in bundles(conn)
            ]

        return {"data": await store.read(load)}

    @app.get("/api/v1/workspaces/<name>")
    async def show_workspace(name: str) -> dict[str, Any]:
        def load(conn: Connection) -> dict[str, Any]:
            ws_id = ws_store.workspace_id(conn, name)
            return view_of(conn, ws_id, secret_mask(daemon.config, name))

        return {"data": await store.read(load)}

    @app.get("/api/v1/events")
    async def workspace_events() -> Response:
        """Every configured workspace's summary, then each again when it changes."""
        return streams.response(streams.workspace_events(daemon))

    @app.post("/api/v1/workspaces/<name>/actions/<action>")
    async def workspace_action(name: str, action: str) -> tuple[dict[str, Any], int]:
        if action not in LOCK_ACTIONS:
            raise HTTPNotFound(f"unknown workspace action {action!r}")
        body = await json_object({"reason": str})
        return {"data": await lock_action(daemon, name, action, body.get("reason"))}, 200


LOCK_ACTIONS = ("lock", "unlock", "force-unlock")


async def lock_action(daemon: Daemon, name: str, action: str, reason: str | None) -> dict[str, Any]:
    """Lock, unlock or force-unlock workspace `name` for the current caller (whose role the
    route has checked; force-unlock through the audit trail), tell its actor, and return the
    workspace's view. 404 for an unknown workspace, 409 when the lock says no. The API's route
    and the web page's form both come here."""
    user, store = auth.caller(), daemon.store

    def tx(conn: Connection) -> dict[str, Any]:
        ws_id = ws_store.workspace_id(conn, name)
        if action == "lock":
            ws_store.acquire_lock(conn, ws_id, run_id=None, by=user, reason=reason)
        else:
            ws_store.release_lock(conn, ws_id, by=user)
        return view_of(conn, ws_id, secret_mask(daemon.config, name))

    if action == "force-unlock":
        tried = audited.attempt(AuditAction.FORCE_UNLOCK, f"workspace {name}")
        async with audited.refusals_recorded(store, tried):
            mask = secret_mask(daemon.config, name)
            view = await store.write(lambda c: _force_unlock(c, name, tried, reason, mask))
    else:
        view = await store.write(tx)
    lock = view["lock"]
    daemon.supervisor.tell(name, LockChanged(lock is not None and lock["run_id"] is None))
    return view


def _force_unlock(
    conn: Connection, name: str, tried: Attempt, reason: str | None, mask: SecretMask
) -> dict[str, Any]:
    """Remove whatever lock the workspace has, and say so in the audit trail; an unlocked
    workspace is refused (there is nothing to force)."""
    ws_id = ws_store.workspace_id(conn, name)
    held = ws_store.get_lock(conn, ws_id)
    if held is None:
        raise InvalidTransition(f"workspace {name} is not locked: there is nothing to force-unlock")
    ws_store.release_lock(conn, ws_id, force=True)
    lock = {
        "run_id": held.run_id,
        "locked_by": held.locked_by,
        "reason": held.reason,
        "locked_at": rfc3339(held.locked_at),
    }
    audit.record(conn, tried, detail={"lock": lock, "reason": reason})
    return view_of(conn, ws_id, mask)
