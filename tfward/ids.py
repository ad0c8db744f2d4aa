"""Identifiers and the clock: every id is a type prefix plus random base32, every time aware UTC."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime


def new_id(prefix: str) -> str:
    """`run-` + 16 random base32 characters (80 bits): unguessable and URL-safe."""
    raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()
    return f"{prefix}-{raw}"


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")
