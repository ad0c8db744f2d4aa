"""Query strings: every query parameter of every route, declared once, checked before the
handler runs; body.py's twin for the part of a request after the `?`.

`TABLE` maps (method, rule) to the parameters the route takes, as auth.py's role table maps
them to roles. The `before_request` hook (`check`) parses `request.args` against it and keeps
the typed values for the handler (`args()`); the OpenAPI document (openapi.py) documents each
route's parameters from the same table, so the two cannot drift apart. Absent parameters get
their default.

Refused with 422 naming the parameter: a parameter the route does not take (as an unknown body
field is: `wait_statuss=applied` would otherwise silently not wait), one given twice, an empty
value, a value of the wrong type (`limit=abc`, `limit=null`, `follow=yes`) and one out of range
(`wait_timeout=-1`, `wait_timeout=99999`, `limit=0`).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from quart import g, request

from tfward.errors import BadRequest
from tfward.releases.model import ReleaseStatus
from tfward.runs.model import Status
from tfward.store import outbox as outbox_store
from tfward.store.audit import AuditAction

Schema = dict[str, Any]

_INTEGER = re.compile(r"[+-]?\d{1,20}")  # int() refuses more than 4,300 digits
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_BOOLEANS = {"true": True, "false": False}


class Kind(enum.StrEnum):
    """How a parameter's text is read."""

    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    TEXT = "text"
    CHOICE = "choice"  # one of `choices`
    CHOICES = "choices"  # a comma-separated list of `choices`, at least one


@dataclass(frozen=True, slots=True)
class Param:
    """One query parameter: its name, how it is read, its bounds and default."""

    name: str
    kind: Kind
    description: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    def parse(self, raw: str) -> Any:
        """The typed value of `raw`; BadRequest (422) naming the parameter when it is wrong."""
        if raw == "":
            raise self._refuse("an empty value", raw)
        if self.kind is Kind.INTEGER:
            if not _INTEGER.fullmatch(raw):
                raise self._refuse(self._expected(), raw)
            return self._bounded(int(raw), raw)
        if self.kind is Kind.NUMBER:
            if not _NUMBER.fullmatch(raw) or not math.isfinite(number := float(raw)):
                raise self._refuse(self._expected(), raw)
            return self._bounded(number, raw)
        if self.kind is Kind.BOOLEAN:
            if raw not in _BOOLEANS:
                raise self._refuse(self._expected(), raw)
            return _BOOLEANS[raw]
        if self.kind is Kind.CHOICE:
            if raw not in self.choices:
                raise self._refuse(self._expected(), raw)
            return raw
        if self.kind is Kind.CHOICES:
            values = raw.split(",")
            if not all(value in self.choices for value in values):
                raise self._refuse(self._expected(), raw)
            return tuple(values)
        return raw

    def schema(self) -> Schema:
        """The parameter as an OpenAPI parameter object."""
        found: Schema = {"name": self.name, "in": "query", "description": self.description}
        schema: Schema
        if self.kind in (Kind.INTEGER, Kind.NUMBER):
            schema = {"type": str(self.kind)}
            if self.minimum is not None:
                schema["minimum"] = self.minimum
            if self.maximum is not None:
                schema["maximum"] = self.maximum
        elif self.kind is Kind.BOOLEAN:
            schema = {"type": "boolean"}
        elif self.kind is Kind.CHOICE:
            schema = {"type": "string", "enum": list(self.choices)}
        elif self.kind is Kind.CHOICES:
            schema = {
                "type": "array",
                "items": {"type": "string", "enum": list(self.choices)},
                "minItems": 1,
            }
            found.update(style="form", explode=False)  # `a,b,c`
        else:
            schema = {"type": "string", "minLength": 1}
        if self.default is not None:
            schema["default"] = self.default
        found["schema"] = schema
        return found

    def _bounded(self, value: float, raw: str) -> Any:
        low, high = self.minimum, self.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            raise self._refuse(self._expected(), raw)
        return value

    def _expected(self) -> str:
        if self.kind in (Kind.INTEGER, Kind.NUMBER):
            what = "an integer" if self.kind is Kind.INTEGER else "a number"
            low, high = _plain(self.minimum), _plain(self.maximum)
            if low is not None and high is not None:
                return f"{what} from {low} to {high}"
            return f"{what} >= {low}" if low is not None else what
        if self.kind is Kind.BOOLEAN:
            return "true or false"
        if self.kind is Kind.CHOICE:
            return "one of " + ", ".join(self.choices)
        return "a comma-separated list of " + ", ".join(self.choices)

    def _refuse(self, expected: str, raw: str) -> BadRequest:
        if raw == "":
            return BadRequest(f"query parameter {self.name!r}: got an empty value")
        shown = raw if len(raw) <= 60 else raw[:57] + "..."
        return BadRequest(f"query parameter {self.name!r}: expected {expected}, got {shown!r}")


def _plain(value: float | None) -> str | None:
    if value is None:
        return None
    return str(int(value)) if float(value).is_integer() else str(value)


def _names(values: Iterable[Any]) -> tuple[str, ...]:
    return tuple(str(v) for v in values)


def integer(name: str, description: str, *, default: int, low: int, high: int) -> Param:
    return Param(name, Kind.INTEGER, description, default, low, high)


def text(name: str, description: str) -> Param:
    return Param(name, Kind.TEXT, description)


LIMIT = integer("limit", "At most this many (1 to 1000).", default=100, low=1, high=1000)
WAIT_TIMEOUT = Param(
    "wait_timeout", Kind.NUMBER, "Seconds to long-poll at most (0 to 300).", 30, 0, 300
)
WAIT_STATUS = Param(
    "wait_status",
    Kind.CHOICES,
    "Long-poll until the run is in one of these statuses, or is terminal.",
    choices=_names(Status),
)
FOLLOW = Param("follow", Kind.BOOLEAN, "Stream until the run ends.", False)
RUN_ID = text("run_id", "Only those of this run.")
RESOURCE_TYPE = text("type", "Only resources of this type.")

WS = "/api/v1/workspaces"
TABLE: Mapping[tuple[str, str], Sequence[Param]] = {
    ("GET", f"{WS}/<name>/runs"): (LIMIT,),
    ("GET", "/api/v1/runs/<run_id>"): (WAIT_STATUS, WAIT_TIMEOUT),
    ("GET", "/api/v1/runs/<run_id>/logs"): (FOLLOW,),
    ("GET", f"{WS}/<name>/resources"): (RESOURCE_TYPE,),
    ("GET", "/api/v1/resources"): (
        RESOURCE_TYPE,
        text("workspace", "Only this workspace (404 if unknown)."),
    ),
    ("GET", "/api/v1/releases"): (
        LIMIT,
        Param("status", Kind.CHOICES, "Only these statuses.", choices=_names(ReleaseStatus)),
    ),
    ("GET", "/api/v1/releases/<release_id>"): (
        text("wait_after", "A `revision`: long-poll until the release looks different."),
        WAIT_TIMEOUT,
    ),
    ("GET", "/api/v1/outbox"): (
        Param("status", Kind.CHOICE, "Only rows in this status.", choices=outbox_store.STATUSES),
        text("kind", "Only rows of this kind."),
        RUN_ID,
        LIMIT,
    ),
    # Terraform's http backend names the lock it holds when it writes the state.
    **{
        (method, "/api/v1/workspaces/<name>/state"): (
            text("ID", "The lock ID terraform holds (when the workspace is locked)."),
        )
        for method in ("POST", "PUT")
    },
    ("GET", "/api/v1/audit"): (
        Param("action", Kind.CHOICE, "Only events of this action.", choices=_names(AuditAction)),
        LIMIT,
    ),
    ("GET", "/api/v1/notifications/deliveries"): (
        text("destination", "Only attempts for this destination."),
        RUN_ID,
        text("outbox_id", "Only attempts of this outbox row."),
        LIMIT,
    ),
}


def params_of(method: str, rule: str) -> Sequence[Param]:
    """The query parameters a route takes (none unless the table names some)."""
    return TABLE.get(("GET" if method == "HEAD" else method, rule), ())


def check() -> None:
    """Parse the current request's query string against the table (a Quart `before_request`
    hook, after authentication); keep the values for `args()`. Raises BadRequest (422)."""
    rule = request.url_rule.rule if request.url_rule is not None else None
    if rule is None:
        return  # no such route: routing answers 404 or 405
    g.query = parse(params_of(request.method, rule), request.args)


def parse(params: Sequence[Param], given: Any) -> dict[str, Any]:
    """`given` (a MultiDict of the query string) read as `params`, with defaults filled in."""
    known = {p.name: p for p in params}
    for name in given:
        if name not in known:
            allowed = ", ".join(sorted(known)) or "none"
            raise BadRequest(f"unknown query parameter {name!r}; this endpoint takes: {allowed}")
    values: dict[str, Any] = {}
    for name, param in known.items():
        found = given.getlist(name)
        if len(found) > 1:
            raise BadRequest(f"query parameter {name!r}: given {len(found)} times, expected once")
        values[name] = param.parse(found[0]) if found else param.default
    return values


def args() -> Mapping[str, Any]:
    """The parsed query parameters of the current request (see `check`)."""
    found: Mapping[str, Any] = g.query
    return found
