"""The hottest read without the framework: a plain `GET /api/v1/runs/{id}` answered in ASGI.

Profiling a GET of a run (README, Benchmarks) found the daemon spending about 2 ms of CPU
where a bare ASGI handler on Hypercorn spends 0.6: Quart's request and response objects and
its before-request hooks, the two ASGI wrappers (asgi.py), a worker-thread hop for the store
read, the joined SELECT, building the view and encoding it. `RunViews` (runviews.py) removes
the read and the encoding for every GET but the first after a change; this wrapper, outermost
in front of the app, removes the rest for the one request shape clients poll: `GET` of
`/api/v1/runs/<id>` with no query string and no body, on a keep-alive HTTP/1.1 connection.
Everything else — other routes, a query string (a long-poll, or a parameter to refuse), a
body, `Connection: close`, HTTP/1.0, HEAD — goes to the app exactly as before.

It keeps every semantic of the Quart route (`routes_runs.show_run`), and
tests/daemon/test_fastpath.py compares the two paths' answers, status, headers and bytes:
the token is checked against the same TokenBook and role table (auth.py: 401 with the same
challenge, 403), an unknown run is 404, a database that does not read is 503 with the
storage line and `Retry-After` (reads are answered while storage is degraded as long as the
database reads), anything else is a logged 500; the body is the same bytes (RunViews encodes
as `jsonify` does) with the same `Content-Type`.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from tfward.errors import AccessDenied, NotFound, StorageUnavailable

from . import auth
from .app import RETRY_AFTER
from .runviews import encode

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon

log = logging.getLogger(__name__)

RULE = "/api/v1/runs/<run_id>"
_PATH = re.compile(r"/api/v1/runs/([^/]+)")
_JSON = (b"content-type", b"application/json")
_CHALLENGE = (b"www-authenticate", b'Bearer realm="tfward"')
# Request headers that send a request down the ordinary path (asgi.py handles bodies and
# connections that close).
_ORDINARY = frozenset({b"content-length", b"transfer-encoding", b"expect", b"upgrade"})


class FastPath:
    """ASGI wrapper answering the plain GET of a run itself (see the module's docstring).
    `enabled` False sends everything to the app (the equivalence test compares the two)."""

    def __init__(self, app: Any, daemon: Daemon) -> None:
        self.app = app
        self.daemon = daemon
        self.enabled = True
        self.need = auth.required_role("GET", RULE, {})
        self.served = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            self.enabled
            and scope["type"] == "http"
            and scope["method"] == "GET"
            and not scope["query_string"]
            and scope["http_version"] == "1.1"
            and not scope.get("root_path")
            and (match := _PATH.fullmatch(scope["path"])) is not None
        ):
            authorization = _plain_headers(scope["headers"])
            if authorization is not None:
                self.served += 1
                status, body, headers = await self._show_run(match[1], scope["path"], authorization)
                await _answer(send, status, body, headers)
                return
        await self.app(scope, receive, send)

    async def _show_run(
        self, run_id: str, path: str, authorization: str
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """(status, body, extra headers) of the answer. Never raises but for cancellation (the
        client went away: the store read is abandoned)."""
        try:
            self._authorize(path, authorization)
            entry = self.daemon.run_views.cached(run_id) or await self.daemon.run_views.get(run_id)
        except AccessDenied as exc:
            challenge = [_CHALLENGE] if exc.status == 401 else []
            return exc.status, _error(exc.status, exc.message), challenge
        except NotFound as exc:
            return 404, _error(404, str(exc)), []
        except StorageUnavailable as exc:
            degraded = self.daemon.store.health.degraded
            message = degraded.describe() if degraded is not None else str(exc)
            body = _error(503, f"{message}; nothing was changed, try again later")
            return 503, body, [(b"retry-after", RETRY_AFTER.encode())]
        except Exception as exc:  # the app's 500 for anything unexpected, logged as it logs it
            log.exception("unhandled error in the API")
            return 500, _error(500, f"internal error: {type(exc).__name__}"), []
        return 200, entry.body, []

    def _authorize(self, path: str, authorization: str) -> None:
        """auth.authenticate for this route: AccessDenied(401) for no or an unknown token,
        (403) for a role under the route's."""
        principal = self.daemon.tokens.lookup(auth.presented_token(authorization))
        if principal is None:
            raise AccessDenied(401, "unknown API token")
        if self.need is not None and not principal.may(self.need):
            raise AccessDenied(
                403,
                f"token {principal.name!r} has role {principal.role}; GET {path} needs {self.need}",
            )


def _plain_headers(headers: Any) -> str | None:
    """The Authorization header ("" when absent) of a request this path may answer, or None
    when a header sends it down the ordinary path."""
    found = ""
    for name, value in headers:
        if name in _ORDINARY:
            return None
        if name == b"connection" and b"close" in value.lower():
            return None
        if name == b"authorization" and not found:
            found = value.decode("latin-1")
    return found


def _error(status: int, message: str) -> bytes:
    """The app's error body (app.error), byte for byte."""
    return encode({"error": {"status": status, "message": message}}) + b"\n"


async def _answer(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    start = [_JSON, (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})
