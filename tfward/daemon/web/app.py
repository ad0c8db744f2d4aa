"""The web page, served by the API's Quart app as the blueprint `web` (docs/architecture.md §14).

Every page but the sign-in page and the static files needs a live session (sessions.py): a
visit without one is sent to `/login?next=...` (a GET) or refused with 401 (anything else).
Every POST must carry the session's CSRF token (403 otherwise, before the handler runs, so a
forged form changes nothing). A page action needs the role its API twin needs: the forms ask
the API's role table (`auth.require_as`, `may`), and call the same functions as the API's
routes, so nothing is implemented twice and admin actions reach the audit trail the same way.

Query strings are checked against `QUERY` as the API's are against its table (422 naming the
parameter). Errors are pages here, not JSON: 404 for an unknown workspace or run, 409 with the
reason when an action is refused, 403 for a role that may not, 503 while storage fails.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import quote

from quart import Blueprint, Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from tfward.errors import (
    AccessDenied,
    BadRequest,
    InvalidTransition,
    NotFound,
    StateRejected,
    StorageUnavailable,
    TfwardError,
    WorkspaceLocked,
)

from ..api import query
from ..api.query import Param
from . import (
    forms,
    pages_events,
    pages_login,
    pages_other,
    pages_runs,
    pages_workspaces,
    sessions,
)
from .common import see_other
from .render import page

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon

log = logging.getLogger(__name__)

BLUEPRINT = "web"
# Reachable without a session: the sign-in form and what it looks like.
OPEN_ENDPOINTS = frozenset(f"{BLUEPRINT}.{e}" for e in ("login", "login_post", "static"))


PAGE = query.integer(
    "page", "Which page of the list (1 is the newest).", default=1, low=1, high=100_000
)
LIVE = query.Param(
    "live", query.Kind.BOOLEAN, "Leave the log out (the script refreshes the rest).", False
)
# Query parameters of the pages, by endpoint: anything else is refused (422), as in the API.
NEXT = query.text("next", "Where to go once signed in (a path of this site).")
QUERY: Mapping[str, Sequence[Param]] = {
    "login": (NEXT,),
    "login_post": (NEXT,),
    "workspaces": (query.text("name", "Only workspaces whose name contains this."),),
    "workspace": (PAGE,),
    "run": (LIVE,),
    "release": (LIVE,),
    "releases": (LIVE,),
    "run_events": (pages_events.AFTER,),
}


def register(app: QuartTrio, daemon: Daemon) -> None:
    """Add the web page's routes, session checks and error pages to the API's app."""
    web = Blueprint(BLUEPRINT, __name__, static_folder="static", static_url_path="/static")

    @web.before_request
    async def signed_in() -> Response | None:
        return await _check_session(daemon)

    _error_pages(web)
    for module in (pages_login, pages_workspaces, pages_runs, pages_other, pages_events):
        module.register(web, daemon)
    app.register_blueprint(web)


def is_page() -> bool:
    """Whether the current request is one of the web page's (not the API's)."""
    return request.blueprint == BLUEPRINT


def is_web_page(endpoint: str) -> bool:
    """Whether a route of the app (by its endpoint) is the web page's: the API's OpenAPI
    document and role table leave these out on purpose."""
    return endpoint.startswith(f"{BLUEPRINT}.")


async def _check_session(daemon: Daemon) -> Response | None:
    """Before every page: its query string, then the session (a GET without one is sent to
    sign in), then the CSRF token of a POST."""
    endpoint = (request.endpoint or "").removeprefix(f"{BLUEPRINT}.")
    g.query = query.parse(QUERY.get(endpoint, ()), request.args)
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    cookie = request.cookies.get(sessions.COOKIE)
    signed = await daemon.sessions.find(cookie) if cookie else None
    if signed is None:
        if request.method in ("GET", "HEAD") and not endpoint.endswith("events"):
            return see_other("/login?next=" + quote(request.full_path.rstrip("?"), safe="/"))
        raise AccessDenied(401, "sign in first: your session has ended")
    g.signed, g.principal = signed, signed.principal
    if request.method == "POST" and not sessions.same_secret(await forms.csrf_given(), signed.csrf):
        raise AccessDenied(403, "the form's CSRF token is missing or wrong: reload the page")
    return None


_STATUS: Mapping[type[TfwardError], int] = {
    NotFound: 404,
    BadRequest: 422,
    InvalidTransition: 409,
    WorkspaceLocked: 409,
    StateRejected: 409,
}


def _error_pages(web: Blueprint) -> None:
    """Errors of the web page's requests as pages with one line saying what was wrong."""

    @web.errorhandler(TfwardError)
    async def refused(exc: TfwardError) -> Response:
        if isinstance(exc, AccessDenied):
            return await error_page(exc.status, exc.message)
        if isinstance(exc, StorageUnavailable):
            response = await error_page(503, f"{exc}; nothing was changed, try again later")
            response.headers["Retry-After"] = "5"
            return response
        for kind, status in _STATUS.items():
            if isinstance(exc, kind):
                return await error_page(status, str(exc))
        raise exc  # not a refusal: the app's 500

    @web.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        response = await error_page(exc.code or 500, exc.description or exc.name)
        for key, value in exc.get_headers():
            if key.lower() == "allow":
                response.headers["Allow"] = value
        return response


async def error_page(status: int, message: str) -> Response:
    signed = getattr(g, "signed", None)
    values = {
        "status": status,
        "message": message,
        "me": signed.principal if signed else None,
        "csrf": signed.csrf if signed else "",
        "section": "",
    }
    return await page("error.html", values, status=status)
