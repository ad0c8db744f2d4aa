"""Fencing: a daemon that lost a workspace's lease can never write its execution again
(docs/architecture.md §15).

The workspace actor runs under `fenced(Fence(workspace, node, epoch))`: a contextvar, so the
actor, every run task it starts, their log flushers, state keepers and the termination funnel
inherit it, and no write made for the workspace's execution can forget it. `Store.write`
applies it: in the same transaction, before the write, `check` reads the workspace's lease row
(`FOR SHARE` on PostgreSQL, whose write transactions are SERIALIZABLE: a takeover that changes
the row either waits for this transaction or makes it fail and be retried, when it then sees
the new epoch) and raises FencedOut unless this daemon still owns it with the same epoch.
A long pause (SIGSTOP, a frozen VM) changes nothing: the check is in the write itself.

Writes made outside a fence — the API recording a request, the lease loop itself, the outbox
worker's own rows — are not the execution of a workspace and are not fenced.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, select

from tfward.errors import FencedOut

from .tables import workspace_leases


@dataclass(frozen=True, slots=True)
class Fence:
    """The lease a write must still hold: this daemon owns `workspace_id` at `epoch`."""

    workspace_id: str
    node_id: str
    epoch: int


_FENCE: contextvars.ContextVar[Fence | None] = contextvars.ContextVar(
    "tfward_fence", default=None
)


@contextlib.contextmanager
def fenced(fence: Fence) -> Iterator[Fence]:
    """Every store write in this block, and in every task started inside it, checks `fence`."""
    token = _FENCE.set(fence)
    try:
        yield fence
    finally:
        _FENCE.reset(token)


@contextlib.contextmanager
def unfenced() -> Iterator[None]:
    """Writes in this block are not the workspace's execution (rarely needed: the actor's
    own bookkeeping is fenced too)."""
    token = _FENCE.set(None)
    try:
        yield
    finally:
        _FENCE.reset(token)


def current() -> Fence | None:
    return _FENCE.get()


# Built once (every write of a workspace's actor runs it): the row still names this daemon.
_HELD = select(workspace_leases.c.epoch).where(
    workspace_leases.c.workspace_id == bindparam("ws_id"),
    workspace_leases.c.owner == bindparam("node_id"),
    workspace_leases.c.epoch == bindparam("epoch"),
)
_HELD_SHARED = _HELD.with_for_update(read=True)


def check(conn: Connection, fence: Fence) -> None:
    """Raise FencedOut unless the lease row still names this daemon at this epoch (on
    PostgreSQL the row is locked FOR SHARE until the commit: no takeover commits meanwhile)."""
    query = _HELD_SHARED if conn.dialect.name == "postgresql" else _HELD
    params = {"ws_id": fence.workspace_id, "node_id": fence.node_id, "epoch": fence.epoch}
    if conn.execute(query, params).first() is None:
        raise FencedOut(fence.workspace_id, fence.node_id, fence.epoch)
