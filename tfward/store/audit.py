"""The audit trail: what admins did, append-only (docs/architecture.md §9).

One row per attempt of an admin action: who (the API token's name; `signal` for a config
reload), when, what (`action` and its `target`), the outcome (`ok`, or `refused` with the
reason) and details. An action that is a store write records its row in the same transaction
(`record` on the action's connection), so the change and its trace commit together or not at
all. A refused attempt rolls its transaction back, so the caller records the refusal in a
transaction of its own. This module has no function that changes or deletes a row, and
nothing else writes the table.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select

from tfward.ids import new_id, now

from .tables import audit_events


class AuditAction(enum.StrEnum):
    FORCE_UNLOCK = "force_unlock"
    FORCE_CANCEL = "force_cancel"
    STATE_ROLLBACK = "state_rollback"
    STATE_DOWNLOAD = "state_download"
    OUTBOX_RETRY = "outbox_retry"
    RELEASE_CREATE = "release_create"
    RELEASE_CANCEL = "release_cancel"
    CONFIG_RELOAD = "config_reload"


class AuditOutcome(enum.StrEnum):
    OK = "ok"  # done (for a config reload: the new config applied)
    REFUSED = "refused"  # not done; `reason` says why


@dataclass(frozen=True, slots=True)
class Attempt:
    """Who tries to do what: the part of an event known before the outcome."""

    actor: str
    action: AuditAction
    target: str


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: str
    seq: int
    created_at: datetime
    actor: str
    action: AuditAction
    target: str
    outcome: AuditOutcome
    reason: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


def record(
    conn: Connection,
    attempt: Attempt,
    outcome: AuditOutcome = AuditOutcome.OK,
    *,
    reason: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Append one event (in the caller's transaction)."""
    seq = conn.execute(select(func.coalesce(func.max(audit_events.c.seq), 0) + 1)).scalar_one()
    event = AuditEvent(
        id=new_id("audit"),
        seq=seq,
        created_at=now(),
        actor=attempt.actor,
        action=attempt.action,
        target=attempt.target,
        outcome=outcome,
        reason=reason,
        detail=dict(detail or {}),
    )
    conn.execute(
        insert(audit_events).values(
            id=event.id,
            seq=event.seq,
            created_at=event.created_at,
            actor=event.actor,
            action=str(event.action),
            target=event.target,
            outcome=str(event.outcome),
            reason=event.reason,
            detail=dict(event.detail),
        )
    )
    return event


def list_events(
    conn: Connection, *, action: AuditAction | None = None, limit: int = 100
) -> list[AuditEvent]:
    """Events newest first, of one action or all."""
    query = select(audit_events).order_by(audit_events.c.seq.desc()).limit(limit)
    if action is not None:
        query = query.where(audit_events.c.action == str(action))
    return [
        AuditEvent(
            id=row.id,
            seq=row.seq,
            created_at=row.created_at,
            actor=row.actor,
            action=AuditAction(row.action),
            target=row.target,
            outcome=AuditOutcome(row.outcome),
            reason=row.reason,
            detail=row.detail,
        )
        for row in conn.execute(query)
    ]
