"""What every page module of the web page uses: who is signed in and what its role may do,
the template context, and the answer after a form."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quart import Response, g, redirect

from ..api import auth
from . import sessions

# What each page form does, as the API route that does the same (its role is the form's).
API_RULES: Mapping[str, tuple[str, str]] = {
    "run": ("POST", "/api/v1/runs/<run_id>/actions/<action>"),
    "workspace": ("POST", "/api/v1/workspaces/<name>/actions/<action>"),
    "rollback": ("POST", "/api/v1/workspaces/<name>/state-versions/<sv_id>/rollback"),
    "download": ("GET", "/api/v1/state-versions/<sv_id>/download"),
    "outbox": ("POST", "/api/v1/outbox/<row_id>/actions/<action>"),
    "release": ("POST", "/api/v1/releases/<release_id>/actions/<action>"),
    "run_events": ("GET", "/api/v1/runs/<run_id>/events"),
    "events": ("GET", "/api/v1/events"),
}


def require(kind: str, action: str = "") -> auth.Principal:
    """The current caller, if its role may do the page action `kind` (`API_RULES`); 403."""
    method, rule = API_RULES[kind]
    return auth.require_as(method, rule, action=action)


def may(kind: str, action: str = "") -> bool:
    """Whether the current caller's role may do the page action (to show its button)."""
    method, rule = API_RULES[kind]
    principal: auth.Principal = g.principal
    return principal.may(auth.required_role(method, rule, {"action": action}) or "read")


def may_run(operation: str) -> bool:
    """Whether the caller may start a run of `operation` (the API's `OPERATION_ROLES`)."""
    principal: auth.Principal = g.principal
    return principal.may(auth.OPERATION_ROLES[operation])


def context(section: str, **values: Any) -> dict[str, Any]:
    """What every page's template gets: who is signed in, the CSRF token, the role checks."""
    signed: sessions.Signed = g.signed
    return {
        "me": signed.principal,
        "csrf": signed.csrf,
        "may": may,
        "may_run": may_run,
        "section": section,
        **values,
    }


def see_other(location: str) -> Response:
    """303 to a page of this site (after a form: the browser GETs it)."""
    return redirect(location, 303)  # type: ignore[return-value]
