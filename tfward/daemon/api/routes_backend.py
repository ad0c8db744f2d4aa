"""Terraform's `http` backend, served on a workspace's state (docs/protocols.md §8).

    GET    <state>              the current state, exactly as stored; 204 when there is none
    POST   <state>[?ID=]        a new state version (PUT too: `update_method`)
    LOCK   <state>              take the workspace lock with terraform's lock info
    UNLOCK <state>              release it, naming its lock ID
    <state>/lock                the same lock with `lock_method` POST or PUT, `unlock_method`
                                DELETE (or LOCK / UNLOCK)

`<state>` is `/api/v1/workspaces/<name>/state`. The lock is the workspace lock (a user lock
named by the token, carrying terraform's lock ID and info), so runs wait for it like for any
user lock and `force-unlock` releases it; a lock terraform cannot take answers 423 with the
holder's lock info, which terraform prints. A posted state is kept through the same code as a
run's (actors/statekeeper.py: backup file, then serial and lineage checked), as kind
`http-backend` with `created_by` the token's name; while the workspace is locked only the
holder's lock ID may write. Refusals are checked before anything is written, so a refused
state leaves no state version and no backup file. A state served to a run's credential makes
that run mask the state's sensitive outputs (terraform 1.0 does not mark them sensitive in the
reader's plan).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import TYPE_CHECKING, Any

from quart import Response, g, request
from quart_trio import QuartTrio
from sqlalchemy import Connection
from werkzeug.exceptions import BadRequest as HTTPBadRequest

from tfward.actors import statekeeper
from tfward.actors.remote_state import TOKEN_PREFIX
from tfward.actors.workspace import LockChanged
from tfward.config.tokens import token_sha256
from tfward.errors import AccessDenied, StateRejected, WorkspaceLocked
from tfward.ids import rfc3339
from tfward.runs import masking
from tfward.store import credentials, states
from tfward.store import workspaces as ws_store
from tfward.store.workspaces import Lock, LockInfo

from . import auth, query
from .views import secret_mask, state_version_view

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon

JSON = "application/json"
# Terraform's lock info fields are shown, not trusted: longer values are cut to these lengths.
_FIELD_LIMITS = {"Operation": 64, "Who": 256, "Info": 2048}
_MAX_LOCK_ID = 128


def register(app: QuartTrio, daemon: Daemon) -> None:
    store = daemon.store

    @app.route(auth.STATE, methods=["GET"])
    async def get_state(name: str) -> Response:
        _may_read(daemon, g.principal, name)
        daemon.rt.workspace(name)  # 404 unless configured
        raw = await store.read(lambda c: states.current_raw(c, ws_store.workspace_id(c, name)))
        if raw is None:
            return Response(b"", status=204)  # terraform: an empty workspace
        _learn_secrets(daemon, g.principal, name, raw)
        return Response(raw, content_type=JSON)

    @app.route(auth.STATE, methods=["POST", "PUT"])
    async def post_state(name: str) -> tuple[dict[str, Any], int]:
        daemon.rt.workspace(name)
        mask = secret_mask(daemon.config, name)
        parsed = _posted_state(await _body(), mask)
        lock_id = query.args()["ID"]
        user = auth.caller()

        def check(conn: Connection) -> tuple[str, states.StateVersion | None]:
            ws_id = ws_store.workspace_id(conn, name)
            ws_store.check_writer(conn, ws_id, lock_id)
            return ws_id, states.check(conn, ws_id, parsed)

        ws_id, same = await store.read(check)
        if same is not None:
            return {"data": state_version_view(same, mask)}, 200
        version = await statekeeper.keep(
            daemon.rt,
            name,
            ws_id,
            parsed,
            kind=states.StateKind.HTTP_BACKEND,
            created_by=user,
            guard=lambda c: ws_store.check_writer(c, ws_id, lock_id),
        )
        if version is None:  # the same state arrived in between
            version = await store.read(lambda c: states.current(c, ws_id))
        assert version is not None
        return {"data": state_version_view(version, mask)}, 200

    @app.route(auth.STATE, methods=["LOCK"], endpoint="lock_state")
    @app.route(auth.STATE_LOCK, methods=["LOCK", "POST", "PUT"], endpoint="lock_state_at")
    async def lock_state(name: str) -> Response:
        daemon.rt.workspace(name)
        info = _lock_info(await _body())
        user = auth.caller()

        def tx(conn: Connection) -> tuple[Lock, bool]:
            ws_id = ws_store.workspace_id(conn, name)
            try:
                lock = ws_store.acquire_lock(conn, ws_id, run_id=None, by=user, terraform=info)
            except WorkspaceLocked:
                held = ws_store.get_lock(conn, ws_id)
                assert held is not None
                return held, False
            return lock, True

        lock, taken = await store.write(tx)
        if not taken:
            return Response(json.dumps(lock_info_document(lock)), status=423, content_type=JSON)
        daemon.supervisor.tell(name, LockChanged(True))  # queued runs wait for it
        return Response(json.dumps(lock_info_document(lock)), content_type=JSON)

    @app.route(auth.STATE, methods=["UNLOCK"], endpoint="unlock_state")
    @app.route(auth.STATE_LOCK, methods=["UNLOCK", "DELETE"], endpoint="unlock_state_at")
    async def unlock_state(name: str) -> Response:
        daemon.rt.workspace(name)
        lock_id = _unlock_id(await _body())

        def tx(conn: Connection) -> Lock | None:
            ws_id = ws_store.workspace_id(conn, name)
            held = ws_store.get_lock(conn, ws_id)
            if held is not None:
                _may_unlock(held, lock_id)
                ws_store.release_lock(conn, ws_id, lock_id=lock_id)
            return held

        if await store.write(tx) is not None:
            daemon.supervisor.tell(name, LockChanged(False))
        return Response(b"", status=200, content_type="text/plain")


def lock_info_document(lock: Lock) -> dict[str, str]:
    """The holder as terraform's lock info JSON (terraform 1.0 prints its `ID`). A lock taken
    without terraform (a run's, or `tfward lock`) is named by the run id or `user:<name>`."""
    terraform = lock.terraform
    if terraform is not None:
        lock_id, operation, who, info = (
            terraform.id,
            terraform.operation,
            terraform.who,
            terraform.info,
        )
    else:
        lock_id = lock.run_id or f"user:{lock.locked_by}"
        operation = "tfward run" if lock.run_id else "tfward lock"
        who, info = lock.locked_by, lock.describe() + (f" ({lock.reason})" if lock.reason else "")
    return {
        "ID": lock_id,
        "Operation": operation,
        "Info": info,
        "Who": who,
        "Version": "",
        "Created": rfc3339(lock.locked_at) or "",
        "Path": "",
    }


def make_credential_lookup(daemon: Daemon) -> auth.CredentialLookup:
    """How auth.py finds a run's remote-state credential: live (not revoked, run not
    finished), and reading only what its workspace grants now (`remote_state_from`, which a
    reload may have narrowed since the credential was issued)."""

    async def lookup(token: str) -> auth.Principal | None:
        """One read (abandoned if the request is cancelled; a database error propagates)."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        digest = token_sha256(token)
        found = await daemon.store.read(lambda c: credentials.find(c, digest))
        if found is None:
            return None
        try:
            granted = set(daemon.config.workspace(found.workspace).remote_state_from)
        except KeyError:
            granted = set()
        return auth.Principal(
            f"run {found.run_id} of workspace {found.workspace}",
            "read",
            reads=frozenset(found.scope & granted),
            run_id=found.run_id,
        )

    return lookup


def _may_read(daemon: Daemon, principal: auth.Principal, name: str) -> None:
    """A run's credential reads only the workspaces it is scoped to: anything else is 403,
    said in the run's own log too, so its failure names the reason."""
    if principal.reads is None or name in principal.reads:
        return
    granted = ", ".join(sorted(principal.reads)) or "none"
    message = (
        f"{principal.name} may not read the state of workspace {name!r}: it is not in "
        f"remote_state_from (granted: {granted})"
    )
    live = daemon.rt.live_logs.get(principal.run_id or "")
    if live is not None:
        live.note(f"Error: {message}")
    raise AccessDenied(403, message)


async def _body() -> bytes:
    return await request.get_data(cache=True, as_text=False, parse_form_data=False)


def _learn_secrets(daemon: Daemon, principal: auth.Principal, name: str, raw: bytes) -> None:
    """A run reading workspace `name`'s state learns that state's sensitive outputs (terraform
    1.0 hands them to `terraform_remote_state` unmarked) and `name`'s own secret values (which
    its other outputs may echo): the run's log, and so its plan JSON, mask them. Done before
    the answer is sent, so before terraform can print any of them."""
    live = daemon.rt.live_logs.get(principal.run_id or "")
    if live is not None:
        live.add_secrets(masking.state_secrets(raw))
        live.add_secrets(daemon.rt.workspace(name).sensitive_values())


def _posted_state(raw: bytes, mask: masking.SecretMask) -> states.ParsedState:
    """The body of a POST: terraform's state JSON, checked against its Content-MD5 (when
    sent), its shown outputs masked with the workspace's secrets. 400 for anything else."""
    sent = request.headers.get("Content-MD5")
    if sent is not None:
        digest = base64.b64encode(hashlib.md5(raw, usedforsecurity=False).digest()).decode()
        if sent.strip() != digest:
            raise HTTPBadRequest(f"Content-MD5 {sent} does not match the body ({digest})")
    try:
        return states.parse_state(raw, mask)
    except StateRejected as exc:
        raise HTTPBadRequest(str(exc)) from None


def _lock_info(raw: bytes) -> LockInfo:
    """Terraform's lock info from a LOCK body; 400 unless it is an object with an `ID`."""
    doc = _json_object(raw, "LOCK")
    lock_id = doc.get("ID")
    if not isinstance(lock_id, str) or not lock_id.strip() or len(lock_id) > _MAX_LOCK_ID:
        raise HTTPBadRequest(
            f'the LOCK body needs "ID": a non-empty string of at most {_MAX_LOCK_ID} characters'
        )
    fields = {key: doc.get(key) for key in _FIELD_LIMITS}
    for key, value in fields.items():
        if value is not None and not isinstance(value, str):
            raise HTTPBadRequest(f'the LOCK body\'s "{key}" must be a string')
    cut = {key: (fields[key] or "")[:limit] for key, limit in _FIELD_LIMITS.items()}
    return LockInfo(lock_id, cut["Operation"], cut["Who"], cut["Info"])


def _unlock_id(raw: bytes) -> str | None:
    """The lock ID an UNLOCK names; None for an empty body (terraform 1.0's force-unlock)."""
    if not raw.strip():
        return None
    lock_id = _json_object(raw, "UNLOCK").get("ID")
    if not isinstance(lock_id, str) or not lock_id:
        raise HTTPBadRequest('the UNLOCK body needs "ID", the lock ID to release')
    return lock_id


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise HTTPBadRequest(f"the {what} body is not terraform's lock info JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise HTTPBadRequest(f"the {what} body must be a JSON object (terraform's lock info)")
    return doc


def _may_unlock(held: Lock, lock_id: str | None) -> None:
    """Only the holder's lock ID releases a lock here (WorkspaceLocked: 409 otherwise)."""
    if held.held_by_id(lock_id):
        return
    if lock_id is None:
        reason = (
            "this unlock names no lock ID (terraform 1.0's force-unlock sends none); an admin "
            "can release it with `tfward unlock --force` or the force-unlock action"
        )
    else:
        reason = f"lock ID {lock_id} is not its lock ID; only its holder can unlock it"
    raise WorkspaceLocked(f"{held.describe()}; {reason}")
