"""Persistence of run credentials: what lets a run's terraform read other workspaces' state.

Each run gets a random token (actors/remote_state.py) that may `GET` the state of exactly the
workspaces its workspace lists in `remote_state_from` (docs/architecture.md §9). The database
keeps the token's SHA-256 only, with that scope; the token itself lives in the memory of the
daemon and in the environment of the run's terraform. A credential is revoked in the
termination funnel's final transaction, and every credential is revoked when a daemon starts
(no terraform of the previous process still runs: a run that goes on gets a new one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, insert, select, update

from .tables import run_credentials, runs, workspaces


@dataclass(frozen=True, slots=True)
class RunCredential:
    """A live credential: the run it belongs to, its workspace, what it may read."""

    run_id: str
    workspace: str
    scope: frozenset[str]


# Built once: every run is issued a credential and has it revoked when it ends.
_INSERT = insert(run_credentials)
_REVOKE_OF_RUN = update(run_credentials).where(
    run_credentials.c.run_id == bindparam("b_run_id"), run_credentials.c.revoked_at.is_(None)
)


def issue(
    conn: Connection,
    token_sha256: str,
    *,
    run_id: str,
    ws_id: str,
    scope: Sequence[str],
    when: datetime,
) -> None:
    """Record a new credential of `run_id` that may read the state of `scope` (names)."""
    conn.execute(
        _INSERT,
        {
            "token_sha256": token_sha256,
            "run_id": run_id,
            "workspace_id": ws_id,
            "scope": sorted(set(scope)),
            "created_at": when,
        },
    )


def find(conn: Connection, token_sha256: str) -> RunCredential | None:
    """The credential with this token digest, if it is not revoked and its run not finished."""
    row = conn.execute(
        select(run_credentials.c.run_id, run_credentials.c.scope, workspaces.c.name)
        .join(runs, runs.c.id == run_credentials.c.run_id)
        .join(workspaces, workspaces.c.id == run_credentials.c.workspace_id)
        .where(
            run_credentials.c.token_sha256 == token_sha256,
            run_credentials.c.revoked_at.is_(None),
            runs.c.finished_at.is_(None),
        )
    ).first()
    if row is None:
        return None
    return RunCredential(row.run_id, row.name, frozenset(row.scope))


def revoke_for_run(conn: Connection, run_id: str, when: datetime) -> int:
    """The run ended (or went back to the queue): its credentials stop working."""
    result = conn.execute(_REVOKE_OF_RUN, {"b_run_id": run_id, "revoked_at": when})
    return result.rowcount


def revoke_for_workspaces(conn: Connection, ws_ids: list[str], when: datetime) -> int:
    """When a daemon takes workspaces over (or starts): no terraform of theirs runs any more,
    so every credential of their runs stops working; other daemons' runs keep theirs."""
    result = conn.execute(
        update(run_credentials)
        .where(run_credentials.c.revoked_at.is_(None), run_credentials.c.workspace_id.in_(ws_ids))
        .values(revoked_at=when)
    )
    return result.rowcount


def revoke_all(conn: Connection, when: datetime) -> int:
    """At start: every credential an earlier process handed out stops working."""
    result = conn.execute(
        update(run_credentials)
        .where(run_credentials.c.revoked_at.is_(None))
        .values(revoked_at=when)
    )
    return result.rowcount
