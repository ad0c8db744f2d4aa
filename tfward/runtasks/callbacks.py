"""What a task service sends back: token checks, callback bodies, and recording them (C4).

Answers, in the order they are decided (docs/protocols.md):
    404  the result id is unknown
    401  no Bearer token, a bad signature, an expired token, a token already used or revoked
    403  a valid token, but for another result
    409  a callback for a result that is already final
    422  a malformed body, an unknown status, an outcome body over 1 MB
Each check runs inside the transaction that records the callback, so a callback and the
waiter's timeout cannot both make a result final.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from tfward import wirejson
from tfward.errors import AccessDenied, BadRequest, InvalidTransition, NotFound
from tfward.store import runs as run_store
from tfward.store import tasks
from tfward.store.tasks import TaskResult

from .tokens import Rejected, TokenService

MAX_OUTCOME_BODY = 1024 * 1024
CALLBACK_STATUSES = (tasks.RUNNING, tasks.PASSED, tasks.FAILED)
_OUTCOME_STRINGS = ("outcome-id", "description", "body", "url")


@dataclass(frozen=True, slots=True)
class CallbackUpdate:
    status: str
    message: str | None
    url: str | None
    outcomes: list[dict[str, Any]] | None  # None: the callback sent none


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def authorize(
    conn: Connection,
    tokens: TokenService,
    result_id: str,
    token: str | None,
    *,
    callback: bool = False,
) -> TaskResult:
    """The result, if `token` may act on it. With `callback`, a valid token of a result that is
    already final gets 409 rather than 401 (the service is told why)."""
    result = tasks.get(conn, result_id)  # NotFound: 404
    if token is None:
        raise AccessDenied(401, "a Bearer access token is required")
    claims = tokens.verify(token)
    if isinstance(claims, Rejected):
        raise AccessDenied(401, claims.reason)
    if claims.result_id != result_id:
        raise AccessDenied(403, "the access token was issued for another run task result")
    if claims.jti != result.token_jti:
        raise AccessDenied(401, "the access token is not the current token of this result")
    if callback and result.is_final:
        raise InvalidTransition(f"run task result {result_id} is already {result.status}")
    stored = tasks.token_ciphertext(conn, result_id)
    plain = tokens.decrypt(stored, result_id) if stored is not None else None
    if result.token_revoked_at is not None or plain is None:
        raise AccessDenied(401, "the access token was already used or has been revoked")
    if not hmac.compare_digest(plain.encode(), token.encode()):
        raise AccessDenied(401, "the access token does not match this result")
    return result


def authorize_configuration(
    conn: Connection, tokens: TokenService, cv_id: str, token: str | None
) -> None:
    """`token` may download configuration version `cv_id`: it is the current token of a result
    of a run made from that configuration."""
    if token is None:
        raise AccessDenied(401, "a Bearer access token is required")
    claims = tokens.verify(token)
    if isinstance(claims, Rejected):
        raise AccessDenied(401, claims.reason)
    try:
        result = authorize(conn, tokens, claims.result_id, token)
    except NotFound:
        raise AccessDenied(401, "the access token's result no longer exists") from None
    if run_store.get_run(conn, result.run_id).configuration_version_id != cv_id:
        raise AccessDenied(403, "the access token was issued for a run of another configuration")


def record_callback(
    conn: Connection,
    tokens: TokenService,
    result_id: str,
    token: str | None,
    update: CallbackUpdate | BadRequest,
    when: datetime,
) -> TaskResult:
    """Check the token, then store the callback (a final status revokes the token). A body
    that did not parse is reported (422) only to a caller whose token is good."""
    authorize(conn, tokens, result_id, token, callback=True)
    if isinstance(update, BadRequest):
        raise update
    if update.status == tasks.RUNNING:
        changed = tasks.progress(
            conn,
            result_id,
            when,
            message=update.message,
            url=update.url,
            outcomes=update.outcomes,
        )
    else:
        changed = tasks.finish(
            conn,
            result_id,
            update.status,
            when,
            message=update.message,
            url=update.url,
            outcomes=update.outcomes,
        )
    if not changed:
        raise InvalidTransition(f"run task result {result_id} is already final")
    return tasks.get(conn, result_id)


def parse_callback(raw: bytes) -> CallbackUpdate:
    """A JSON:API task-results body -> the update; BadRequest (422) naming what is wrong."""
    try:
        doc = wirejson.loads(raw)
    except wirejson.JsonRefused as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict):
        raise BadRequest('expected a JSON:API document: {"data": {"type": "task-results", ...}}')
    if data.get("type", "task-results") != "task-results":
        raise BadRequest(f'data.type: expected "task-results", got {data.get("type")!r}')
    attributes = data.get("attributes")
    if not isinstance(attributes, dict):
        raise BadRequest("data.attributes: expected an object with a status")
    status = attributes.get("status")
    if status not in CALLBACK_STATUSES:
        raise BadRequest(
            f"data.attributes.status: expected one of {', '.join(CALLBACK_STATUSES)}, "
            f"got {status!r}"
        )
    return CallbackUpdate(
        status=status,
        message=_optional_string(attributes, "message", "data.attributes"),
        url=_optional_string(attributes, "url", "data.attributes"),
        outcomes=_outcomes(data, attributes),
    )


def _optional_string(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{where}.{key}: expected a string, got {type(value).__name__}")
    return value


def _outcomes(data: dict[str, Any], attributes: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Outcomes from `relationships.outcomes.data`, or from `attributes.outcomes` (a list, or
    an object with `data`)."""
    relationships = data.get("relationships")
    found: Any = None
    where = ""
    if isinstance(relationships, dict) and "outcomes" in relationships:
        found, where = relationships["outcomes"], "data.relationships.outcomes"
    elif "outcomes" in attributes:
        found, where = attributes["outcomes"], "data.attributes.outcomes"
    else:
        return None
    if isinstance(found, dict):
        found, where = found.get("data"), f"{where}.data"
    if found is None:
        return []
    if not isinstance(found, list):
        raise BadRequest(f"{where}: expected a list of task-result-outcomes")
    return [_outcome(item, f"{where}[{i}]") for i, item in enumerate(found)]


def _outcome(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise BadRequest(f"{where}: expected an object")
    attributes = item.get("attributes", item)
    if not isinstance(attributes, dict):
        raise BadRequest(f"{where}.attributes: expected an object")
    out: dict[str, Any] = {}
    for key in _OUTCOME_STRINGS:
        out[key] = _optional_string(attributes, key, f"{where}.attributes")
    body = out["body"]
    if body is not None and len(body.encode()) > MAX_OUTCOME_BODY:
        raise BadRequest(f"{where}.attributes.body: over the 1 MB limit for an outcome body")
    tags = attributes.get("tags")
    if tags is not None and not isinstance(tags, dict):
        raise BadRequest(f"{where}.attributes.tags: expected an object")
    out["tags"] = tags or {}
    return out
