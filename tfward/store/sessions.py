"""Persistence of the web page's sessions (daemon/web/sessions.py decides what they allow).

A session is one row keyed by the SHA-256 of the random id its browser's cookie carries: the
database never holds the id itself, so a copy of the database signs nobody in. The row names
the API token the session began with (its SHA-256, name and role). Starting a session also
deletes the ones that have ended by time, so the table holds live sessions and few others.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, func, insert, or_, select, tuple_, update

from .tables import web_sessions


@dataclass(frozen=True, slots=True)
class WebSession:
    id_sha256: str
    token_sha256: str
    token_name: str
    role: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime  # the absolute end, whatever its use


def start(conn: Connection, session: WebSession, *, idle_since: datetime) -> None:
    """Record a new session; sessions idle since before `idle_since` or past their absolute
    end (at the new one's creation) are deleted in the same transaction."""
    prune(conn, idle_since=idle_since, when=session.created_at)
    conn.execute(
        insert(web_sessions).values(
            id_sha256=session.id_sha256,
            token_sha256=session.token_sha256,
            token_name=session.token_name,
            role=session.role,
            created_at=session.created_at,
            last_seen_at=session.last_seen_at,
            expires_at=session.expires_at,
        )
    )


def get(conn: Connection, id_sha256: str) -> WebSession | None:
    row = conn.execute(select(web_sessions).where(web_sessions.c.id_sha256 == id_sha256)).first()
    if row is None:
        return None
    return WebSession(
        id_sha256=row.id_sha256,
        token_sha256=row.token_sha256,
        token_name=row.token_name,
        role=row.role,
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
        expires_at=row.expires_at,
    )


def touch(conn: Connection, id_sha256: str, when: datetime) -> None:
    """The session was used at `when`: its idle time starts again."""
    conn.execute(
        update(web_sessions).where(web_sessions.c.id_sha256 == id_sha256).values(last_seen_at=when)
    )


def end(conn: Connection, id_sha256: str) -> bool:
    """Delete the session (logout, or found ended); whether there was one."""
    result = conn.execute(delete(web_sessions).where(web_sessions.c.id_sha256 == id_sha256))
    return result.rowcount > 0


def end_unless_token(conn: Connection, accepted: Collection[tuple[str, str]]) -> int:
    """End every session whose token (SHA-256, role) is not among `accepted` — the tokens the
    config admits now; how many ended."""
    query = delete(web_sessions)
    if accepted:
        pairs = tuple_(web_sessions.c.token_sha256, web_sessions.c.role)
        query = query.where(pairs.not_in(list(accepted)))
    return conn.execute(query).rowcount


def prune(conn: Connection, *, idle_since: datetime, when: datetime) -> int:
    """Delete sessions last seen before `idle_since` or whose absolute end is at or before
    `when`; how many."""
    result = conn.execute(
        delete(web_sessions).where(
            or_(web_sessions.c.last_seen_at < idle_since, web_sessions.c.expires_at <= when)
        )
    )
    return result.rowcount


def count(conn: Connection) -> int:
    """How many sessions the table holds (live ones, and ended ones not yet pruned)."""
    return int(conn.execute(select(func.count()).select_from(web_sessions)).scalar_one())
