"""The audit trail of admin actions (docs/architecture.md §9; store/audit.py):

    GET /api/v1/audit?action=force_unlock&limit=100      newest first; role admin
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import request
from quart_trio import QuartTrio

from tfward.errors import BadRequest
from tfward.store import audit
from tfward.store.audit import AuditAction

from .audited import audit_view

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon


def _action() -> AuditAction | None:
    raw = request.args.get("action")
    if raw is None or raw == "":
        return None
    try:
        return AuditAction(raw)
    except ValueError:
        choices = ", ".join(a.value for a in AuditAction)
        raise BadRequest(f"query 'action': expected one of {choices}, got {raw!r}") from None


def _limit() -> int:
    raw = request.args.get("limit", "100")
    try:
        limit = int(raw)
    except ValueError:
        raise BadRequest(f"query 'limit': expected an integer, got {raw!r}") from None
    if not 1 <= limit <= 1000:
        raise BadRequest(f"query 'limit': expected 1 to 1000, got {limit}")
    return limit


def register(app: QuartTrio, daemon: Daemon) -> None:
    @app.get("/api/v1/audit")
    async def list_audit() -> dict[str, Any]:
        action, limit = _action(), _limit()
        events = await daemon.store.read(
            lambda c: audit.list_events(c, action=action, limit=limit)
        )
        return {"data": [audit_view(event) for event in events]}
