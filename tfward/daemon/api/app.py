"""The API application: routes and error mapping (asgi.py has the wrappers Hypercorn serves).

Every request is authenticated first (auth.py): no or an unknown token -> 401, a weaker role
-> 403; then its query string is checked (query.py). Errors never escape as a 500 for bad
input: unknown workspace or run -> 404, a body that is not JSON -> 400, unknown fields or query
parameters and bad values -> 422, a refused action -> 409 with the reason, a method the route
does not take -> 405 with `Allow`. While storage fails (docs/architecture.md §10) every write
answers 503 with the reason and a `Retry-After`, at once; reads answer from the database where
it still reads, else 503 too.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from quart import Response, jsonify, request
from quart_trio import QuartTrio
from quart_trio.wrappers import TrioRequest
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

from ..web import app as web
from . import (
    auth,
    openapi,
    query,
    routes_audit,
    routes_backend,
    routes_cluster,
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

MAX_BODY = 4 * 1024 * 1024  # request bodies, in bytes: larger ones get 413
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


MAX_STATE = 64 * 1024 * 1024  # a state posted to the http backend
_STATE_PATH = re.compile(r"/api/v1/workspaces/[^/]+/state")


class TfwardRequest(TrioRequest):
    """A request whose body may be up to MAX_STATE when it posts a state to the http backend
    (a large infrastructure's state outgrows the 4 MB of the API's JSON bodies); MAX_BODY for
    everything else. Decided from the path, before any of the body is read."""

    def __init__(self, method: str, scheme: str, path: str, *args: Any, **kwargs: Any) -> None:
        if _STATE_PATH.fullmatch(path):
            kwargs["max_content_length"] = MAX_STATE
        super().__init__(method, scheme, path, *args, **kwargs)


def create_app(daemon: Daemon) -> QuartTrio:
    # No static folder of the app's own: the web page serves its files (daemon/web/static).
    app = QuartTrio("tfward", static_folder=None)
    app.request_class = TfwardRequest
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY

    for exc_type, status in _STATUS.items():
        app.register_error_handler(exc_type, _handler(status))
    run_credential = routes_backend.make_credential_lookup(daemon)

    @app.before_request
    async def authenticate() -> None:
        # The web page's requests carry a session, not a token: its blueprint checks them.
        if not web.is_page():
            await auth.authenticate(daemon.tokens, run_credential)
            query.check()
        degraded = daemon.store.health.degraded
        if degraded is not None and request.method not in _READS:
            raise StorageUnavailable(degraded.problem, degraded.reason)

    _storage_errors(app, daemon)

    @app.errorhandler(AccessDenied)
    async def denied(exc: AccessDenied) -> tuple[Response, int, dict[str, str]]:
        response, status = error(exc.status, exc.message)
        challenge = 'Bearer realm="tfward"'
        if request.url_rule is not None and request.url_rule.rule in auth.BACKEND_RULES:
            challenge += ', Basic realm="tfward"'  # terraform's http backend
        return response, status, {"WWW-Authenticate": challenge} if status == 401 else {}

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> tuple[Response, int, dict[str, str]]:
        response, status = error(exc.code or 500, exc.description or exc.name)
        # 405 says which methods the route takes (RFC 9110 §15.5.6).
        allow = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}
        return response, status, allow

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
    routes_cluster.register(app, daemon)
    routes_runs.register(app, daemon)
    routes_state.register(app, daemon)
    routes_backend.register(app, daemon)
    routes_tasks.register(app, daemon)
    routes_releases.register(app, daemon)
    routes_outbox.register(app, daemon)
    routes_inventory.register(app, daemon)
    routes_metrics.register(app, daemon)
    routes_audit.register(app, daemon)
    openapi.register(app, daemon)
    web.register(app, daemon)
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
