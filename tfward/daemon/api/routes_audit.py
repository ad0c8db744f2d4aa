"""The audit trail of admin actions (docs/architecture.md §9; store/audit.py):

    GET /api/v1/audit?action=force_unlock&limit=100      newest first; role admin
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart_trio import QuartTrio

from tfward.store import audit
from tfward.store.audit import AuditAction

from . import query
from .audited import audit_view

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon


def register(app: QuartTrio, daemon: Daemon) -> None:
    @app.get("/api/v1/audit")
    async def list_audit() -> dict[str, Any]:
        given = query.args()
        action = AuditAction(given["action"]) if given["action"] else None
        events = await daemon.store.read(
            lambda c: audit.list_events(c, action=action, limit=given["limit"])
        )
        return {"data": [audit_view(event) for event in events]}
