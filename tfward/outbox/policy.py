"""Retry policy of outbox jobs, as pure code: how many attempts, and how long between them.

A `deliver` job follows its destination's `retries` and `retry_interval`; every other kind
follows `[outbox] retries` with a one-second base. The wait after failed attempt n is
`base * 2**(n-1)`, capped, times a random factor in [1, 1 + JITTER) so that receivers that
come back are not hit by every waiting job at once, while each wait stays longer than the
one before (seed M4).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tfward.config import Config

JITTER = 0.25
BASE_DELAY = 1.0
MAX_DELAY = 300.0
MAX_DELIVERY_DELAY = 3600.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    base: float
    cap: float

    def delay(self, attempt: int, rand: float) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based); `rand` in [0, 1)."""
        raw = self.base * 2.0 ** max(0, attempt - 1)
        return float(min(self.cap, raw) * (1.0 + JITTER * rand))

    def next_attempt(self, attempts: int, when: datetime, rand: float) -> datetime | None:
        """When to try again after `attempts` failed attempts, or None: give up (dead)."""
        if attempts >= self.max_attempts:
            return None
        return when + timedelta(seconds=self.delay(attempts, rand))


def policy_for(kind: str, payload: dict[str, Any], config: Config) -> RetryPolicy:
    if kind == "deliver":
        try:
            destination = config.notification(str(payload.get("destination")))
        except KeyError:
            return RetryPolicy(1, BASE_DELAY, MAX_DELAY)  # gone from the config: no retries
        return RetryPolicy(
            destination.retries + 1,
            destination.retry_interval,
            max(MAX_DELIVERY_DELAY, destination.retry_interval),
        )
    return RetryPolicy(config.outbox.retries + 1, BASE_DELAY, MAX_DELAY)
