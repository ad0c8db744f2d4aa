"""Parse and format the human durations used in the config file ("30s", "1h30m").

A duration is one or more ``<number><unit>`` parts with units ``ms``, ``s``, ``m``, ``h``
and ``d`` (``"1h30m"``, ``"1.5s"``, ``"250ms"``); a bare TOML number means seconds.
Durations are returned as float seconds because that is what trio's timeouts take.
"""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "parse_duration"]

_UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_UNIT_NAMES = ", ".join(_UNITS)
# The unit is matched as any run of letters so "5mins" is reported as the unknown unit
# "mins" instead of as the confusing leftover "ins".
_PART = re.compile(r"(\d+(?:\.\d+)?)([A-Za-z]*)")
# Largest unit first; values are whole milliseconds.
_FORMAT_UNITS: tuple[tuple[str, int], ...] = (
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
)


def parse_duration(value: str | int | float) -> float:
    """Return ``value`` in seconds; raise ValueError with a readable reason if it is invalid.

    Numbers are taken as seconds. Strings must be non-empty ``<number><unit>`` sequences;
    each unit may appear once. Zero is allowed here; callers that need a positive duration
    check that themselves.
    """
    if isinstance(value, bool):
        # bool is an int subclass; `timeout = true` is a mistake, not one second.
        raise ValueError(f"expected a duration, got boolean {str(value).lower()}")
    if isinstance(value, int | float):
        return _check_seconds(float(value), repr(value))
    if not isinstance(value, str):
        raise ValueError(f"expected a duration, got {type(value).__name__}")
    return _check_seconds(_parse_text(value), repr(value))


def format_duration(seconds: float) -> str:
    """Render ``seconds`` as a compact duration such as ``"1h30m"`` or ``"1s500ms"``.

    The value is rounded to whole milliseconds; zero renders as ``"0s"``. The output parses
    back with ``parse_duration`` (negative values get a leading ``-`` for display only).
    """
    if not math.isfinite(seconds):
        raise ValueError(f"cannot format non-finite duration {seconds!r}")
    sign = "-" if seconds < 0 else ""
    remaining = round(abs(seconds) * 1000)
    parts: list[str] = []
    for unit, size in _FORMAT_UNITS:
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts) if parts else "0s"


def _parse_text(text: str) -> float:
    stripped = text.strip()
    if not stripped:
        raise ValueError('empty duration (write e.g. "30s" or "1h30m")')
    if stripped.startswith("-"):
        raise ValueError(f"negative duration {text!r} is not allowed")
    total = 0.0
    seen: set[str] = set()
    pos = 0
    while pos < len(stripped):
        match = _PART.match(stripped, pos)
        if match is None:
            raise ValueError(
                f"invalid duration {text!r}: expected a number at {stripped[pos:]!r}"
                f' (write e.g. "30s" or "1h30m")'
            )
        number, unit = match.groups()
        total += float(number) * _unit_seconds(text, number, unit, seen)
        pos = match.end()
    return total


def _unit_seconds(text: str, number: str, unit: str, seen: set[str]) -> float:
    if not unit:
        raise ValueError(
            f"invalid duration {text!r}: missing unit after {number} (use {_UNIT_NAMES})"
        )
    if unit not in _UNITS:
        raise ValueError(f"invalid duration {text!r}: unknown unit {unit!r} (use {_UNIT_NAMES})")
    if unit in seen:
        raise ValueError(f"invalid duration {text!r}: unit {unit!r} appears more than once")
    seen.add(unit)
    return _UNITS[unit]


def _check_seconds(seconds: float, shown: str) -> float:
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"invalid duration {shown}: must be a finite number of seconds")
    if seconds < 0:
        raise ValueError(f"negative duration {shown} is not allowed")
    return seconds
