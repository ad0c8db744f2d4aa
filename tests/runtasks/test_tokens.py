"""Access tokens: HS256 JWTs bound to one result, and their AES-256-GCM encryption at rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest

from tfward.ids import now
from tfward.runtasks.keys import keys_from_secret
from tfward.runtasks.tokens import MAX_LIFETIME, Claims, Rejected, TokenService

KEYS = keys_from_secret(b"s" * 32)
CLAIMS = {"result_id": "taskrs-1", "run_id": "run-1", "workspace_id": "ws-1", "stage": "post_plan"}


def _issue(service: TokenService, lifetime: float = 600, when: datetime | None = None) -> str:
    return service.issue(**CLAIMS, lifetime=lifetime, when=when or now()).token


def test_a_token_carries_its_result_run_workspace_and_stage() -> None:
    service = TokenService(KEYS)
    issued = service.issue(**CLAIMS, lifetime=600, when=now())
    claims = service.verify(issued.token)
    assert isinstance(claims, Claims)
    assert (claims.result_id, claims.run_id, claims.workspace_id, claims.stage) == tuple(
        CLAIMS.values()
    )
    assert claims.jti == issued.jti and claims.expires_at == issued.expires_at
    raw = jwt.decode(issued.token, options={"verify_signature": False})
    assert set(raw) == {*CLAIMS, "iat", "nbf", "exp", "jti"}
    assert jwt.get_unverified_header(issued.token)["alg"] == "HS256"
    assert 600 <= raw["exp"] - raw["iat"] <= 601


def test_a_token_lives_at_most_a_day_whatever_the_task_timeout() -> None:
    raw = jwt.decode(
        _issue(TokenService(KEYS), lifetime=3 * 86400), options={"verify_signature": False}
    )
    assert raw["exp"] - raw["iat"] <= MAX_LIFETIME + 1


def test_every_token_gets_its_own_jti() -> None:
    service = TokenService(KEYS)
    first, second = (service.issue(**CLAIMS, lifetime=60, when=now()) for _ in range(2))
    assert first.jti != second.jti and first.token != second.token


@pytest.mark.parametrize(
    ("what", "token", "reason"),
    [
        ("signed with another key", _issue(TokenService(keys_from_secret(b"x" * 32))), "not valid"),
        ("expired", _issue(TokenService(KEYS), 60, now() - timedelta(hours=1)), "expired"),
        (
            "not valid yet",
            _issue(TokenService(KEYS), 60, now() + timedelta(hours=1)),
            "not valid yet",
        ),
        (
            "unsigned (alg none)",
            jwt.encode(
                {**CLAIMS, "jti": "j", "iat": 1, "nbf": 1, "exp": 4e9},
                None,  # type: ignore[arg-type]  # an unsigned token, on purpose
                algorithm="none",
            ),
            "not valid",
        ),
        (
            "missing a claim",
            jwt.encode({"result_id": "taskrs-1", "exp": 4e9}, KEYS.jwt, algorithm="HS256"),
            "not valid",
        ),
        ("not a JWT", "garbage", "not valid"),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v else "",
)
def test_a_token_that_is_not_ours_or_not_current_is_rejected_with_a_reason(
    what: str, token: str, reason: str
) -> None:
    verdict = TokenService(KEYS).verify(token)
    assert isinstance(verdict, Rejected) and reason in verdict.reason, verdict


def test_a_token_whose_payload_was_edited_is_rejected() -> None:
    header, payload, signature = _issue(TokenService(KEYS)).split(".")
    forged = jwt.encode({**CLAIMS, "result_id": "taskrs-2"}, "k" * 32, algorithm="HS256")
    assert isinstance(
        TokenService(KEYS).verify(f"{header}.{forged.split('.')[1]}.{signature}"), Rejected
    )


def test_encryption_round_trips_and_hides_the_token() -> None:
    service = TokenService(KEYS)
    token = _issue(service)
    first, second = service.encrypt(token, "taskrs-1"), service.encrypt(token, "taskrs-1")
    assert token.encode() not in first and first != second  # a fresh nonce every time
    assert service.decrypt(first, "taskrs-1") == token


@pytest.mark.parametrize(
    "change", ["another result", "flipped byte", "another key"], ids=lambda c: c.replace(" ", "-")
)
def test_a_ciphertext_only_decrypts_for_its_own_result_and_key(change: str) -> None:
    service = TokenService(KEYS)
    blob = service.encrypt(_issue(service), "taskrs-1")
    if change == "another result":
        assert service.decrypt(blob, "taskrs-2") is None
    elif change == "flipped byte":
        assert service.decrypt(blob[:-1] + bytes([blob[-1] ^ 1]), "taskrs-1") is None
    else:
        assert TokenService(keys_from_secret(b"o" * 32)).decrypt(blob, "taskrs-1") is None


def test_expiry_is_an_aware_utc_time() -> None:
    issued = TokenService(KEYS).issue(**CLAIMS, lifetime=60, when=now())
    assert issued.expires_at.tzinfo is UTC
