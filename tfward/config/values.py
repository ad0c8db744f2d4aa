"""A workspace's values: ``vars``, ``inputs``, ``env``, and which of them are ``sensitive``.

Values may be literals or secret references (``tfward.config.references``), resolved here. A
name is sensitive when ``sensitive`` lists it or when its value is a reference; the run log
masks sensitive values and releases may not override them. Messages about a sensitive value
describe its type, never the value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from tfward.config import references
from tfward.config.reading import Context, Table, expected, join, quote

# Terraform's rule for variable (and module argument) names.
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class WorkspaceValues:
    vars: dict[str, Any]
    inputs: dict[str, Any]
    env: dict[str, str]
    sensitive: frozenset[str]


def workspace_values(t: Table, *, has_module: bool) -> WorkspaceValues:
    """Read ``vars``, ``inputs``, ``env`` and ``sensitive`` of the workspace table ``t``.
    Problems are noted on the context (reading.py), one group at a time."""
    attempt = t.ctx.attempt
    before = len(t.ctx.problems)
    nothing: tuple[dict[str, Any], frozenset[str]] = ({}, frozenset())
    listed: list[str] = attempt(lambda: _sensitive_names(t), [])
    if "inputs" in t.data and not has_module:
        t.ctx.note(t.fail("inputs", "only allowed together with module (use vars with a source)"))
    variables, from_vars = attempt(lambda: _values(t, "vars", listed), nothing)
    inputs, from_inputs = attempt(lambda: _values(t, "inputs", listed), nothing)
    no_env: tuple[dict[str, str], frozenset[str]] = ({}, frozenset())
    env, from_env = attempt(lambda: _env(t, listed), no_env)
    if len(t.ctx.problems) == before:  # a name in `sensitive` may be in a table that failed
        attempt(lambda: _check_sensitive(t, listed, (variables, env, inputs)), None)
    return WorkspaceValues(
        vars=variables,
        inputs=inputs,
        env=env,
        sensitive=frozenset(listed) | from_vars | from_inputs | from_env,
    )


def _values(
    t: Table, key: str, sensitive: Collection[str]
) -> tuple[dict[str, Any], frozenset[str]]:
    """Terraform values: named by Terraform's identifier rule, JSON-representable."""
    table = t.free_table(key)
    for name in table.data:
        if not _VARIABLE_NAME.fullmatch(name):
            expected_name = "expected a Terraform name (letters, digits, _ and -; no leading digit)"
            raise table.fail(name, f"{expected_name}, got {quote(name)}")
    values, referenced = references.resolve_table(table)
    for name, value in values.items():
        if name not in referenced:
            _check_value(t.ctx, value, table.key(name), hide=name in sensitive)
    return values, referenced


def _check_value(ctx: Context, value: Any, path: str, *, hide: bool) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        # JSON (and so Terraform) has no nan or inf.
        raise ctx.error(path, expected("a finite number", value, hide=hide))
    if isinstance(value, str | int | float):
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_value(ctx, item, f"{path}[{index}]", hide=hide)
    elif isinstance(value, dict):
        if references.is_reference(value):
            # Resolving only whole values keeps "which names are sensitive" a list of names.
            where = "the whole value of a key of vars, inputs or env, not nested in it"
            message = f"a secret reference ({references.EXAMPLES}) must be {where}"
            raise ctx.error(path, message)
        for key, item in value.items():
            _check_value(ctx, item, join(path, key), hide=hide)
    else:
        what = "a string, number, boolean, array or table"
        raise ctx.error(path, expected(what, value, hide=hide))


def _env(t: Table, sensitive: Collection[str]) -> tuple[dict[str, str], frozenset[str]]:
    table = t.free_table("env")
    for name in table.data:
        if not _ENV_NAME.fullmatch(name):
            expected_name = "expected an environment variable name (letters, digits and _)"
            raise table.fail(name, f"{expected_name}, got {quote(name)}")
    values, referenced = references.resolve_table(table)
    for name, value in values.items():
        if not isinstance(value, str):
            raise table.fail(name, expected("a string", value, hide=name in sensitive))
    return values, referenced


def _sensitive_names(t: Table) -> list[str]:
    names = t.get("sensitive", list, "an array of names") or []
    for index, name in enumerate(names):
        if not isinstance(name, str):
            raise t.ctx.error(f"{t.key('sensitive')}[{index}]", expected("a string", name))
    return names


def _check_sensitive(t: Table, names: list[str], tables: Collection[Mapping[str, Any]]) -> None:
    for index, name in enumerate(names):
        if not any(name in table for table in tables):
            path = f"{t.key('sensitive')}[{index}]"
            expected_name = "expected the name of a key in vars, env or inputs"
            raise t.ctx.error(path, f"{expected_name}, got {quote(name)}")
