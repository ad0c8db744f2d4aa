"""Behaviour of parse_duration / format_duration."""

from __future__ import annotations

import math

import pytest

from tfward.config import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("250ms", 0.25),
        ("10m", 600.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1d2h3m4s5ms", 93784.005),
        ("1.5h", 5400.0),
        ("0s", 0.0),
        (" 10m ", 600.0),
    ],
)
def test_duration_strings_parse_to_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("number", "seconds"), [(45, 45.0), (2.5, 2.5), (0, 0.0)])
def test_bare_numbers_are_seconds(number: float, seconds: float) -> None:
    result = parse_duration(number)
    assert result == seconds
    assert isinstance(result, float)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty duration"),
        ("   ", "empty duration"),
        ("-5s", "negative duration"),
        (-1, "negative duration"),
        (-0.5, "negative duration"),
        ("5x", "unknown unit 'x' (use ms, s, m, h, d)"),
        ("5mins", "unknown unit 'mins'"),
        ("5S", "unknown unit 'S'"),
        ("30", "missing unit after 30"),
        ("1 h", "missing unit after 1"),
        ("h", "expected a number"),
        ("1h1h", "unit 'h' appears more than once"),
        (math.nan, "finite"),
        (math.inf, "finite"),
        (True, "got boolean true"),
    ],
)
def test_invalid_durations_raise_value_error_with_the_reason(
    value: str | float, message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(value)
    assert message in str(caught.value)


def test_error_quotes_the_offending_text() -> None:
    with pytest.raises(ValueError, match="'1h2x'"):
        parse_duration("1h2x")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (30, "30s"),
        (5400, "1h30m"),
        (0.25, "250ms"),
        (0, "0s"),
        (0.0004, "0s"),
        (1.5, "1s500ms"),
        (86400, "1d"),
        (90061.5, "1d1h1m1s500ms"),
        (-90, "-1m30s"),
    ],
)
def test_format_duration_is_compact(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0.001, 1, 59, 61.25, 3600, 5400, 86399.999, 172800])
def test_formatted_durations_parse_back(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_format_duration_rejects_non_finite_values() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        format_duration(math.inf)
