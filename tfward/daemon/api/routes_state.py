"""State-version and configuration-version endpoints: list, show, download, rollback, diff."""

from __future__ import annotations

import difflib
import io
import tarfile
from typing import TYPE_CHECKING, Any

from quart import Response
from quart_trio import QuartTrio
from sqlalchemy import Connection

from tfward.errors import WorkspaceLocked
from tfward.store import artifacts, audit, states
from tfward.store import workspaces as ws_store
from tfward.store.audit import AuditAction

from . import audited, auth
from .views import configuration_version_view, secret_mask, state_version_view

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon


def register(app: QuartTrio, daemon: Daemon) -> None:
    store = daemon.store

    @app.get("/api/v1/workspaces/<name>/state-versions")
    async def list_state_versions(name: str) -> dict[str, Any]:
        mask = secret_mask(daemon.config, name)

        def load(conn: Connection) -> list[dict[str, Any]]:
            ws_id = ws_store.workspace_id(conn, name)
            return [state_version_view(sv, mask) for sv in states.list_versions(conn, ws_id)]

        return {"data": await store.read(load)}

    @app.get("/api/v1/state-versions/<sv_id>")
    async def show_state_version(sv_id: str) -> dict[str, Any]:
        def load(conn: Connection) -> tuple[states.StateVersion, str]:
            sv = states.get(conn, sv_id)
            return sv, ws_store.workspace_name(conn, sv.workspace_id)

        sv, name = await store.read(load)
        return {"data": state_version_view(sv, secret_mask(daemon.config, name))}

    @app.get("/api/v1/state-versions/<sv_id>/download")
    async def download_state_version(sv_id: str) -> Response:
        return Response(
            await download_state(daemon, sv_id),
            content_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{sv_id}.tfstate"'},
        )

    @app.post("/api/v1/workspaces/<name>/state-versions/<sv_id>/rollback")
    async def rollback(name: str, sv_id: str) -> tuple[dict[str, Any], int]:
        return {"data": await rollback_state(daemon, name, sv_id)}, 201

    @app.get("/api/v1/workspaces/<name>/configuration-versions")
    async def list_configuration_versions(name: str) -> dict[str, Any]:
        def load(conn: Connection) -> list[dict[str, Any]]:
            ws_id = ws_store.workspace_id(conn, name)
            return [
                configuration_version_view(cv) for cv in artifacts.list_configurations(conn, ws_id)
            ]

        return {"data": await store.read(load)}

    @app.get("/api/v1/configuration-versions/<a>/diff/<b>")
    async def diff_configuration_versions(a: str, b: str) -> dict[str, Any]:
        _, old = await store.read(lambda c: artifacts.configuration_archive(c, a))
        _, new = await store.read(lambda c: artifacts.configuration_archive(c, b))
        return {"data": {"from": a, "to": b, "files": _diff(_files(old), _files(new))}}


async def download_state(daemon: Daemon, sv_id: str) -> bytes:
    """The raw state of version `sv_id` (secrets in clear) for the current caller, whose role
    the route has checked: the audit trail records it before it is sent (refusals too). 404
    for an unknown version. The API's route and the web page's link both come here."""
    tried = audited.attempt(AuditAction.STATE_DOWNLOAD, f"state version {sv_id}")

    def tx(conn: Connection) -> bytes:
        sv, raw = states.get(conn, sv_id), states.get_raw(conn, sv_id)
        detail = {"workspace_id": sv.workspace_id, "serial": sv.serial, "bytes": len(raw)}
        audit.record(conn, tried, detail=detail)
        return raw

    async with audited.refusals_recorded(daemon.store, tried):
        return await daemon.store.write(tx)


async def rollback_state(daemon: Daemon, name: str, sv_id: str) -> dict[str, Any]:
    """Make state version `sv_id` of workspace `name` current again as a new version, for the
    current caller (whose role the route has checked), through the audit trail; the new
    version's view. 409 while a run holds the lock, 404 for an unknown workspace or version.
    The API's route and the web page's form both come here."""
    tried = audited.attempt(AuditAction.STATE_ROLLBACK, f"workspace {name}")
    mask = secret_mask(daemon.config, name)
    user = auth.caller()

    def tx(conn: Connection) -> dict[str, Any]:
        ws_id = ws_store.workspace_id(conn, name)
        lock = ws_store.get_lock(conn, ws_id)
        if lock is not None and lock.run_id is not None:
            # A run between plan and apply would apply onto a state it did not plan for.
            raise WorkspaceLocked(lock.describe() + "; roll back once it has finished")
        new = states.rollback(conn, ws_id, sv_id, mask, created_by=user)
        detail = {"from": sv_id, "state_version": new.id, "serial": new.serial}
        audit.record(conn, tried, detail=detail)
        return state_version_view(new, mask)

    async with audited.refusals_recorded(daemon.store, tried):
        return await daemon.store.write(tx)


def diff_files(old_archive: bytes, new_archive: bytes) -> list[dict[str, Any]]:
    """What changed between two configuration archives: path, status, unified diff."""
    return _diff(_files(old_archive), _files(new_archive))


def _files(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def _diff(old: dict[str, bytes], new: dict[str, bytes]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(old.keys() | new.keys()):
        before, after = old.get(path), new.get(path)
        if before == after:
            continue
        status = "added" if before is None else "removed" if after is None else "modified"
        text = "".join(
            difflib.unified_diff(
                (before or b"").decode("utf-8", "replace").splitlines(keepends=True),
                (after or b"").decode("utf-8", "replace").splitlines(keepends=True),
                fromfile=f"a/{path}",
                tofile=f"b/{path}",
            )
        )
        out.append({"path": path, "status": status, "diff": text})
    return out
