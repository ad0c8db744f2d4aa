"""The `[[api_token]]` tables: who may call the API, with which role (docs/architecture.md §9).

Each entry holds a name (recorded on what the caller does: `created_by`, `confirmed_by`,
`locked_by`), a role and the hex SHA-256 of the token's UTF-8 bytes. The token itself never
belongs in the file: a `token` key is refused with a pointer to `tfward token create`, which
prints both the token and the entry.
"""

from __future__ import annotations

import functools
import hashlib
import re

from tfward.config.model import API_ROLES, ApiTokenConfig
from tfward.config.reading import Table, expected, quote, required

TOP_KEY = "api_token"
KEYS = frozenset({"name", "role", "sha256", "token"})  # `token` only to refuse it helpfully
TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def token_sha256(token: str) -> str:
    """What `sha256` holds for `token`."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_api_tokens(root: Table) -> tuple[ApiTokenConfig, ...]:
    """The `[[api_token]]` entries; each problem is noted on the context (config/reading.py)
    and its entry left out."""
    what_list = f"an array of tables ([[{TOP_KEY}]])"
    items = root.ctx.attempt(lambda: root.get(TOP_KEY, list, what_list), None) or []
    tokens: list[ApiTokenConfig] = []
    names: dict[str, int] = {}
    digests: dict[str, int] = {}
    for index, item in enumerate(items):
        path = f"{TOP_KEY}[{index}]"
        if not isinstance(item, dict):
            root.ctx.note(root.ctx.error(path, expected("a table", item)))
            continue
        table = Table(root.ctx, item, path, KEYS)
        token = root.ctx.attempt(functools.partial(_token, table), None)
        if token is None:
            continue
        for seen, value, key in ((names, token.name, "name"), (digests, token.sha256, "sha256")):
            if value in seen:
                what = quote(value) if key == "name" else "token"
                message = f"duplicate {what}, also used by {TOP_KEY}[{seen[value]}]"
                root.ctx.note(root.ctx.error(f"{path}.{key}", message))
            seen[value] = index
        tokens.append(token)
    return tuple(tokens)


def _token(t: Table) -> ApiTokenConfig:
    if "token" in t.data:
        raise t.fail(
            "token",
            "never put a token itself in the config: configure its sha256 instead "
            "(`tfward token create --name N --role R` prints the entry to paste)",
        )
    name = required(t, t.string("name"), "name")
    if not TOKEN_NAME.fullmatch(name):
        raise t.fail(
            "name", f"expected 1-64 of letters, digits and . _ @ - (e.g. ci), got {quote(name)}"
        )
    role = required(t, t.string("role"), "role")
    if role not in API_ROLES:
        raise t.fail("role", f"expected one of {', '.join(API_ROLES)}, got {quote(role)}")
    digest = required(t, t.string("sha256"), "sha256")
    if not _SHA256.fullmatch(digest):
        raise t.fail(
            "sha256",
            "expected the 64 hex digits of the token's SHA-256 (`tfward token create` prints "
            "it), got a string of length " + str(len(digest)),
        )
    return ApiTokenConfig(name=name, role=role, sha256=digest.lower())
