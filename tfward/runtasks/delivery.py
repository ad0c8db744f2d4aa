"""Delivery of a run-task request: signed JSON over HTTP, retried with backoff (docs/protocols.md).

The body is encoded once; the `X-TFC-Task-Signature` header is the lowercase hex HMAC-SHA512
of exactly those bytes, keyed with the task's `hmac_key` (empty when the task has none). Only a
200 counts as delivered; anything else, or no answer within the connect/read timeouts, is
retried `retries` times with exponential backoff, and then reported as a failure with the
reason (the result becomes `webhook_error`, seed O4).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from tfward import __version__
from tfward.config import RunTaskConfig

USER_AGENT = f"tfward/{__version__}"
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
SIGNATURE_HEADER = "X-TFC-Task-Signature"


@dataclass(frozen=True, slots=True)
class Delivery:
    delivered: bool
    attempts: int
    reason: str | None = None


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def sign(body: bytes, hmac_key: str) -> str:
    """Lowercase hex HMAC-SHA512 of `body`; the empty string when there is no key."""
    if not hmac_key:
        return ""
    return hmac.new(hmac_key.encode(), body, hashlib.sha512).hexdigest()


def timeouts(task: RunTaskConfig) -> httpx.Timeout:
    """Connect and read timeouts, never longer than the task's own timeout."""
    connect, read = min(CONNECT_TIMEOUT, task.timeout), min(READ_TIMEOUT, task.timeout)
    return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based)."""
    return float(min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)))


def worst_case(task: RunTaskConfig) -> float:
    """The longest a delivery to `task` can take: every attempt timing out, every backoff."""
    limits = timeouts(task)
    per_attempt = (limits.connect or 0.0) + (limits.read or 0.0) + (limits.write or 0.0)
    attempts = task.retries + 1
    return attempts * per_attempt + sum(backoff(a) for a in range(1, attempts))


async def deliver(
    client: httpx.AsyncClient, task: RunTaskConfig, payload: dict[str, Any]
) -> Delivery:
    """POST the payload to the task until it answers 200 or the attempts run out. Never raises
    for network or HTTP errors (they become the failure reason); on cancellation the request
    in flight is abandoned and Cancelled propagates."""
    body = encode(payload)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: sign(body, task.hmac_key),
    }
    attempts = task.retries + 1
    reason = "not attempted"
    for attempt in range(1, attempts + 1):
        try:
            response = await client.post(
                task.url, content=body, headers=headers, timeout=timeouts(task)
            )
        except httpx.TimeoutException as exc:
            reason = f"no answer in time ({type(exc).__name__})"
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            if response.status_code == 200:
                return Delivery(True, attempt)
            reason = f"the task service answered {response.status_code}, not 200"
        if attempt < attempts:
            await trio.sleep(backoff(attempt))
    plural = "s" if attempts != 1 else ""
    return Delivery(False, attempts, f"{reason} (after {attempts} attempt{plural})")
