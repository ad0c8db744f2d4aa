"""Admin actions leave a trace in the audit trail (store/audit.py, docs/architecture.md §9).

A route names the attempt (`attempt`: the caller's token name, the action, its target) and
records it as `ok` with `audit.record` inside the action's own transaction. `refusals_recorded`
wraps the action: when it is refused (an unknown workspace or run, a state machine or a lock
that says no, a bad value) the action's transaction has rolled back, so the refusal is
recorded in a transaction of its own, with the reason, and the error goes on to the client.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tfward.errors import TfwardError
from tfward.ids import rfc3339
from tfward.store import audit
from tfward.store.audit import Attempt, AuditAction, AuditEvent, AuditOutcome
from tfward.store.db import Store

from . import auth

log = logging.getLogger(__name__)


def attempt(action: AuditAction, target: str) -> Attempt:
    """The current caller trying `action` on `target`."""
    return Attempt(auth.caller(), action, target)


@asynccontextmanager
async def refusals_recorded(store: Store, tried: Attempt) -> AsyncIterator[None]:
    """Record `tried` as refused if the block raises a TfwardError (then re-raise it). Other
    errors (bugs, a cancelled request) are not refusals and pass untouched. If the refusal
    cannot be recorded (the database fails), that is logged and the refusal still answered."""
    try:
        yield
    except TfwardError as exc:
        reason = str(exc)
        try:
            await store.write(
                lambda c: audit.record(c, tried, AuditOutcome.REFUSED, reason=reason)
            )
        except Exception:  # the caller still gets the refusal; nothing was done to trace
            log.exception("could not record a refused %s of %s in the audit trail",
                          tried.action, tried.target)  # fmt: skip
        raise


def audit_view(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "seq": event.seq,
        "created_at": rfc3339(event.created_at),
        "actor": event.actor,
        "action": str(event.action),
        "target": event.target,
        "outcome": str(event.outcome),
        "reason": event.reason,
        "detail": dict(event.detail),
    }
