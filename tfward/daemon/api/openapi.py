"""The API's OpenAPI 3.1 document, served at `GET /api/v1/openapi.json`.

It is plain data built from three sources, so it cannot drift far from what the daemon does:
- the routes, one `Paths.add` per method and rule, in openapi_paths.py (the event streams in
  openapi_streams.py, terraform's http backend in openapi_backend.py);
  tests/daemon/test_openapi.py fails when a route of the app is missing there or a documented
  path is not a route;
- the component schemas in openapi_schemas.py (enumerations read from the models);
- who may call what, read here from auth.py's tables (`PUBLIC`, `ROLES`), the same ones its
  `before_request` hook enforces: each operation names its role in words and as
  `x-required-role` (a role, or a mapping from the `action` / `operation` value to a role),
  and documents 401 and, where a weaker role exists, 403.

Terraform's http backend uses the methods LOCK and UNLOCK, which OpenAPI has no field for:
their operations are in the path item's `x-methods` extension, keyed by method, shaped like
any other operation.

The configured workspace names are the `examples` of `{name}`, so a fuzzer (`make fuzz`) and a
reader both meet real workspaces.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from quart_trio import QuartTrio

from tfward import __version__
from tfward.runs.model import Operation

from . import auth, query
from .openapi_backend import backend
from .openapi_paths import SECTIONS
from .openapi_schemas import JSON, SCHEMAS, Schema, enum, ref
from .openapi_streams import streams

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon

_RUNS_RULE = "/api/v1/workspaces/<name>/runs"
_ERRORS = {
    400: ("BadJson", "The body is not JSON."),
    401: ("Unauthorized", "No token, or one the daemon does not accept."),
    403: ("Forbidden", "The token's role (or run task) does not allow this."),
    404: ("NotFound", "No such workspace, run, version, result, row, release or action."),
    409: ("Conflict", "The action is refused now: the reason is in the message."),
    413: ("TooLarge", "The request body is too large."),
    422: (
        "Invalid",
        "An unknown field or query parameter, a value of the wrong type, or a bad value.",
    ),
    503: (
        "Unavailable",
        "The daemon is stopping, the feature is not available, or storage is degraded (a "
        "full disk, a read-only or locked database: the message says which and since when; "
        "`Retry-After` says when to try again). Writes answer it at once while storage "
        "fails; reads only when the database does not read either.",
    ),
}
# The methods an OpenAPI path item has fields for; others go under X_METHODS.
_OPENAPI_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
X_METHODS = "x-methods"
_PATH_PARAMS = {
    "name": "A workspace name.",
    "run_id": "A run id (`run-...`).",
    "sv_id": "A state version id (`sv-...`).",
    "cv_id": "A configuration version id (`cv-...`).",
    "a": "The configuration version to diff from.",
    "b": "The configuration version to diff to.",
    "result_id": "A run task result id.",
    "release_id": "A release id.",
    "row_id": "An outbox row id.",
    "action": "What to do.",
}


def openapi_path(rule: str) -> str:
    """A Werkzeug rule as an OpenAPI path: `<name>` and `<conv:name>` become `{name}`."""
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)


def required_role(method: str, rule: str) -> str | dict[str, str] | None:
    """What auth.py enforces for the route (None: open), for `x-required-role`."""
    if (method, rule) in auth.PUBLIC:
        return None
    if (method, rule) == ("POST", _RUNS_RULE):
        # The gate lets `plan` through; the handler asks for `apply` for the rest.
        return {str(op): "plan" if op is Operation.PLAN else "apply" for op in Operation}
    need = auth.ROLES.get((method, rule))
    if need is None or isinstance(need, str):
        return auth.required_role(method, rule, {})
    return dict(need)


class Paths:
    """Collects operations under their OpenAPI paths."""

    def __init__(self, workspaces: Sequence[str]) -> None:
        self.workspaces = list(workspaces)
        self.paths: dict[str, dict[str, Any]] = {}

    def add(
        self,
        method: str,
        rule: str,
        operation_id: str,
        summary: str,
        *,
        tag: str,
        ok: Schema,
        status: int = 200,
        media: str = JSON,
        errors: Iterable[int] = (),
        body: str | None = None,
        document: str | None = None,
        actions: Sequence[str] = (),
        notes: str = "",
        responses: Mapping[int, Any] | None = None,
        raw_body: Schema | None = None,
        headers: Sequence[Schema] = (),
    ) -> None:
        """One operation. `body` names a schema json_object checks; `document` one that the
        handler parses itself (no envelope, required); `raw_body` a JSON body read as it is
        (not required); `actions` the values of `<action>`; `responses` more answers;
        `headers` request header parameters the handler reads."""
        security, who, denials = _security(method, rule)
        params = [*(p.schema() for p in query.params_of(method, rule)), *headers]
        # Any route refuses a bad or unknown query parameter with 422 (query.py).
        errors = {*errors, 422}
        answers: dict[str, Any] = {
            str(status): {"description": summary, "content": {media: {"schema": ok}}}
        }
        answers.update({str(code): answer for code, answer in (responses or {}).items()})
        # Anything but the liveness probe may meet degraded storage (docs/architecture.md §10).
        storage = {503} if rule != "/healthz" else set()
        for code in sorted({*errors, *denials, *storage}):
            answers[str(code)] = {"$ref": f"#/components/responses/{_ERRORS[code][0]}"}
        operation: dict[str, Any] = {
            "operationId": operation_id,
            "summary": summary,
            "description": f"{notes}\n\n{who}".strip(),
            "tags": [tag],
            "parameters": [*self._path_params(rule, actions), *params],
            **security,
            "responses": answers,
        }
        if body is not None:
            operation["requestBody"] = _body(body)
        if document is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {JSON: {"schema": ref(document)}},
            }
        if raw_body is not None:
            operation["requestBody"] = {"required": False, "content": {JSON: {"schema": raw_body}}}
        item = self.paths.setdefault(openapi_path(rule), {})
        if method.lower() in _OPENAPI_METHODS:
            item[method.lower()] = operation
        else:
            item.setdefault(X_METHODS, {})[method.upper()] = operation

    def _path_params(self, rule: str, actions: Sequence[str]) -> list[Schema]:
        found = []
        for name in re.findall(r"<(?:\w+:)?(\w+)>", rule):
            schema: Schema = {"type": "string", "minLength": 1}
            if name == "name" and self.workspaces:
                schema["examples"] = self.workspaces
            if name == "action":
                schema = enum(actions)
            description = _PATH_PARAMS[name]
            found.append(
                {
                    "name": name,
                    "in": "path",
                    "required": True,
                    "schema": schema,
                    "description": description,
                }
            )
        return found


def _security(method: str, rule: str) -> tuple[dict[str, Any], str, set[int]]:
    """The operation's `security` and `x-required-role`, a sentence saying who may call it,
    and the refusals (401, 403) the auth hook adds."""
    role = required_role(method, rule)
    if role is None and rule == "/healthz":
        return {"security": []}, "Open: no token needed.", set()
    if role is None:  # the handler checks the token and answers 401 / 403 itself
        return (
            {"security": [{"runTaskToken": []}]},
            "Takes the run task's access token, not an API token.",
            set(),
        )
    schemes: list[dict[str, list[str]]] = [{"bearerAuth": []}]
    if rule in auth.BACKEND_RULES:  # terraform's http backend sends basic auth
        schemes.insert(0, {"basicAuth": []})
    security: dict[str, Any] = {"security": schemes, "x-required-role": role}
    refusals = {401, 403} if _roles(role) != {"read"} else {401}  # no role is below `read`
    return security, _describe(role), refusals


def _roles(role: str | Mapping[str, str]) -> set[str]:
    return {role} if isinstance(role, str) else set(role.values())


def _describe(role: str | Mapping[str, str]) -> str:
    if isinstance(role, str):
        return f"Needs an API token with role `{role}` or higher."
    by = ", ".join(f"`{value}` needs `{need}`" for value, need in role.items())
    return f"The role depends on what is asked: {by}."


def _body(name: str) -> Schema:
    """A body json_object reads: the object, or it wrapped in `{"data": ...}`; none is `{}`,
    so the body may be left out unless the object has a required field."""
    wrapped = {
        "type": "object",
        "required": ["data"],
        "properties": {"data": ref(name)},
        "additionalProperties": False,
    }
    required = bool(SCHEMAS[name].get("required"))
    return {"required": required, "content": {JSON: {"schema": {"oneOf": [ref(name), wrapped]}}}}


def build(workspaces: Sequence[str] = ()) -> dict[str, Any]:
    """The document; `workspaces` are the configured names, shown as examples."""
    paths = Paths(workspaces)
    for section in (*SECTIONS, streams, backend):
        section(paths)
    schemas = copy.deepcopy(SCHEMAS)
    if workspaces:  # a release of every workspace, one per batch
        batches = schemas["CreateRelease"]["properties"]["batches"]
        batches["examples"] = [[[name] for name in workspaces]]
        batches["items"]["items"] = {"enum": list(workspaces)}
        # Each workspace in one batch at most: at most one batch contains it.
        batches["allOf"] = [
            {"contains": {"contains": {"const": name}}, "minContains": 0, "maxContains": 1}
            for name in workspaces
        ]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tfward",
            "version": __version__,
            "description": (
                'Every successful JSON answer is `{"data": ...}`, every error '
                '`{"error": {"status": N, "message": "..."}}`. Roles are ordered '
                "`read` < `plan` < `apply` < `admin`; each operation names the one it needs. "
                "Unknown query parameters, like unknown body fields, are refused with 422, as "
                "is a query parameter given twice, empty, or out of its range."
            ),
        },
        "security": [{"bearerAuth": []}],
        "paths": paths.paths,
        "components": {
            "schemas": schemas,
            "responses": {
                name: {"description": text, "content": {JSON: {"schema": ref("Error")}}}
                for name, text in _ERRORS.values()
            },
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token: an `[[api_token]]` of the config, or the "
                    "local admin token in `<data_dir>/admin.token` when the config names none.",
                },
                "basicAuth": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "Any username, an API token as the password (what "
                    "terraform's http backend sends). On `GET .../state`, a run's "
                    "remote-state credential as well (docs/protocols.md §8).",
                },
                "runTaskToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "The access token of one run task result, sent to the "
                    "task service with its request (docs/protocols.md).",
                },
            },
        },
    }


def register(app: QuartTrio, daemon: Daemon) -> None:
    @app.get("/api/v1/openapi.json")
    async def openapi() -> dict[str, Any]:
        """Built per request: a config reload may have changed the workspaces."""
        return build([ws.name for ws in daemon.config.workspaces])
