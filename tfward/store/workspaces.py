"""Persistence of workspaces and their locks.

A lock is one row in `workspace_locks`: taking it is an INSERT (the primary key makes two
takers impossible), releasing it a DELETE. A run holds the lock from the end of its plan through
`apply_pending` and `applying`; a user can hold it to freeze a workspace. A lock taken through
terraform's http backend is a user lock that also carries terraform's lock ID and lock info
(docs/protocols.md §8): only that ID may take it again, write the state under it, or unlock it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from tfward.errors import NotFound, WorkspaceLocked
from tfward.ids import new_id, now

from .changes import Key, touch
from .tables import workspace_locks, workspaces


@dataclass(frozen=True, slots=True)
class LockInfo:
    """What terraform sends with a LOCK: its lock ID and who asks, for what (`Operation`,
    `Who`, `Info` of terraform's lock info)."""

    id: str
    operation: str = ""
    who: str = ""
    info: str = ""


@dataclass(frozen=True, slots=True)
class Lock:
    run_id: str | None
    locked_by: str
    reason: str | None
    locked_at: datetime
    terraform: LockInfo | None = None  # taken through the http backend

    def describe(self) -> str:
        # The wording HCP clients string-match on (docs/protocols.md §7).
        if self.run_id:
            return f"The workspace is locked by Run {self.run_id}"
        return f"The workspace is locked by User {self.locked_by}"

    def held_by_id(self, lock_id: str | None) -> bool:
        """Whether `lock_id` is this lock's terraform lock ID."""
        return lock_id is not None and self.terraform is not None and self.terraform.id == lock_id


# Which workspaces a read of many is about: their ids, or a SELECT of them (`configured_ids`).
WorkspaceIds = Collection[str] | Select[tuple[str]]


def configured_ids() -> Select[tuple[str]]:
    """The ids of the configured workspaces, as a subquery for `IN`: no bound variable per
    workspace, whatever their number."""
    return select(workspaces.c.id).where(workspaces.c.configured.is_(True))


def sync_configured(conn: Connection, names: Iterable[str]) -> dict[str, str]:
    """Create rows for configured workspaces, flag the others unconfigured; name -> id."""
    wanted = set(names)
    existing = {
        row.name: row.id for row in conn.execute(select(workspaces.c.name, workspaces.c.id))
    }
    for name in sorted(wanted - existing.keys()):
        existing[name] = new_id("ws")
        conn.execute(
            insert(workspaces).values(
                id=existing[name], name=name, created_at=now(), configured=True
            )
        )
    conn.execute(update(workspaces).values(configured=workspaces.c.name.in_(wanted)))
    touch(conn, *(Key.workspace(ws_id) for ws_id in existing.values()))  # some came or went
    return {name: ws_id for name, ws_id in existing.items() if name in wanted}


def workspace_id(conn: Connection, name: str) -> str:
    ws_id = conn.execute(select(workspaces.c.id).where(workspaces.c.name == name)).scalar()
    if ws_id is None:
        raise NotFound(f"workspace {name!r} not found")
    return str(ws_id)


def workspace_name(conn: Connection, ws_id: str) -> str:
    name = conn.execute(select(workspaces.c.name).where(workspaces.c.id == ws_id)).scalar()
    if name is None:
        raise NotFound(f"workspace {ws_id} not found")
    return str(name)


# Built once: every run takes and releases its workspace's lock, reading it first.
_LOCK = select(workspace_locks).where(workspace_locks.c.workspace_id == bindparam("ws_id"))
_INSERT_LOCK = insert(workspace_locks)
_DELETE_LOCK = delete(workspace_locks).where(workspace_locks.c.workspace_id == bindparam("ws_id"))


def get_lock(conn: Connection, ws_id: str) -> Lock | None:
    row = conn.execute(_LOCK, {"ws_id": ws_id}).first()
    return None if row is None else lock_from_row(row)


def lock_of_each(conn: Connection, ws_ids: WorkspaceIds) -> dict[str, Lock]:
    """The lock of each of the workspaces `ws_ids` that has one, in one statement."""
    rows = conn.execute(select(workspace_locks).where(workspace_locks.c.workspace_id.in_(ws_ids)))
    return {row.workspace_id: lock_from_row(row) for row in rows}


def lock_from_row(row: Any) -> Lock:
    """A `workspace_locks` row as a Lock."""
    terraform = (
        None
        if row.lock_id is None
        else LockInfo(row.lock_id, row.operation or "", row.who or "", row.info or "")
    )
    return Lock(row.run_id, row.locked_by, row.reason, row.locked_at, terraform)


def acquire_lock(
    conn: Connection,
    ws_id: str,
    *,
    run_id: str | None,
    by: str,
    reason: str | None = None,
    terraform: LockInfo | None = None,
) -> Lock:
    """Take the lock, or raise WorkspaceLocked naming the holder. Re-taking one's own lock is a
    no-op (a run that already holds it, or the same user); a lock asked for with terraform's
    lock info is re-taken only with the same lock ID, so two terraform processes of one user
    never both hold it."""
    held = get_lock(conn, ws_id)
    if held is not None:
        if _retaken(held, run_id, by, terraform):
            return held
        raise WorkspaceLocked(held.describe())
    lock = Lock(run_id, by, reason, now(), terraform)
    try:
        with conn.begin_nested():
            conn.execute(
                _INSERT_LOCK,
                {
                    "workspace_id": ws_id,
                    "run_id": run_id,
                    "locked_by": by,
                    "reason": reason,
                    "locked_at": lock.locked_at,
                    "lock_id": terraform and terraform.id,
                    "operation": terraform and terraform.operation,
                    "who": terraform and terraform.who,
                    "info": terraform and terraform.info,
                },
            )
    except IntegrityError:
        holder = get_lock(conn, ws_id)
        raise WorkspaceLocked(holder.describe() if holder else "The workspace is locked") from None
    touch(conn, Key.workspace(ws_id))
    return lock


def keep_lock_for(conn: Connection, ws_id: str, run_id: str, reason: str) -> None:
    """Keep the workspace locked by a run that ends without its lock released (its owner was
    lost mid-apply, docs/architecture.md §15), saying why: the lock it held gets `reason`, or
    it is taken now if the run held none. Only force-unlock releases it."""
    held = get_lock(conn, ws_id)
    if held is not None and held.run_id == run_id:
        conn.execute(
            update(workspace_locks)
            .where(workspace_locks.c.workspace_id == ws_id)
            .values(reason=reason)
        )
    elif held is None:
        acquire_lock(conn, ws_id, run_id=run_id, by="tfward", reason=reason)


def _retaken(held: Lock, run_id: str | None, by: str, terraform: LockInfo | None) -> bool:
    if run_id is not None:
        return held.run_id == run_id
    if terraform is not None:
        return held.held_by_id(terraform.id)
    return held.run_id is None and held.locked_by == by


def release_lock(
    conn: Connection,
    ws_id: str,
    *,
    run_id: str | None = None,
    by: str | None = None,
    lock_id: str | None = None,
    force: bool = False,
) -> bool:
    """Release a lock held by `run_id`, by user `by`, or under terraform's `lock_id`. `force`
    releases whatever holds it. Returns whether a lock was removed. Releasing someone else's
    lock raises WorkspaceLocked."""
    held = get_lock(conn, ws_id)
    if held is None:
        return False
    mine = (
        (run_id is not None and held.run_id == run_id)
        or (run_id is None and by is not None and held.run_id is None and held.locked_by == by)
        or held.held_by_id(lock_id)
    )
    if not (mine or force):
        raise WorkspaceLocked(held.describe() + "; only its holder can unlock it (or force-unlock)")
    conn.execute(_DELETE_LOCK, {"ws_id": ws_id})
    touch(conn, Key.workspace(ws_id))
    return True


def check_writer(conn: Connection, ws_id: str, lock_id: str | None) -> None:
    """May a state be written under `lock_id` (None: the writer holds no lock) now? When the
    workspace is locked only its holder's terraform lock ID may write; a writer that names a
    lock ID must hold that lock (not one force-unlocked meanwhile). Raises WorkspaceLocked."""
    held = get_lock(conn, ws_id)
    if held is None:
        if lock_id is not None:
            raise WorkspaceLocked(
                f"the workspace is not locked under lock ID {lock_id} (was it force-unlocked?); "
                "lock it again, or write without a lock ID"
            )
        return
    if not held.held_by_id(lock_id):
        holder = "its lock ID" if held.terraform else "no terraform lock ID: unlock it first"
        raise WorkspaceLocked(f"{held.describe()}; only the holder may write the state ({holder})")


def list_workspaces(conn: Connection) -> list[tuple[str, str, bool]]:
    rows = conn.execute(
        select(workspaces.c.id, workspaces.c.name, workspaces.c.configured).order_by(
            workspaces.c.name
        )
    )
    return [(row.id, row.name, row.configured) for row in rows]


def locks_held_by_runs(conn: Connection) -> list[tuple[str, str]]:
    """(workspace id, run id) of every lock a run holds."""
    rows = conn.execute(
        select(workspace_locks.c.workspace_id, workspace_locks.c.run_id).where(
            workspace_locks.c.run_id.is_not(None)
        )
    ).all()
    return [(str(ws_id), str(run_id)) for ws_id, run_id in rows]
