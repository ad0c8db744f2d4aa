"""The API application: routes, error mapping, and the ASGI wrapper Hypercorn serves.

Every request is authenticated first (auth.py): no or an unknown token -> 401, a weaker role
-> 403. Errors never escape as a 500 for bad input: unknown workspace or run -> 404, a body that
is not JSON -> 400, unknown fields or bad values -> 422, a refused action -> 409 with the reason.
While storage fails (docs/architecture.md §10) every write answers 503 with the reason and a
`Retry-After`, at once; reads answer from the database where it still reads, else 503 too.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, jsonify, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from tfward.errors import (
    AccessDenied,
    BadRequest,
    InvalidTransition,
    NotFound,
    StateRejected,
    StorageUnavailable,
    WorkspaceLocked,
)

from . import (
    auth,
    openapi,
    routes_inventory,
    routes_metrics,
    routes_outbox,
    routes_releases,
    routes_runs,
    routes_state,
    routes_tasks,
    routes_workspaces,
)

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon

log = logging.getLogger(__name__)

# Methods that only read: answered while storage fails, as far as the database still reads.
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
RETRY_AFTER = "5"

_STATUS = {
    NotFound: 404,
    BadRequest: 422,
    InvalidTransition: 409,
    WorkspaceLocked: 409,
    StateRejected: 409,
}


def error(status: int, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"status": status, "message": message}}), status


def create_app(daemon: Daemon) -> QuartTrio:
    app = QuartTrio("tfward")
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["MAX_CONTENT_LENGTH"] = 4 * 1024 * 1024

    for exc_type, status in _STATUS.items():
        app.register_error_handler(exc_type, _handler(status))

    @app.before_request
    async def authenticate() -> None:
        auth.authenticate(daemon.tokens)
        degraded = daemon.store.health.degraded
        if degraded is not None and request.method not in _READS:
            raise StorageUnavailable(degraded.problem, degraded.reason)

    _storage_errors(app, daemon)

    @app.errorhandler(AccessDenied)
    async def denied(exc: AccessDenied) -> tuple[Response, int, dict[str, str]]:
        response, status = error(exc.status, exc.message)
        challenge = {"WWW-Authenticate": 'Bearer realm="tfward"'} if status == 401 else {}
        return response, status, challenge

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> tuple[Response, int]:
        return error(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    async def internal_error(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error in the API")
        return error(500, f"internal error: {type(exc).__name__}")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness, and whether storage is degraded (then `status` is `degraded` and
        `storage` says why and since when). Always 200 while the daemon runs: restarting it
        would not cure its storage."""
        storage = daemon.store.health.status()
        status = "stopping" if daemon.stopping else str(storage["status"])
        return {"data": {"status": status, "storage": storage}}

    @app.get("/api/v1/recovery")
    async def recovery() -> dict[str, Any]:
        """What recovery did when this daemon started (docs/architecture.md §5)."""
        report = daemon.recovery.as_dict() if daemon.recovery else {}
        return {"data": report}

    routes_workspaces.register(app, daemon)
    routes_runs.register(app, daemon)
    routes_state.register(app, daemon)
    routes_tasks.register(app, daemon)
    routes_releases.register(app, daemon)
    routes_outbox.register(app, daemon)
    routes_inventory.register(app, daemon)
    routes_metrics.register(app, daemon)
    openapi.register(app, daemon)
    return app


def _storage_errors(app: QuartTrio, daemon: Daemon) -> None:
    """503 with one line saying why storage is degraded, and when to try again."""

    @app.errorhandler(StorageUnavailable)
    async def storage_unavailable(exc: StorageUnavailable) -> tuple[Response, int, dict[str, str]]:
        degraded = daemon.store.health.degraded
        message = degraded.describe() if degraded is not None else str(exc)
        response, status = error(503, f"{message}; nothing was changed, try again later")
        return response, status, {"Retry-After": RETRY_AFTER}


def _handler(status: int) -> Any:
    async def handle(exc: Exception) -> tuple[Response, int]:
        return error(status, str(exc))

    return handle


class ShieldFinalSend:
    """ASGI wrapper: the final body send of a response runs shielded.

    Quart-Trio cancels its per-request nursery on `http.disconnect`; when that lands inside
    Hypercorn's close of a `Connection: close` / HTTP/1.0 connection, the socket is never
    closed (hypercorn#330). Shielding only the *final* send keeps streams cancellable."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def guarded(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.CancelScope(shield=True):
                    await send(message)
            else:
                await send(message)

        await self.app(scope, receive, guarded)
