"""Who may call the API, and with which role (docs/architecture.md §9).

Every request names its caller with `Authorization: Bearer <token>`, or with HTTP basic auth
whose password is the token (any username: what terraform's `http` backend sends). The daemon
knows tokens only by their SHA-256: the `[[api_token]]` entries of the config, or, when the
config has none, the local admin token it creates at first start in `<data_dir>/admin.token`
(mode 0600) for the CLI on the same host. On `GET .../state` alone a run's remote-state
credential (actors/remote_state.py) is accepted too, as a caller that may read the state of
the workspaces it is scoped to and nothing else. A missing or unknown token is refused with
401, a role weaker than the endpoint needs with 403 — both before the handler reads the body.

Roles are ordered `read` < `plan` < `apply` < `admin`, each allowed what the ones before it
are. What each endpoint needs is decided here, in one table, so it can be reviewed at once:
reads need `read`; speculative runs `plan`; runs that apply, confirm, discard, cancel and
locks and the http backend's writes (POST, LOCK, UNLOCK) `apply`; force-unlock,
force-cancel, state rollback and raw state download (the state holds secrets in plain text, as
terraform writes it), outbox retry, releases and reading the audit trail of those `admin`.
Endpoints that no entry names need `admin`, so a route added without a thought is closed.
The health check and the run-task endpoints (which carry a run-task access token of their own,
runtasks/callbacks.py) are open.

The caller's name is what the daemon records as `created_by`, `confirmed_by` and `locked_by`.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from quart import g, request

from tfward.config import API_ROLES, Config
from tfward.config.tokens import token_sha256
from tfward.errors import AccessDenied, ConfigError
from tfward.files import create_private

log = logging.getLogger(__name__)

ADMIN_TOKEN_FILE = "admin.token"
LOCAL_ADMIN = "admin"  # the name recorded for what the local admin token does
_RANK = {role: rank for rank, role in enumerate(API_ROLES)}

# Terraform's http backend (routes_backend.py): the state, and the alternative lock address.
STATE = "/api/v1/workspaces/<name>/state"
STATE_LOCK = f"{STATE}/lock"
BACKEND_RULES = frozenset({STATE, STATE_LOCK})

# (method, rule) -> role, or for `.../actions/<action>` rules a mapping from action to role.
_CALLBACK = "/api/v1/run-task-results/<result_id>/callback"
PUBLIC = frozenset(
    {
        ("GET", "/healthz"),
        ("PATCH", _CALLBACK),
        ("POST", _CALLBACK),
        ("GET", "/api/v1/run-task-results/<result_id>/plan-json"),
        ("GET", "/api/v1/run-task-results/<result_id>/resource-changes"),
        ("GET", "/api/v1/configuration-versions/<cv_id>/download"),
    }
)
ROLES: Mapping[tuple[str, str], str | Mapping[str, str]] = {
    ("GET", "/api/v1/state-versions/<sv_id>/download"): "admin",
    # `apply` for an operation that changes infrastructure: the handler asks (require_role).
    ("POST", "/api/v1/workspaces/<name>/runs"): "plan",
    ("POST", "/api/v1/runs/<run_id>/actions/<action>"): {
        "confirm": "apply",
        "discard": "apply",
        "cancel": "apply",
        "force-cancel": "admin",
    },
    ("POST", "/api/v1/workspaces/<name>/actions/<action>"): {
        "lock": "apply",
        "unlock": "apply",
        "force-unlock": "admin",
    },
    ("POST", "/api/v1/workspaces/<name>/state-versions/<sv_id>/rollback"): "admin",
    ("POST", "/api/v1/outbox/<row_id>/actions/<action>"): "admin",
    ("POST", "/api/v1/releases"): "admin",
    ("POST", "/api/v1/releases/<release_id>/actions/<action>"): "admin",
    # What admins did (who force-unlocked, rolled back, downloaded a raw state).
    ("GET", "/api/v1/audit"): "admin",
    # The http backend: `read` may GET the state, `apply` write it and lock it.
    ("GET", STATE): "read",
    **{(method, STATE): "apply" for method in ("POST", "PUT", "LOCK", "UNLOCK")},
    **{(m, STATE_LOCK): "apply" for m in ("LOCK", "UNLOCK", "POST", "PUT", "DELETE")},
}


# What creating a run of each operation needs: the route takes `plan`; the handler asks for
# more when the run may change infrastructure (routes_runs.start_run).
OPERATION_ROLES: Mapping[str, str] = {"plan": "plan", "plan_and_apply": "apply", "destroy": "apply"}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. A run's remote-state credential is one with `run_id` set and
    `reads` the workspaces whose state it may GET (API tokens: None, any)."""

    name: str
    role: str
    reads: frozenset[str] | None = None
    run_id: str | None = None

    def may(self, role: str) -> bool:
        return _RANK[self.role] >= _RANK[role]


# Finds a run's remote-state credential by its token (routes_backend.py): None if unknown.
CredentialLookup = Callable[[str], Awaitable[Principal | None]]


class TokenBook:
    """The tokens accepted now, by SHA-256. Rebuilt on a config reload."""

    def __init__(self, by_digest: Mapping[str, Principal]) -> None:
        self._by_digest = dict(by_digest)

    @classmethod
    def build(cls, config: Config, local_admin: str | None) -> TokenBook:
        if config.api_tokens:
            return cls({t.sha256: Principal(t.name, t.role) for t in config.api_tokens})
        if local_admin is None:
            return cls({})
        return cls({token_sha256(local_admin): Principal(LOCAL_ADMIN, "admin")})

    def lookup(self, token: str) -> Principal | None:
        # Keyed by the digest, so lookup timing says nothing usable about the token itself.
        return self._by_digest.get(token_sha256(token))

    def by_digest(self, digest: str) -> Principal | None:
        """The caller of the token whose SHA-256 is `digest` (a web session keeps only that)."""
        return self._by_digest.get(digest)

    def accepted(self) -> frozenset[tuple[str, str]]:
        """(SHA-256, role) of every token accepted now: a web session of any other ends."""
        return frozenset((digest, p.role) for digest, p in self._by_digest.items())


def local_admin_token(config: Config) -> str | None:
    """The local admin token when the config names no `[[api_token]]`: read from
    `<data_dir>/admin.token`, created (0600) on first use. None when tokens are configured.
    Synchronous: call it in a worker thread."""
    path = config.daemon.data_dir / ADMIN_TOKEN_FILE
    if config.api_tokens:
        if path.exists():
            log.warning(
                "%s is not accepted: the config names [[api_token]] entries, and they alone "
                "admit callers",
                path,
            )
        return None
    if create_private(path, ("tfw_" + secrets.token_urlsafe(32) + "\n").encode()):
        log.warning("created the local admin API token %s (mode 0600) for the CLI", path)
    return _read_token(path)


def _read_token(path: Path) -> str:
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ConfigError(
            path,
            "",
            "the admin token file is empty: remove it, and the next start creates a new one",
        )
    return token


def required_role(method: str, rule: str | None, view_args: Mapping[str, str]) -> str | None:
    """The role a request needs; None for the open endpoints."""
    method = "GET" if method == "HEAD" else method
    if (method, rule) in PUBLIC:
        return None
    if rule is None:
        return "read"  # no such route: any caller may learn that (404), no one else
    need = ROLES.get((method, rule))
    if need is None:
        return "read" if method in ("GET", "OPTIONS") else "admin"
    if isinstance(need, str):
        return need
    # An unknown action is the handler's 404, for any caller.
    return need.get(view_args.get("action", ""), "read")


async def authenticate(book: TokenBook, run_credential: CredentialLookup) -> None:
    """Check the current request (a Quart `before_request` hook); raises AccessDenied. A run's
    remote-state credential is looked up (one database read) only for `GET .../state`; a
    request cancelled meanwhile abandons that read, a database error is the API's 500."""
    rule = request.url_rule.rule if request.url_rule is not None else None
    need = required_role(request.method, rule, request.view_args or {})
    if need is None:
        return
    token = presented_token(request.headers.get("Authorization", ""))
    principal = book.lookup(token)
    if principal is None and request.method in ("GET", "HEAD") and rule == STATE:
        principal = await run_credential(token)
    if principal is None:
        raise AccessDenied(401, "unknown API token")
    g.principal = principal
    require_role(need)


def presented_token(header: str) -> str:
    """The token of an `Authorization` header: `Bearer <token>`, or basic auth whose password
    is the token. AccessDenied(401) for anything else."""
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise AccessDenied(401, "malformed basic auth credentials") from None
        password = decoded.partition(":")[2]
        if password:
            return password
    raise AccessDenied(
        401,
        "an API token is required: send Authorization: Bearer <token>, or basic auth with "
        "the token as the password",
    )


def require_role(role: str) -> Principal:
    """The caller, if its role is at least `role`; AccessDenied(403) otherwise."""
    principal: Principal = g.principal
    if not principal.may(role):
        raise AccessDenied(
            403,
            f"token {principal.name!r} has role {principal.role}; "
            f"{request.method} {request.path} needs {role}",
        )
    return principal


def require_as(method: str, rule: str, **view_args: str) -> Principal:
    """The caller, if its role may do what the API route `method rule` (with `view_args`, such
    as the `action`) does; AccessDenied(403) otherwise. The web page's forms ask this, so a
    page action needs exactly the role its API twin needs (one table: `ROLES`)."""
    return require_role(required_role(method, rule, view_args) or "read")


def caller() -> str:
    """The name of the authenticated caller, for `created_by` and the like."""
    principal: Principal = g.principal
    return principal.name
