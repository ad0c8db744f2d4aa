"""Templates of the web page: one Jinja2 environment, autoescape on, strict about names.

Templates live in `templates/` and the stylesheet and script in `static/`, both package data:
nothing is fetched from elsewhere and nothing is built. Autoescape is on for every template
and no filter marks user-controlled text safe; the one producer of markup is `ansi.to_html`,
which escapes the text it wraps. A page is rendered in a worker thread (the workspaces page of
a thousand workspaces is a few milliseconds of CPU the event loop need not spend).
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import Any

import trio
from jinja2 import Environment, PackageLoader, StrictUndefined
from quart import Response

from tfward.config import format_duration

from .ansi import to_html

_ENV = Environment(
    loader=PackageLoader("tfward.daemon.web", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def when(value: datetime | str | None) -> str:
    """A time (or an API view's RFC 3339 text) as people read it here: UTC, to the second."""
    if not value:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: datetime | str | None) -> str:
    if isinstance(value, str):
        return value
    return "" if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def took(seconds: float | None) -> str:
    """A duration, rounded to what a person cares about."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f}s"
    return format_duration(round(seconds))


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


_ENV.filters.update(when=when, iso=iso, took=took, pretty_json=pretty_json, ansi=to_html)


def render_text(template: str, context: dict[str, Any]) -> str:
    return _ENV.get_template(template).render(context)


async def page(template: str, context: dict[str, Any], status: int = 200) -> Response:
    """The rendered template as an HTML answer. Rendering runs in a thread; a cancelled
    request abandons it (it has no side effects)."""
    html = await trio.to_thread.run_sync(
        functools.partial(render_text, template, context), abandon_on_cancel=True
    )
    response = Response(html, status=status, content_type="text/html; charset=utf-8")
    # Pages are per person and change all the time; nothing here may be cached or framed.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


# The page's own stylesheet and script only: no inline script, no other origin.
CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
