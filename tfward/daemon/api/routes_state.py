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
        """The raw state (secrets in clear): the audit trail records it before it is sent."""
        tried = audited.attempt(AuditAction.STATE_DOWNLOAD, f"state version {sv_id}")

        def tx(conn: Connection) -> bytes:
            sv, raw = states.get(conn, sv_id), states.get_raw(conn, sv_id)
            detail = {"workspace_id": sv.workspace_id, "serial": sv.serial, "bytes": len(raw)}
            audit.record(conn, tried, detail=detail)
            return raw

        async with audited.refusals_recorded(store, tried):
            raw = await store.write(tx)
        return Response(
            raw,
            content_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{sv_id}.tfstate"'},
        )

    @app.post("/api/v1/workspaces/<name>/state-versions/<sv_id>/rollback")
    async def rollback(name: str, sv_id: str) -> tuple[dict[str, Any], int]:
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

        async with audited.refusals_recorded(store, tried):
            return {"data": await store.write(tx)}, 201

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
