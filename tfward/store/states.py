"""Persistence of state versions, with the serial and lineage rules that protect them.

A state can become current only if it continues the current lineage with a higher serial.
Rollback copies an old version's content into a new version with the next serial.

The outputs kept beside each version are the ones the API shows: terraform's sensitive outputs
with a null value, and the workspace's secret values masked in the rest (an output of a secret
terraform was never told is sensitive). They are sealed at rest like the state itself.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select

from tfward.errors import NotFound, StateRejected
from tfward.ids import new_id, now
from tfward.runs.masking import SecretMask

from . import followups, inventory, sealing
from .changes import Key, touch
from .resources import resources_of
from .tables import state_versions
from .workspaces import WorkspaceIds


class StateKind(enum.StrEnum):
    """How a state version came to be."""

    APPLY = "apply"  # a run's apply
    PARTIAL = "partial"  # what an interrupted or failed apply left
    ROLLBACK = "rollback"  # an older version's content, made current again
    HTTP_BACKEND = "http-backend"  # posted to terraform's http backend (or `tfward state push`)


@dataclass(frozen=True, slots=True)
class StateVersion:
    id: str
    workspace_id: str
    serial: int
    lineage: str
    sha256: str
    outputs: dict[str, Any]
    resource_count: int
    kind: str
    run_id: str | None
    rolled_back_from: str | None
    created_at: datetime
    created_by: str | None = None  # the API token that wrote it (backend, rollback)


@dataclass(frozen=True, slots=True)
class ParsedState:
    serial: int
    lineage: str
    outputs: dict[str, Any]
    resource_count: int
    sha256: str
    raw: bytes


def parse_state(raw: bytes, mask: SecretMask | None = None) -> ParsedState:
    """Read the parts of a terraform state file we check and show, the outputs with their
    sensitive values nulled and `mask` (the workspace's secrets) applied to the rest. Raises
    StateRejected."""
    try:
        doc = json.loads(raw)
        serial, lineage = int(doc["serial"]), str(doc["lineage"])
        outputs = doc.get("outputs") or {}
        instances = sum(
            len(r.get("instances") or [])
            for r in doc.get("resources") or []
            if r.get("mode") == "managed"
        )
        if not isinstance(outputs, dict):
            raise TypeError("outputs is not an object")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StateRejected(f"not a terraform state file: {exc}") from exc
    shown = (mask or SecretMask()).value(
        {name: _shown_output(out) for name, out in outputs.items()}
    )
    return ParsedState(serial, lineage, shown, instances, hashlib.sha256(raw).hexdigest(), raw)


def with_serial(raw: bytes, serial: int, mask: SecretMask | None = None) -> ParsedState:
    """The state `raw` with its serial replaced by `serial`, parsed (a rollback's copy of an
    old version; the state terraform could not persist, which it left with the serial of the
    last one it did, docs/architecture.md §10). Raises StateRejected."""
    try:
        doc = json.loads(raw)
        doc["serial"] = serial
    except (ValueError, TypeError) as exc:
        raise StateRejected(f"not a terraform state file: {exc}") from exc
    return parse_state((json.dumps(doc, indent=2) + "\n").encode(), mask)


def _shown_output(out: Any) -> Any:
    if isinstance(out, dict) and out.get("sensitive"):
        return {**out, "value": None}
    return out


def _from_row(conn: Connection, row: Any) -> StateVersion:
    m = row._mapping
    outputs = json.loads(sealing.unseal(conn, m["outputs"], sealing.STATE_OUTPUTS))
    return StateVersion(
        m["id"],
        m["workspace_id"],
        m["serial"],
        m["lineage"],
        m["sha256"],
        outputs,
        m["resource_count"],
        m["kind"],
        m["run_id"],
        m["rolled_back_from"],
        m["created_at"],
        m["created_by"],
    )


_COLUMNS = [c for c in state_versions.c if c.name != "state"]
# The current version's reads are built once: a run reads it two or three times (its start,
# the state kept after its apply), and building them cost more than running them.
_OF_WORKSPACE = state_versions.c.workspace_id == bindparam("ws_id")
_NEWEST_FIRST = state_versions.c.serial.desc()
_CURRENT = select(*_COLUMNS).where(_OF_WORKSPACE).order_by(_NEWEST_FIRST).limit(1)
_CURRENT_RAW = select(state_versions.c.state).where(_OF_WORKSPACE).order_by(_NEWEST_FIRST).limit(1)
_SHA256S = select(state_versions.c.sha256).where(_OF_WORKSPACE)
_INSERT = insert(state_versions)


def current(conn: Connection, ws_id: str) -> StateVersion | None:
    row = conn.execute(_CURRENT, {"ws_id": ws_id}).first()
    return None if row is None else _from_row(conn, row)


def current_of_each(conn: Connection, ws_ids: WorkspaceIds) -> dict[str, StateVersion]:
    """The current version of each of the workspaces `ws_ids` that has one (what `current`
    gives for one), in one statement."""
    highest = (
        select(state_versions.c.workspace_id, func.max(state_versions.c.serial).label("serial"))
        .where(state_versions.c.workspace_id.in_(ws_ids))
        .group_by(state_versions.c.workspace_id)
        .subquery()
    )
    rows = conn.execute(
        select(*_COLUMNS).join(
            highest,
            (highest.c.workspace_id == state_versions.c.workspace_id)
            & (highest.c.serial == state_versions.c.serial),
        )
    )
    return {row.workspace_id: _from_row(conn, row) for row in rows}


def current_raw(conn: Connection, ws_id: str) -> bytes | None:
    raw = conn.execute(_CURRENT_RAW, {"ws_id": ws_id}).scalar()
    return None if raw is None else sealing.unseal(conn, raw, "state")


def get(conn: Connection, sv_id: str) -> StateVersion:
    row = conn.execute(select(*_COLUMNS).where(state_versions.c.id == sv_id)).first()
    if row is None:
        raise NotFound(f"state version {sv_id} not found")
    return _from_row(conn, row)


def get_raw(conn: Connection, sv_id: str) -> bytes:
    raw = conn.execute(select(state_versions.c.state).where(state_versions.c.id == sv_id)).scalar()
    if raw is None:
        raise NotFound(f"state version {sv_id} not found")
    return sealing.unseal(conn, raw, "state")


def stored_sha256(conn: Connection, ws_id: str) -> set[str]:
    """The sha256 of every state version of the workspace (what its backups may duplicate)."""
    rows = conn.execute(_SHA256S, {"ws_id": ws_id})
    return {str(sha) for (sha,) in rows}


def list_versions(conn: Connection, ws_id: str, limit: int = 100) -> list[StateVersion]:
    rows = conn.execute(
        select(*_COLUMNS)
        .where(state_versions.c.workspace_id == ws_id)
        .order_by(state_versions.c.serial.desc())
        .limit(limit)
    )
    return [_from_row(conn, r) for r in rows]


def check(conn: Connection, ws_id: str, state: ParsedState) -> StateVersion | None:
    """Whether `state` may become the current version: the current version when `state` is
    its very content (storing it changes nothing), else None. Raises StateRejected for another
    lineage or a serial that does not move forward."""
    cur = current(conn, ws_id)
    if cur is None:
        return None
    if cur.sha256 == state.sha256:
        return cur
    if cur.lineage != state.lineage:
        raise StateRejected(
            f"state lineage {state.lineage} differs from the workspace's {cur.lineage}"
        )
    if state.serial <= cur.serial:
        raise StateRejected(
            f"state serial {state.serial} is not newer than the current serial {cur.serial}"
        )
    return None


def store(
    conn: Connection,
    ws_id: str,
    state: ParsedState,
    *,
    kind: str,
    run_id: str | None,
    rolled_back_from: str | None = None,
    created_by: str | None = None,
    secrets: Iterable[str] | None = None,
) -> StateVersion | None:
    """Store `state` as the new current version. Returns None when it equals the current one.
    Raises StateRejected for another lineage or a serial that does not move forward. The
    inventory follows: with `secrets` (the workspace's sensitive values, masked in ids) in
    this transaction, without them by an `inventory_sync` job (inventory.py)."""
    if check(conn, ws_id, state) is not None:
        return None
    version = StateVersion(
        new_id("sv"),
        ws_id,
        state.serial,
        state.lineage,
        state.sha256,
        state.outputs,
        state.resource_count,
        kind,
        run_id,
        rolled_back_from,
        now(),
        created_by,
    )
    conn.execute(
        _INSERT,
        {
            "id": version.id,
            "workspace_id": ws_id,
            "serial": version.serial,
            "lineage": version.lineage,
            "sha256": version.sha256,
            "state": sealing.seal(conn, state.raw, "state"),
            "outputs": sealing.seal(
                conn, json.dumps(version.outputs).encode(), sealing.STATE_OUTPUTS
            ),
            "resource_count": version.resource_count,
            "kind": kind,
            "run_id": run_id,
            "rolled_back_from": rolled_back_from,
            "created_at": version.created_at,
            "created_by": created_by,
        },
    )
    # Every stored version (apply, partial, rollback, ...) refreshes the inventory.
    if secrets is None or not _sync_inventory(conn, version, state.raw, secrets):
        followups.inventory_sync(conn, ws_id, version.id, version.serial, run_id)
    touch(conn, Key.workspace(ws_id))  # its latest state version
    return version


def _sync_inventory(
    conn: Connection, version: StateVersion, raw: bytes, secrets: Iterable[str]
) -> bool:
    """Sync the inventory to `version` now; False when its resources cannot be read (the
    caller queues the job, which records why)."""
    try:
        found = resources_of(raw, secrets)
    except (StateRejected, LookupError, TypeError, AttributeError):
        return False
    inventory.sync(
        conn, version.workspace_id, version.id, version.serial, found, version.created_at
    )
    return True


def rollback(
    conn: Connection,
    ws_id: str,
    sv_id: str,
    mask: SecretMask | None = None,
    *,
    created_by: str | None = None,
) -> StateVersion:
    """Make a new current version whose content is `sv_id`'s, with the next serial; its
    outputs masked with `mask` (the workspace's secrets)."""
    old = get(conn, sv_id)
    if old.workspace_id != ws_id:
        raise NotFound(f"state version {sv_id} does not belong to this workspace")
    latest = current(conn, ws_id)
    if latest is not None and latest.id == sv_id:
        raise StateRejected(f"state version {sv_id} is already the current state")
    top = conn.execute(
        select(func.max(state_versions.c.serial)).where(state_versions.c.workspace_id == ws_id)
    ).scalar_one()
    version = store(
        conn,
        ws_id,
        with_serial(get_raw(conn, sv_id), int(top) + 1, mask),
        kind=StateKind.ROLLBACK,
        run_id=None,
        rolled_back_from=sv_id,
        created_by=created_by,
    )
    assert version is not None  # the new serial makes it new content
    return version
