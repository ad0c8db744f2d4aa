"""Secret references: ``{ from_env = "NAME" }`` and ``{ from_file = "path" }`` as a value.

A workspace's ``vars``, ``inputs`` and ``env`` may say where a value comes from instead of
holding it, so the config file (often kept in version control) never holds the secret.
References are resolved while the config is loaded: ``tfward check-config`` and a SIGHUP reload
report an unset variable or a missing file at once, not in the middle of a run. The caller
marks every referenced value sensitive. No message raised here contains a resolved value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from tfward.config.reading import Context, Table, expected, join, quote
from tfward.errors import ConfigError

KEYS = ("from_env", "from_file")
EXAMPLES = '{ from_env = "NAME" } or { from_file = "path" }'
FORM = f"a secret reference: a table of exactly one key, {EXAMPLES}"


def is_reference(value: Any) -> bool:
    """Whether ``value`` is meant as a reference: a table using a from_env or from_file key."""
    return isinstance(value, Mapping) and any(key in value for key in KEYS)


def resolve_table(table: Table) -> tuple[dict[str, Any], frozenset[str]]:
    """The table's values with every reference replaced by its text, and the referenced names."""
    values: dict[str, Any] = {}
    referenced: set[str] = set()
    for name, value in table.data.items():
        if is_reference(value):
            values[name] = resolve(table.ctx, value, table.key(name))
            referenced.add(name)
        else:
            values[name] = value
    return values, frozenset(referenced)


def resolve(ctx: Context, value: Mapping[str, Any], path: str) -> str:
    """The text a reference points at; ConfigError at ``path`` if it is malformed or its
    environment variable or file is missing."""
    if len(value) != 1:
        keys = ", ".join(sorted(value))
        raise ctx.error(path, f"expected {FORM}; got a table with the keys {keys}")
    ((kind, target),) = value.items()
    if not isinstance(target, str) or not target:
        raise ctx.error(join(path, kind), expected("a non-empty string", target))
    if kind == "from_env":
        return _from_env(ctx, target, path)
    return _from_file(ctx, target, path)


def _from_env(ctx: Context, name: str, path: str) -> str:
    # The daemon's own environment (systemd's Environment= or EnvironmentFile=, a shell).
    value = os.environ.get(name)
    if value is None:
        message = f"environment variable {quote(name)} (from_env) is not set for tfward"
        raise ctx.error(path, message)
    return value


def _from_file(ctx: Context, raw: str, path: str) -> str:
    file = ctx.resolve(raw)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise _file_error(ctx, path, f"{file} does not exist") from None
    except IsADirectoryError:
        raise _file_error(ctx, path, f"{file} is a directory") from None
    except OSError as exc:
        # strerror only: the exception's text is not needed and says nothing of the content.
        raise _file_error(ctx, path, f"cannot read {file}: {exc.strerror or 'error'}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Only the offset: the offending bytes are part of the secret.
        raise _file_error(ctx, path, f"{file} is not valid UTF-8 text (byte {exc.start})") from None
    # `echo secret > file` ends the file with a newline that is no part of the secret.
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    return text


def _file_error(ctx: Context, path: str, problem: str) -> ConfigError:
    return ctx.error(path, f"expected a readable UTF-8 file (from_file): {problem}")
