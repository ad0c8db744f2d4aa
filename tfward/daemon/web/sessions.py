"""Sign-in sessions of the web page: what a browser's cookie is worth (docs/architecture.md §14).

A person signs in with an API token, checked exactly as the API checks it (`TokenBook`). The
daemon then starts a session: its browser gets a random id in a cookie (`HttpOnly`,
`SameSite=Strict`, `Secure` when `public_url` is https); the database keeps only the id's
SHA-256, with the token's SHA-256, name and role (store/sessions.py). The token itself is not
kept anywhere. A session ends

- `[web] session_idle` (12 h) after it was last used, and `session_max` (7 d) after sign-in,
  whatever its use (`judge`, pure, table-tested);
- at logout;
- when its token is no longer accepted: removed from the config, or given another role (a
  reload ends those sessions at once, and every request checks again).

Every form that changes something carries the session's CSRF token, an HMAC of the session's
id: it cannot be read from the database, and a page of another site cannot know it. The sign-in
form, before any session exists, is guarded the same way by a short-lived cookie of its own
(double submit), so another site cannot sign a browser in under its own token either.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from tfward.errors import StorageUnavailable
from tfward.ids import now
from tfward.store import sessions as session_store
from tfward.store.sessions import WebSession

from ..api.auth import Principal

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon

log = logging.getLogger(__name__)

COOKIE = "tfward_session"
LOGIN_COOKIE = "tfward_login"  # the sign-in form's own CSRF cookie (double submit)
LOGIN_COOKIE_AGE = 3600
# A session's last use is written at most this often (and at most a quarter of the idle time):
# reading a page should not be a database write each time.
TOUCH_EVERY = 60.0


class Verdict(enum.StrEnum):
    LIVE = "live"
    IDLE = "idle"  # not used for `session_idle`
    EXPIRED = "expired"  # `session_max` after sign-in
    REVOKED = "revoked"  # its token is not accepted any more, or has another role now


def judge(
    session: WebSession, when: datetime, *, idle: float, accepted: Principal | None
) -> Verdict:
    """What `session` is worth at `when`. `accepted`: the caller its token names now (None when
    the config no longer accepts the token). Pure."""
    if accepted is None or accepted.role != session.role or accepted.name != session.token_name:
        return Verdict.REVOKED
    if when >= session.expires_at:
        return Verdict.EXPIRED
    if when - session.last_seen_at >= timedelta(seconds=idle):
        return Verdict.IDLE
    return Verdict.LIVE


def needs_touch(session: WebSession, when: datetime, *, idle: float) -> bool:
    """Whether this use should be written as the session's last one (pure)."""
    return when - session.last_seen_at >= timedelta(seconds=min(TOUCH_EVERY, idle / 4))


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def csrf_token(session_id: str) -> str:
    """The CSRF token of the session whose cookie holds `session_id`."""
    return hmac.new(session_id.encode(), b"tfward web csrf", hashlib.sha256).hexdigest()


def same_secret(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


@dataclass(frozen=True, slots=True)
class Signed:
    """A live session as a request sees it: who, and its CSRF token."""

    principal: Principal
    csrf: str
    session_id: str


class SessionBook:
    """Starts, finds and ends sessions for one daemon. `clock` is the time the sessions are
    judged by (a test sets one to age them)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.clock: Callable[[], datetime] = now

    @property
    def secure(self) -> bool:
        """Whether cookies are `Secure`: the page is served over https."""
        return self.daemon.config.daemon.public_url.startswith("https://")

    async def start(self, token: str) -> tuple[str, Signed] | None:
        """Sign in with API token `token`: (the new session's id for the cookie, the session),
        or None when the token is not accepted. Sessions that have ended by time are deleted
        in the same write. A storage fault raises StorageUnavailable (nothing is started)."""
        principal = self.daemon.tokens.lookup(token)
        if principal is None or principal.run_id is not None:
            return None
        settings, when = self.daemon.config.web, self.clock()
        session_id = secrets.token_urlsafe(32)
        session = WebSession(
            id_sha256=digest(session_id),
            token_sha256=digest(token),
            token_name=principal.name,
            role=principal.role,
            created_at=when,
            last_seen_at=when,
            expires_at=when + timedelta(seconds=settings.session_max),
        )
        idle_since = when - timedelta(seconds=settings.session_idle)
        await self.daemon.store.write(
            lambda c: session_store.start(c, session, idle_since=idle_since)
        )
        log.info("web session started for %s (%s)", principal.name, principal.role)
        return session_id, Signed(principal, csrf_token(session_id), session_id)

    async def find(self, session_id: str, *, use: bool = True) -> Signed | None:
        """The live session whose cookie holds `session_id`, or None. A session found ended is
        deleted; its last use is recorded now and then (`use`: this is a use of it, not a live
        stream checking it is still there). Writes are best effort while storage fails (a read
        of a page still works; an ended session is refused all the same)."""
        key = digest(session_id)
        session = await self.daemon.store.read(lambda c: session_store.get(c, key))
        if session is None:
            return None
        when, idle = self.clock(), self.daemon.config.web.session_idle
        accepted = self.daemon.tokens.by_digest(session.token_sha256)
        verdict = judge(session, when, idle=idle, accepted=accepted)
        if verdict is not Verdict.LIVE:
            log.info("web session of %s ended: %s", session.token_name, verdict)
            await self._best_effort(lambda c: session_store.end(c, key))
            return None
        if use and needs_touch(session, when, idle=idle):
            await self._best_effort(lambda c: session_store.touch(c, key, when))
        principal = Principal(session.token_name, session.role)
        return Signed(principal, csrf_token(session_id), session_id)

    async def end(self, session_id: str) -> None:
        """Logout: the session is deleted (StorageUnavailable if the database refuses)."""
        key = digest(session_id)
        await self.daemon.store.write(lambda c: session_store.end(c, key))

    async def end_unaccepted(self) -> int:
        """End the sessions whose token the config does not accept now (a token removed, or
        given another role): at start and after every reload. How many ended."""
        accepted = self.daemon.tokens.accepted()
        ended = await self.daemon.store.write(lambda c: session_store.end_unless_token(c, accepted))
        if ended:
            log.info("ended %d web sessions whose API token is no longer accepted", ended)
        return ended

    async def _best_effort(self, fn: Callable[..., object]) -> None:
        try:
            await self.daemon.store.write(fn, patient=False)
        except StorageUnavailable as exc:
            log.debug("web session bookkeeping skipped while storage fails: %s", exc)
