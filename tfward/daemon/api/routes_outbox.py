"""Outbox and notification endpoints: follow-up jobs, dead-letter retry, the delivery log.

    GET  /api/v1/outbox?status=queued|running|done|dead&kind=...&run_id=...&limit=...
    POST /api/v1/outbox/{id}/actions/retry           dead rows only (409 otherwise)
    GET  /api/v1/notifications/deliveries?destination=...&run_id=...&outbox_id=...&limit=...
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from quart_trio import QuartTrio
from sqlalchemy import Connection
from werkzeug.exceptions import NotFound as HTTPNotFound

from tfward.ids import now, rfc3339
from tfward.store import audit, deliveries
from tfward.store import outbox as outbox_store
from tfward.store.audit import AuditAction

from . import audited, query
from .body import json_object

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon


def plain(row: dict[str, Any]) -> dict[str, Any]:
    """A database row as JSON: times as RFC 3339."""
    return {k: rfc3339(v) if isinstance(v, datetime) else v for k, v in row.items()}


def outbox_view(row: dict[str, Any]) -> dict[str, Any]:
    view = plain(row)
    view.pop("idempotency_key", None)
    return view


def register(app: QuartTrio, daemon: Daemon) -> None:
    store = daemon.store

    @app.get("/api/v1/outbox")
    async def list_outbox() -> dict[str, Any]:
        given = query.args()
        status, kind = given["status"], given["kind"]
        run_id, limit = given["run_id"], given["limit"]
        rows = await store.read(
            lambda c: outbox_store.list_rows(
                c, status=status, kind=kind, run_id=run_id, limit=limit
            )
        )
        counts = await store.read(outbox_store.counts)
        return {"data": [outbox_view(r) for r in rows], "meta": {"counts": counts}}

    @app.get("/api/v1/outbox/<row_id>")
    async def show_outbox(row_id: str) -> dict[str, Any]:
        return {"data": outbox_view(await store.read(lambda c: outbox_store.get_row(c, row_id)))}

    @app.post("/api/v1/outbox/<row_id>/actions/<action>")
    async def outbox_action(row_id: str, action: str) -> tuple[dict[str, Any], int]:
        if action != "retry":
            raise HTTPNotFound(f"unknown outbox action {action!r}")
        await json_object({})
        return {"data": outbox_view(await retry_row(daemon, row_id))}, 202

    @app.get("/api/v1/notifications/deliveries")
    async def list_deliveries() -> dict[str, Any]:
        given = query.args()
        destination, run_id = given["destination"], given["run_id"]
        outbox_id, limit = given["outbox_id"], given["limit"]
        rows = await store.read(
            lambda c: deliveries.list_attempts(
                c, destination=destination, run_id=run_id, outbox_id=outbox_id, limit=limit
            )
        )
        return {"data": [plain(r) for r in rows]}


async def retry_row(daemon: Daemon, row_id: str) -> dict[str, Any]:
    """Queue dead outbox row `row_id` again with fresh attempts, for the current caller (whose
    role the route has checked), through the audit trail; the row. 409 unless it is dead, 404
    if unknown. The API's route and the web page's button both come here."""
    tried = audited.attempt(AuditAction.OUTBOX_RETRY, f"outbox row {row_id}")

    def tx(conn: Connection) -> dict[str, Any]:
        row = outbox_store.retry_dead(conn, row_id, now())
        detail = {"kind": row["kind"], "run_id": row["run_id"], "last_error": row["last_error"]}
        audit.record(conn, tried, detail=detail)
        return row

    async with audited.refusals_recorded(daemon.store, tried):
        return await daemon.store.write(tx)
