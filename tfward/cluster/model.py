"""Membership and workspace ownership as pure code: who is live, what a daemon owns, and what
it does at each tick of its lease loop (`decide`), table-tested without a database or a clock
(tests/cluster/test_model.py).

    free ──take──> owned by N (epoch e+1) ──release──> free
                     │  renew: expires_at = now + ttl
                     └─ expires (N dead or paused) ──take by M──> owned by M (epoch e+2)

A daemon is live while its heartbeat is younger than the lease TTL and it has not left. Each
tick a daemon renews what it owns, takes free or expired leases up to its fair share (the
workspaces over the live daemons, rounded up), and offers back what it holds beyond that
share — only idle workspaces (drain: a workspace with an active run moves only after that run
ends). Daemons prefer different workspaces (rendezvous order), so two that start together do
not fight over the same ones; when they do, the database decides (the take is a
compare-and-set on the epoch).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class Node:
    """A daemon as its row says: where it runs and its last heartbeat."""

    node_id: str
    host: str
    data_dir: str
    heartbeat_at: datetime
    started_at: datetime
    pid: int = 0
    api_url: str | None = None
    left_at: datetime | None = None

    def live(self, now: datetime, ttl: float) -> bool:
        return self.left_at is None and self.heartbeat_at + timedelta(seconds=ttl) > now


@dataclass(frozen=True, slots=True)
class Lease:
    """A workspace's lease row. `owner` None: released."""

    workspace_id: str
    owner: str | None
    epoch: int
    expires_at: datetime | None
    taken_from: str | None = None

    def free(self, now: datetime) -> bool:
        return self.owner is None or self.expires_at is None or self.expires_at <= now


@dataclass(frozen=True, slots=True)
class View:
    """What one tick sees, read in one transaction: the database's clock, every daemon, every
    lease, and the workspaces of the config (by id)."""

    now: datetime
    nodes: tuple[Node, ...]
    leases: Mapping[str, Lease]
    workspaces: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    """What a daemon does at this tick: renew its leases, take free ones, offer back idle
    ones beyond its share (released only once their actor stopped)."""

    renew: tuple[str, ...] = ()
    take: tuple[str, ...] = ()
    release: tuple[str, ...] = ()


def live_nodes(view: View, me: str, ttl: float) -> tuple[str, ...]:
    """The live daemons, by id; `me` always counts (it is running this tick)."""
    live = {n.node_id for n in view.nodes if n.live(view.now, ttl)} | {me}
    return tuple(sorted(live))


def fair_share(workspaces: int, live: int) -> int:
    return math.ceil(workspaces / max(1, live))


def rank(node_id: str, workspace_id: str) -> str:
    """Rendezvous order: each daemon prefers its own, different, workspaces."""
    return hashlib.sha256(f"{node_id}\0{workspace_id}".encode()).hexdigest()


def decide(view: View, me: str, ttl: float, busy: frozenset[str] = frozenset()) -> Plan:
    """This daemon's tick. `busy`: its workspaces with a run in flight (never offered back)."""
    configured = set(view.workspaces)
    mine = sorted(
        ws for ws, lease in view.leases.items() if lease.owner == me and ws in configured
    )
    share = fair_share(len(configured), len(live_nodes(view, me, ttl)))
    if len(mine) > share:
        idle = sorted((ws for ws in mine if ws not in busy), key=lambda ws: rank(me, ws))
        release = tuple(idle[: len(mine) - share])
        return Plan(renew=tuple(ws for ws in mine if ws not in release), release=release)
    free = [
        ws
        for ws in configured
        if ws not in view.leases or (view.leases[ws].owner != me and view.leases[ws].free(view.now))
    ]
    take = tuple(sorted(free, key=lambda ws: rank(me, ws))[: share - len(mine)])
    return Plan(renew=tuple(mine), take=take)


def hold(view: View, me: str) -> Plan:
    """Renew what this daemon owns and take nothing (while its start-up recovery runs)."""
    configured = set(view.workspaces)
    return Plan(renew=tuple(sorted(
        ws for ws, lease in view.leases.items() if lease.owner == me and ws in configured
    )))  # fmt: skip
