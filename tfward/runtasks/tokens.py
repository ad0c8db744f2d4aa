"""Run-task access tokens: per-result JWTs, and their encryption at rest (seeds C4, C5).

A token is an HS256 JWT bound to one result: claims `result_id`, `run_id`, `workspace_id`,
`stage`, plus `iat`, `nbf`, `exp` (now + min(task timeout, 24 h)) and a random `jti`. The
database keeps only its AES-256-GCM ciphertext (the result id is the associated data, so a
ciphertext copied to another row does not decrypt) and its `jti`; both go when the result is
final or its run ends, which is what makes a token single-use.
"""

from __future__ import annotations

import math
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .keys import Keys

ALGORITHM = "HS256"
MAX_LIFETIME = 24 * 3600.0
NONCE_BYTES = 12
CLAIMS = ("result_id", "run_id", "workspace_id", "stage", "iat", "nbf", "exp", "jti")


@dataclass(frozen=True, slots=True)
class Claims:
    result_id: str
    run_id: str
    workspace_id: str
    stage: str
    jti: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a presented token is not accepted (the API answers 401 with it)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Issued:
    token: str
    jti: str
    expires_at: datetime


class TokenService:
    """Issues, verifies, encrypts and decrypts access tokens with the daemon's derived keys."""

    def __init__(self, keys: Keys) -> None:
        self._jwt_key = keys.jwt
        self._aead = AESGCM(keys.encryption)

    def issue(
        self,
        *,
        result_id: str,
        run_id: str,
        workspace_id: str,
        stage: str,
        lifetime: float,
        when: datetime,
    ) -> Issued:
        issued_at = math.floor(when.timestamp())
        # Rounded up: the token lives at least `lifetime` seconds from `when`.
        expires = math.ceil(when.timestamp() + max(1.0, min(lifetime, MAX_LIFETIME)))
        jti = secrets.token_urlsafe(16)
        claims = {
            "result_id": result_id,
            "run_id": run_id,
            "workspace_id": workspace_id,
            "stage": stage,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": expires,
            "jti": jti,
        }
        token = jwt.encode(claims, self._jwt_key, algorithm=ALGORITHM)
        return Issued(token, jti, datetime.fromtimestamp(expires, UTC))

    def verify(self, token: str) -> Claims | Rejected:
        """The token's claims if its signature, algorithm, time window and claims hold."""
        try:
            found = jwt.decode(
                token,
                self._jwt_key,
                algorithms=[ALGORITHM],
                options={"require": list(CLAIMS)},
            )
        except jwt.ExpiredSignatureError:
            return Rejected("the token has expired")
        except jwt.ImmatureSignatureError:
            return Rejected("the token is not valid yet")
        except jwt.InvalidTokenError as exc:
            return Rejected(f"the token is not valid: {exc}")
        strings = ("result_id", "run_id", "workspace_id", "stage", "jti")
        if not all(isinstance(found[name], str) for name in strings):
            return Rejected("the token's claims are malformed")
        return Claims(
            result_id=found["result_id"],
            run_id=found["run_id"],
            workspace_id=found["workspace_id"],
            stage=found["stage"],
            jti=found["jti"],
            expires_at=datetime.fromtimestamp(found["exp"], UTC),
        )

    def encrypt(self, token: str, result_id: str) -> bytes:
        """nonce || AES-256-GCM(token), bound to `result_id` as associated data."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, token.encode(), result_id.encode())

    def decrypt(self, blob: bytes, result_id: str) -> str | None:
        """The token, or None when the ciphertext was not made by us for this result."""
        try:
            plain = self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], result_id.encode())
        except (InvalidTag, ValueError):
            return None
        return plain.decode()


def lifetime_for(task_timeout: float) -> float:
    """exp = now + min(task timeout, 24 h)."""
    return min(task_timeout, MAX_LIFETIME)
