"""The retry policy of outbox jobs (pure): exponential waits with jitter, attempt limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from harness import demo_workspace
from receiver import followups_config

from tfward.outbox.policy import JITTER, RetryPolicy, policy_for

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [
        (1, 0.0, 0.2),
        (2, 0.0, 0.4),
        (3, 0.0, 0.8),
        (4, 0.999, 1.6 * (1 + JITTER * 0.999)),
        (30, 0.0, 60.0),  # capped
    ],
)
def test_waits_double_after_each_failed_attempt_up_to_the_cap(
    attempt: int, rand: float, expected: float
) -> None:
    assert RetryPolicy(5, 0.2, 60.0).delay(attempt, rand) == pytest.approx(expected)


def test_each_wait_is_longer_than_the_one_before_whatever_the_jitter() -> None:
    policy = RetryPolicy(10, 0.2, 3600.0)
    for attempt in range(1, 9):
        assert policy.delay(attempt, 0.999) < policy.delay(attempt + 1, 0.0)


def test_the_last_allowed_attempt_gives_up() -> None:
    policy = RetryPolicy(3, 1.0, 60.0)
    assert policy.next_attempt(2, T0, 0.0) == T0 + timedelta(seconds=2)
    assert policy.next_attempt(3, T0, 0.0) is None


def test_deliveries_follow_their_destination_and_other_jobs_the_outbox(tmp_path: Path) -> None:
    config = followups_config(
        tmp_path,
        [demo_workspace(tmp_path, notifications=["hook"])],
        [{"name": "hook", "type": "generic", "url": "http://127.0.0.1:9/x", "retries": 3,
          "retry_interval": "2s"}],
        {"retries": 7},
    )
    assert policy_for("deliver", {"destination": "hook"}, config) == RetryPolicy(4, 2.0, 3600.0)
    assert policy_for("deliver", {"destination": "gone"}, config).max_attempts == 1
    assert policy_for("inventory_sync", {}, config).max_attempts == 8
