"""Secret references in workspace values: `{ from_env = "NAME" }` and `{ from_file = "path" }`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tfward.config import Config, ConfigError, thaw

Load = Callable[[str], Config]
Error = Callable[[str], ConfigError]

WS = '[[workspace]]\nname = "demo"\nsource = "ws"\n'
MODULE_WS = '[[workspace]]\nname = "m"\nmodule = { source = "a/b/c" }\n'
SECRET = "hunter2-s3cret"


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TFWARD_TEST_SECRET", SECRET)
    return "TFWARD_TEST_SECRET"


def assert_error(err: ConfigError, key_path: str, *fragments: str) -> None:
    """At `key_path`, saying each fragment, and never the secret."""
    text = str(err)
    assert err.key_path == key_path, text
    for fragment in fragments:
        assert fragment in err.message, text
    assert SECRET not in text


# --- resolving --------------------------------------------------------------------------


def test_from_env_resolves_a_var_an_env_entry_and_a_module_input(
    load: Load, secret_env: str
) -> None:
    ref = f'{{ from_env = "{secret_env}" }}'
    config = load(
        WS
        + f'vars = {{ db_password = {ref}, region = "eu" }}\nenv = {{ TOKEN = {ref} }}\n'
        + MODULE_WS
        + f"inputs = {{ key = {ref} }}\n"
    )
    ws, module_ws = config.workspace("demo"), config.workspace("m")
    assert thaw(ws.vars) == {"db_password": SECRET, "region": "eu"}
    assert dict(ws.env) == {"TOKEN": SECRET}
    assert dict(module_ws.inputs) == {"key": SECRET}


def test_from_file_reads_relative_to_the_config_folder_without_one_trailing_newline(
    load: Load, config_dir: Path
) -> None:
    (config_dir / "secrets").mkdir()
    (config_dir / "secrets" / "db").write_text(SECRET + "\n")
    (config_dir / "secrets" / "two").write_text("line\n\n")
    (config_dir / "secrets" / "crlf").write_bytes(b"windows\r\n")
    text = WS + (
        'vars = { db = { from_file = "secrets/db" }, two = { from_file = "secrets/two" } }\n'
        'env = { CRLF = { from_file = "secrets/crlf" } }\n'
    )
    ws = load(text).workspace("demo")
    assert thaw(ws.vars) == {"db": SECRET, "two": "line\n"}
    assert dict(ws.env) == {"CRLF": "windows"}


def test_from_file_accepts_an_absolute_path(load: Load, tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere.txt"
    secret.write_text(SECRET)
    ws = load(WS + f'vars = {{ db = {{ from_file = "{secret}" }} }}\n').workspace("demo")
    assert ws.vars["db"] == SECRET


def test_a_set_but_empty_environment_variable_is_an_empty_value(
    load: Load, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TFWARD_TEST_EMPTY", "")
    ws = load(WS + 'env = { E = { from_env = "TFWARD_TEST_EMPTY" } }\n').workspace("demo")
    assert dict(ws.env) == {"E": ""}


# --- sensitivity ------------------------------------------------------------------------


def test_referenced_values_are_sensitive_and_masked(load: Load, secret_env: str) -> None:
    ref = f'{{ from_env = "{secret_env}" }}'
    text = WS + f'vars = {{ db = {ref}, plain = "visible" }}\nenv = {{ TOKEN = {ref} }}\n'
    ws = load(text).workspace("demo")
    assert ws.sensitive == frozenset({"db", "TOKEN"})
    assert ws.sensitive_values() == [SECRET]


def test_referenced_module_inputs_are_sensitive(load: Load, secret_env: str) -> None:
    ws = load(MODULE_WS + f'inputs = {{ key = {{ from_env = "{secret_env}" }} }}\n').workspace("m")
    assert ws.sensitive == frozenset({"key"}) and ws.sensitive_values() == [SECRET]


def test_sensitive_may_also_list_a_referenced_name(load: Load, secret_env: str) -> None:
    text = WS + f'vars = {{ db = {{ from_env = "{secret_env}" }} }}\nsensitive = ["db"]\n'
    assert load(text).workspace("demo").sensitive == frozenset({"db"})


def test_a_workspace_repr_holds_no_value(load: Load, secret_env: str) -> None:
    ws = load(WS + f'vars = {{ db = {{ from_env = "{secret_env}" }} }}\n').workspace("demo")
    assert SECRET not in repr(ws)


# --- errors -----------------------------------------------------------------------------


def test_an_unset_environment_variable_names_the_key_path_and_the_variable(
    error: Error, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TFWARD_TEST_UNSET", raising=False)
    err = error(WS + 'vars = { db = { from_env = "TFWARD_TEST_UNSET" } }\n')
    assert_error(err, "workspace[0].vars.db", '"TFWARD_TEST_UNSET"', "is not set")


def test_a_missing_file_names_the_key_path_and_the_path(error: Error, config_dir: Path) -> None:
    err = error(WS + 'env = { TOKEN = { from_file = "secrets/nope" } }\n')
    assert_error(err, "workspace[0].env.TOKEN", str(config_dir / "secrets" / "nope"), "not exist")


def test_a_directory_is_not_a_secret_file(error: Error, config_dir: Path) -> None:
    err = error(WS + 'vars = { db = { from_file = "ws" } }\n')
    assert_error(err, "workspace[0].vars.db", str(config_dir / "ws"), "is a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_names_the_path(error: Error, config_dir: Path) -> None:
    secret = config_dir / "locked"
    secret.write_text(SECRET)
    secret.chmod(0)
    err = error(WS + 'vars = { db = { from_file = "locked" } }\n')
    assert_error(err, "workspace[0].vars.db", str(secret), "cannot read")


def test_a_file_that_is_not_utf8_is_refused_without_showing_its_bytes(
    error: Error, config_dir: Path
) -> None:
    (config_dir / "binary").write_bytes(SECRET.encode() + b"\xff\xfe")
    err = error(WS + 'vars = { db = { from_file = "binary" } }\n')
    assert_error(err, "workspace[0].vars.db", "not valid UTF-8", "byte 14")
    assert "xff" not in str(err)


@pytest.mark.parametrize(
    ("value", "key_path", "fragment"),
    [
        ('{ from_env = "A", from_file = "b" }', "workspace[0].vars.db", "exactly one key"),
        ('{ from_env = "A", default = "x" }', "workspace[0].vars.db", "keys default, from_env"),
        ("{ from_env = 3 }", "workspace[0].vars.db.from_env", "non-empty string, got integer"),
        ('{ from_file = "" }', "workspace[0].vars.db.from_file", "non-empty string"),
        (
            '{ nested = { from_env = "A" } }',
            "workspace[0].vars.db.nested",
            "must be the whole value",
        ),
        ('[{ from_file = "x" }]', "workspace[0].vars.db[0]", "must be the whole value"),
    ],
)
def test_bad_reference_shapes_are_refused_with_the_reference_form(
    error: Error, value: str, key_path: str, fragment: str
) -> None:
    err = error(WS + f"vars = {{ db = {value} }}\n")
    assert_error(err, key_path, fragment)


def test_a_reference_in_env_with_extra_keys_explains_the_form(error: Error) -> None:
    err = error(WS + 'env = { T = { from_env = "A", x = 1 } }\n')
    assert_error(err, "workspace[0].env.T", 'exactly one key, { from_env = "NAME" }')


def test_a_plain_table_is_still_no_env_value(error: Error) -> None:
    assert_error(error(WS + "env = { T = { x = 1 } }\n"), "workspace[0].env.T", "expected a string")
