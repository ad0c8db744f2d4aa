"""The web page's forms: the fields a form may send, checked like the API's bodies.

A form is `application/x-www-form-urlencoded` (what a browser sends); every form that changes
something carries the session's CSRF token as `csrf` (checked before the handler runs, in
app.py). A field the form does not have, a field given twice, or a value over
`MAX_FIELD` characters is refused with 422 naming it.
"""

from __future__ import annotations

from collections.abc import Collection

from quart import request

from tfward.errors import BadRequest

CSRF_FIELD = "csrf"
MAX_FIELD = 4096


async def fields(allowed: Collection[str]) -> dict[str, str]:
    """The current request's form, as {field: value} (absent fields are left out)."""
    form = await request.form
    found: dict[str, str] = {}
    for name in form:
        if name == CSRF_FIELD:
            continue
        if name not in allowed:
            expected = ", ".join(sorted(allowed)) or "none"
            raise BadRequest(f"unknown form field {name!r}; this form has: {expected}")
        values = form.getlist(name)
        if len(values) > 1:
            raise BadRequest(f"form field {name!r}: given {len(values)} times, expected once")
        if len(values[0]) > MAX_FIELD:
            raise BadRequest(f"form field {name!r}: at most {MAX_FIELD} characters")
        found[name] = values[0]
    return found


async def csrf_given() -> str | None:
    """The CSRF token the form carries (None when it has none, or is no form at all)."""
    form = await request.form
    values = form.getlist(CSRF_FIELD)
    return values[0] if len(values) == 1 else None
