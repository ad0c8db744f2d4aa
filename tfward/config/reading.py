"""Reading TOML values with their key paths, so every error can say where it is.

The helpers here are shared by the config loaders (load.py and integrations.py): a `Table`
knows its key path and refuses unknown keys; each accessor checks a type and names what was
expected versus what was found.

Problems are collected, not stopped at: the loaders read each value through
`Context.attempt`, which notes the `ConfigError` and goes on with a stand-in value, and a
`Table` notes each unknown key. `Context.check` then raises one `ConfigError` holding them all,
so `tfward check-config` shows every mistake of a file at once.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
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
    problems: list[ConfigError] = field(default_factory=list)  # found so far, in file order

    def error(self, key_path: str, message: str) -> ConfigError:
        return ConfigError(self.file, key_path, message)

    def note(self, problem: ConfigError) -> None:
        """Keep a problem and go on reading."""
        self.problems.append(problem)

    def attempt(self, read: Callable[[], _T], fallback: _T) -> _T:
        """What `read` returns; if it raises ConfigError, the problem is noted and `fallback`
        (a stand-in that lets reading go on; the config is refused anyway) is returned."""
        try:
            return read()
        except ConfigError as exc:
            self.note(exc)
            return fallback

    def check(self) -> None:
        """Raise the problems noted so far, all in one ConfigError, if there are any."""
        if self.problems:
            raise ConfigError.collected(self.problems)

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
                ctx.note(self.fail(key, f"unknown key (valid keys here: {valid})"))

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
        """The sub-table under `key`; a value that is not a table is noted as a problem and
        read as an empty table."""
        return self.ctx.attempt(lambda: self.get(key, dict, "a table") or {}, {})

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
