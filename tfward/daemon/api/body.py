"""Request body parsing: JSON objects with known fields of known types, or a clear 4xx.

The bytes are parsed by `tfward.wirejson` (no nesting deep enough to overflow, no lone
surrogates); query strings are query.py's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quart import request
from werkzeug.exceptions import BadRequest as HTTPBadRequest

from tfward import wirejson
from tfward.errors import BadRequest


async def json_object(allowed: Mapping[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """The request's JSON object (empty body = {}). 400 if it is not JSON tfward accepts (not
    UTF-8, too deep, a lone surrogate); 422 naming the field for an unknown field or a value of
    the wrong type."""
    raw = await request.get_data()
    if not raw.strip():
        return {}
    try:
        body = wirejson.loads(raw)
    except wirejson.JsonRefused as exc:
        raise HTTPBadRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    if set(body) == {"data"} and isinstance(body["data"], dict):
        body = body["data"]
    for key, value in body.items():
        if key not in allowed:
            raise BadRequest(f"unknown field {key!r}; allowed: {', '.join(sorted(allowed))}")
        expected = allowed[key]
        if value is not None and (
            not isinstance(value, expected)
            or (isinstance(value, bool) and bool not in _tuple(expected))
        ):
            raise BadRequest(
                f"field {key!r}: expected {_names(expected)}, got {type(value).__name__}"
            )
    return body


def string_list(body: Mapping[str, Any], key: str) -> list[str]:
    value = body.get(key) or []
    if not all(isinstance(v, str) and v for v in value):
        raise BadRequest(f"field {key!r}: expected a list of non-empty strings")
    return list(value)


def _tuple(t: type | tuple[type, ...]) -> tuple[type, ...]:
    return t if isinstance(t, tuple) else (t,)


def _names(t: type | tuple[type, ...]) -> str:
    return " or ".join(x.__name__ for x in _tuple(t))
