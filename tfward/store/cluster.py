"""Persistence of membership and workspace leases (docs/architecture.md §15).

A lease loop's tick is ONE short transaction (`tick`): the database's clock, this daemon's
heartbeat, every node and lease read, the pure decision (`cluster/model.py::decide`) made on
what was read, and its renewals and takes written — each a compare-and-set on the epoch (and
owner) it read, so of two daemons taking one workspace exactly one wins; the other's tick
raises LeaseConflict, is rolled back whole, and the next tick sees the winner. On PostgreSQL
the tick runs READ COMMITTED (`Store.write(lease=True)`): the compare-and-sets make it safe,
and the ticks of several daemons, which all read every lease, do not abort one another.
Releases happen in their own transaction once the workspace's actor has stopped (`release`).

`announce` sends, in a write transaction, the change keys it recorded (store/changes.py) on
channel `tfward_changes`; every daemon's listener publishes those of other daemons to its own
ChangeHub, so waiters there (API long-polls and streams, the outbox worker, the release
executor) wake as if the write were local. Too many keys for one payload go as whole topics.

`nudge` carries a message for a workspace's actor to the daemon that owns it: PostgreSQL's
NOTIFY on channel `tfward_actor`, sent in the caller's transaction, so it arrives only after
the commit; the owner's listener (`listen`) hands it to the actor. SQLite has one daemon: no
one to tell.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from tfward.cluster.model import Lease, Node, Plan, View

from . import dialect
from .changes import ANY, Key, Topic
from .tables import cluster_nodes, workspace_leases, workspaces
from .workspaces import WorkspaceIds

log = logging.getLogger(__name__)

CHANNEL = "tfward_actor"
# What a committed write changed (changes.py's keys), for the other daemons' ChangeHubs.
CHANGES = "tfward_changes"
# PostgreSQL's NOTIFY payload holds at most 8000 bytes: more keys go as whole topics.
_PAYLOAD_MAX = 7000


@dataclass(frozen=True, slots=True)
class Tick:
    """What a tick left: the workspaces this daemon owns (id -> epoch), those it took now with
    the daemon each was taken from (None: free, or this daemon's own earlier life), the ones it
    should offer back once idle, and the view it decided on."""

    owned: dict[str, int]
    taken: dict[str, str | None] = field(default_factory=dict)
    release: tuple[str, ...] = ()
    view: View | None = None


def _node(row: Any) -> Node:
    m = row._mapping
    return Node(
        node_id=m["node_id"],
        host=m["host"],
        data_dir=m["data_dir"],
        heartbeat_at=m["heartbeat_at"],
        started_at=m["started_at"],
        pid=m["pid"],
        api_url=m["api_url"],
        left_at=m["left_at"],
    )


def _lease(row: Any) -> Lease:
    m = row._mapping
    return Lease(m["workspace_id"], m["owner"], m["epoch"], m["expires_at"], m["taken_from"])


def view(conn: Connection) -> View:
    """Every node and lease, the configured workspaces, and the database's clock."""
    when = dialect.clock(conn)
    nodes = tuple(_node(r) for r in conn.execute(select(cluster_nodes)))
    leases = {r.workspace_id: _lease(r) for r in conn.execute(select(workspace_leases))}
    configured = conn.execute(
        select(workspaces.c.id).where(workspaces.c.configured).order_by(workspaces.c.id)
    ).scalars()
    return View(when, nodes, leases, tuple(configured))


def join(conn: Connection, me: Node) -> None:
    """Register this daemon (or its new life under the same id), heartbeat now."""
    when = dialect.clock(conn)
    values = {
        "host": me.host, "data_dir": me.data_dir, "pid": me.pid, "api_url": me.api_url,
        "started_at": when, "heartbeat_at": when, "left_at": None,
    }  # fmt: skip
    found = conn.execute(
        update(cluster_nodes).where(cluster_nodes.c.node_id == me.node_id).values(**values)
    )
    if found.rowcount == 0:
        conn.execute(insert(cluster_nodes).values(node_id=me.node_id, **values))


def set_api_url(conn: Connection, node_id: str, url: str) -> None:
    conn.execute(
        update(cluster_nodes).where(cluster_nodes.c.node_id == node_id).values(api_url=url)
    )


def tick(
    conn: Connection, node_id: str, ttl: float, decide: Callable[[View], Plan]
) -> Tick:
    """Heartbeat, read, decide, renew and take, in this one transaction."""
    seen = view(conn)
    expires = seen.now + timedelta(seconds=ttl)
    conn.execute(
        update(cluster_nodes)
        .where(cluster_nodes.c.node_id == node_id)
        .values(heartbeat_at=seen.now, left_at=None)
    )
    plan = decide(seen)
    owned: dict[str, int] = {}
    for ws in (*plan.renew, *plan.release):
        lease = seen.leases[ws]
        _set(conn, lease, owner=node_id, epoch=lease.epoch, expires_at=expires)
        owned[ws] = lease.epoch
    taken: dict[str, str | None] = {}
    for ws in plan.take:
        old = seen.leases.get(ws)
        if old is None:
            try:
                conn.execute(
                    insert(workspace_leases).values(
                        workspace_id=ws, owner=node_id, epoch=1, expires_at=expires,
                        acquired_at=seen.now, taken_from=None,
                    )
                )  # fmt: skip
            except IntegrityError:  # another daemon inserted it first: this tick is void
                raise LeaseConflict(ws) from None
            owned[ws], taken[ws] = 1, None
            continue
        # The owner that did not let go (it died or was paused) is the one to recover from.
        source = old.owner if old.owner not in (None, node_id) else None
        _set(conn, old, owner=node_id, epoch=old.epoch + 1, expires_at=expires,
             acquired_at=seen.now, taken_from=source)  # fmt: skip
        owned[ws], taken[ws] = old.epoch + 1, source
    return Tick(owned, taken, plan.release, seen)


def _set(conn: Connection, lease: Lease, **values: Any) -> None:
    """Change a lease over exactly what was read (owner and epoch): a compare-and-set."""
    result = conn.execute(
        update(workspace_leases)
        .where(
            workspace_leases.c.workspace_id == lease.workspace_id,
            workspace_leases.c.epoch == lease.epoch,
            _owner_is(lease.owner),
        )
        .values(**values)
    )
    if result.rowcount != 1:
        raise LeaseConflict(lease.workspace_id)


def _owner_is(owner: str | None) -> Any:
    column = workspace_leases.c.owner
    return column.is_(None) if owner is None else column == owner


class LeaseConflict(Exception):
    """A lease changed between the read and the write of one tick (SQLite cannot: one
    writer; PostgreSQL reports a serialization failure first). The tick is tried again."""


def release(conn: Connection, node_id: str, workspace_id: str, epoch: int) -> bool:
    """Give a workspace back (its actor has stopped). False if it was not ours any more."""
    result = conn.execute(
        update(workspace_leases)
        .where(
            workspace_leases.c.workspace_id == workspace_id,
            workspace_leases.c.owner == node_id,
            workspace_leases.c.epoch == epoch,
        )
        .values(owner=None, expires_at=None, taken_from=None)
    )
    return result.rowcount == 1


def leave(conn: Connection, node_id: str) -> int:
    """A clean stop: every lease of this daemon released, the daemon marked gone (survivors
    take its workspaces at their next tick, without waiting for the TTL)."""
    result = conn.execute(
        update(workspace_leases)
        .where(workspace_leases.c.owner == node_id)
        .values(owner=None, expires_at=None, taken_from=None)
    )
    conn.execute(
        update(cluster_nodes)
        .where(cluster_nodes.c.node_id == node_id)
        .values(left_at=dialect.clock(conn))
    )
    return int(result.rowcount)


def node(conn: Connection, node_id: str) -> Node | None:
    row = conn.execute(select(cluster_nodes).where(cluster_nodes.c.node_id == node_id)).first()
    return None if row is None else _node(row)


def owners(conn: Connection) -> dict[str, tuple[str | None, datetime | None]]:
    """Workspace name -> (owning daemon, lease expiry), for the API."""
    rows = conn.execute(
        select(workspaces.c.name, workspace_leases.c.owner, workspace_leases.c.expires_at)
        .join(workspace_leases, workspace_leases.c.workspace_id == workspaces.c.id)
    )
    return {r.name: (r.owner, r.expires_at) for r in rows}


def owner_of(conn: Connection, workspace_id: str) -> str | None:
    value = conn.execute(
        select(workspace_leases.c.owner).where(workspace_leases.c.workspace_id == workspace_id)
    ).scalar()
    return None if value is None else str(value)


def owner_of_each(conn: Connection, ws_ids: WorkspaceIds) -> dict[str, str]:
    """The owner of each of the workspaces `ws_ids` that has one, in one statement."""
    rows = conn.execute(
        select(workspace_leases.c.workspace_id, workspace_leases.c.owner).where(
            workspace_leases.c.workspace_id.in_(ws_ids), workspace_leases.c.owner.is_not(None)
        )
    )
    return {str(ws_id): str(owner) for ws_id, owner in rows}


# ---- nudges between daemons (PostgreSQL NOTIFY / LISTEN) ------------------------------------


def nudge(conn: Connection, workspace: str, message: dict[str, Any]) -> None:
    """Tell the daemon that owns `workspace` (sent when this transaction commits)."""
    if conn.dialect.name != "postgresql":
        return
    payload = json.dumps({"workspace": workspace, **message}, separators=(",", ":"))
    conn.execute(select(func.pg_notify(CHANNEL, payload)))


def announce(conn: Connection, origin: str, keys: Iterable[Key]) -> None:
    """Tell every daemon LISTENing what this transaction changed (sent at its commit)."""
    found = sorted(set(keys))
    payload = json.dumps({"o": origin, "k": [[str(k.topic), k.id] for k in found]})
    if len(payload) > _PAYLOAD_MAX:
        topics = sorted({str(k.topic) for k in found})
        payload = json.dumps({"o": origin, "k": [[t, ANY] for t in topics]})
    conn.execute(select(func.pg_notify(CHANGES, payload)))


def _keys(payload: str, origin: str) -> set[Key]:
    """The keys another daemon announced (none for our own, or a payload not understood)."""
    try:
        found = json.loads(payload)
        if found.get("o") == origin:
            return set()
        return {Key(Topic(topic), str(id_)) for topic, id_ in found["k"]}
    except (ValueError, TypeError, KeyError, AttributeError):
        log.warning("ignored a malformed change announcement: %r", payload[:200])
        return set()


@dataclass
class Heard:
    """What one `Listener.receive` brought: nudges for actors, and the keys other daemons'
    committed writes changed."""

    nudges: list[dict[str, Any]] = field(default_factory=list)
    changes: set[Key] = field(default_factory=set)


class Listener:
    """This daemon's LISTEN connection (PostgreSQL only): nudges (`tfward_actor`) and changes
    (`tfward_changes`). `receive` blocks (run it in a worker thread) for up to `timeout`
    seconds; a lost connection raises, and the next call opens a new one. `origin`: this
    daemon's store, whose own changes are not news."""

    def __init__(self, engine: Engine, origin: str) -> None:
        self._engine = engine
        self._origin = origin
        self._raw: Any = None

    def receive(self, timeout: float) -> Heard:
        if self._raw is None:
            raw = self._engine.raw_connection()
            driver: Any = raw.driver_connection
            driver.autocommit = True
            driver.execute(f"LISTEN {CHANNEL}")
            driver.execute(f"LISTEN {CHANGES}")
            self._raw = raw
        try:
            driver = self._raw.driver_connection
            # Wait for the first one only, then take what has come with it: no added latency.
            notes = list(driver.notifies(timeout=timeout, stop_after=1))
            if notes:
                notes += driver.notifies(timeout=0.01, stop_after=255)
        except Exception:  # a lost connection: dropped here, opened again by the next call
            self.close()
            raise
        heard = Heard()
        for note in notes:
            if note.channel == CHANGES:
                heard.changes |= _keys(note.payload, self._origin)
                continue
            try:
                heard.nudges.append(json.loads(note.payload))
            except ValueError:
                log.warning("ignored a malformed nudge: %r", note.payload[:200])
        return heard

    def close(self) -> None:
        if self._raw is not None:
            raw, self._raw = self._raw, None
            raw.invalidate()
