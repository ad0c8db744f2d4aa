"""Reading TOML values with their key paths, so every error can say where it is.

The helpers here are shared by the config loaders (load.py and integrations.py): a `Table`
knows its key path and refuses unknown keys; each accessor checks a type and names what was
expected versus what was found.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tfward.config.durations import parse_duration
from tfward.errors import ConfigError

_T = TypeVar("_T")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class Context:
    file: Path  # as the caller gave it, so messages read the way the operator typed it
    base: Path  # absolute folder of the config file; relative paths resolve against it

    def error(self, key_path: str, message: str) -> ConfigError:
        return ConfigError(self.file, key_path, message)

    def resolve(self, raw: str) -> Path:
        # normpath rather than resolve(): clean up "..", but keep the operator's symlinks.
        return Path(os.path.normpath(self.base / Path(raw).expanduser()))


class Table:
    """A TOML table being read; it knows its key path so every error can say where it is."""

    def __init__(
        self, ctx: Context, data: Mapping[str, Any], path: str, allowed: Collection[str]
    ) -> None:
        self.ctx = ctx
        self.data = data
        self.key_path = path
        for key in data:
            if key not in allowed:
                valid = ", ".join(sorted(allowed))
                raise self.fail(key, f"unknown key (valid keys here: {valid})")

    def key(self, key: str) -> str:
        return join(self.key_path, key)

    def fail(self, key: str, message: str) -> ConfigError:
        return self.ctx.error(self.key(key), message)

    def get(self, key: str, kind: type[_T], what: str) -> _T | None:
        """The value under ``key`` (None if absent) after checking it is a ``kind``."""
        if key not in self.data:
            return None
        value = self.data[key]
        # bool is an int subclass; `max_concurrent_runs = true` must not mean 1.
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
            raise self.fail(key, expected(what, value))
        return value

    def string(self, key: str) -> str | None:
        return self.get(key, str, "a string")

    def nonempty(self, key: str) -> str | None:
        value = self.string(key)
        if value is not None and not value.strip():
            raise self.fail(key, "expected a non-empty string, got an empty string")
        return value

    def path(self, key: str) -> Path | None:
        value = self.nonempty(key)
        return None if value is None else self.ctx.resolve(value)

    def mapping(self, key: str) -> dict[str, Any]:
        return self.get(key, dict, "a table") or {}

    def table(self, key: str, allowed: Collection[str]) -> Table:
        return Table(self.ctx, self.mapping(key), self.key(key), allowed)

    def free_table(self, key: str) -> Table:
        """A sub-table whose keys are data (names), not schema."""
        data = self.mapping(key)
        return Table(self.ctx, data, self.key(key), data.keys())

    def duration(self, key: str, *, positive: bool = True) -> float | None:
        if key not in self.data:
            return None
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.fail(key, expected('a duration such as "30s" or "1h30m"', value))
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None
        if positive and seconds == 0:
            raise self.fail(key, f"expected a duration greater than zero, got {value!r}")
        return seconds


def join(parent: str, key: str) -> str:
    part = key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)
    return f"{parent}.{part}" if parent else part


def default(value: _T | None, default: _T) -> _T:
    return default if value is None else value


def expected(what: str, value: Any, *, hide: bool = False) -> str:
    return f"expected {what}, got {describe(value, hide=hide)}"


def describe(value: Any, *, hide: bool = False) -> str:
    """``integer 3``, ``string "abc"``, ``table``: the TOML type, and the value if short."""
    kinds: tuple[tuple[type, str], ...] = (
        (bool, "boolean"),
        (int, "integer"),
        (float, "float"),
        (str, "string"),
        (list, "array"),
        (dict, "table"),
        (datetime.datetime, "datetime"),
        (datetime.date, "date"),
        (datetime.time, "time"),
    )
    kind = next((name for cls, name in kinds if isinstance(value, cls)), type(value).__name__)
    if kind in ("array", "table"):
        return f"an empty {kind}" if not value else kind
    if hide:
        return f"{kind} (value hidden: it is listed in sensitive)"
    shown = quote(value) if isinstance(value, str) else str(value)
    if isinstance(value, bool):
        shown = shown.lower()
    return f"{kind} {shown}"


def quote(text: str, limit: int = 60) -> str:
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return json.dumps(text, ensure_ascii=False)


def required(t: Table, value: _T | None, key: str) -> _T:
    if value is None:
        raise t.fail(key, "required key is missing")
    return value
