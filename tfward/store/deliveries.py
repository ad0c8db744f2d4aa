"""The notification delivery log: one row per attempt to deliver a notification (seed M4)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from tfward.ids import new_id

from .tables import notification_deliveries, workspaces


@dataclass(frozen=True, slots=True)
class Attempt:
    outbox_id: str
    destination: str
    trigger: str
    run_id: str | None
    workspace_id: str | None
    attempt: int
    delivered: bool
    status_code: int | None
    latency_ms: int
    error: str | None
    created_at: datetime


def record(conn: Connection, attempt: Attempt) -> str:
    row_id = new_id("nd")
    conn.execute(
        insert(notification_deliveries).values(
            id=row_id,
            outbox_id=attempt.outbox_id,
            destination=attempt.destination,
            trigger=attempt.trigger,
            run_id=attempt.run_id,
            workspace_id=attempt.workspace_id,
            attempt=attempt.attempt,
            delivered=attempt.delivered,
            status_code=attempt.status_code,
            latency_ms=attempt.latency_ms,
            error=None if attempt.error is None else attempt.error[:4000],
            created_at=attempt.created_at,
        )
    )
    return row_id


def list_attempts(
    conn: Connection,
    *,
    destination: str | None = None,
    run_id: str | None = None,
    outbox_id: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Attempts, newest first, with the workspace name."""
    d = notification_deliveries
    query = select(d, workspaces.c.name.label("workspace")).outerjoin(
        workspaces, workspaces.c.id == d.c.workspace_id
    )
    if destination is not None:
        query = query.where(d.c.destination == destination)
    if run_id is not None:
        query = query.where(d.c.run_id == run_id)
    if outbox_id is not None:
        query = query.where(d.c.outbox_id == outbox_id)
    query = query.order_by(d.c.created_at.desc(), d.c.attempt.desc()).limit(limit)
    return [dict(r._mapping) for r in conn.execute(query)]


def prune(conn: Connection, before: datetime, limit: int) -> int:
    """Delete up to `limit` attempts made before `before`; how many."""
    oldest = (
        select(notification_deliveries.c.id)
        .where(notification_deliveries.c.created_at < before)
        .order_by(notification_deliveries.c.created_at)
        .limit(limit)
    )
    table = notification_deliveries
    return conn.execute(delete(table).where(table.c.id.in_(oldest))).rowcount
