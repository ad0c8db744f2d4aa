"""`tfward serve` and `tfward check-config` (cli/main.py): every config problem at once, one
line each; a data directory the daemon cannot write named in one line by both; an empty config
warned about; a PostgreSQL database connected to, and one that cannot be used named in one
line; help for every command and argument, with one name for each kind of argument;
output closed early (`| head`) ends the command quietly."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import postgres
import pytest
from harness import REPO, demo_workspace, write_config

from tfward.cli.main import EXIT_PIPE, _parser
from tfward.store.dialect import shown

BROKEN = """
[daemon]
listen = "nowhere"
max_concurrent_runs = 0

[[workspace]]
name = "Bad Name"
source = "missing"
"""


def tfward(*args: str, stdout: Any = subprocess.PIPE) -> Any:
    """The command as a process of its own, the way an operator runs it (from the checkout,
    without the developer's TFWARD_* settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFWARD_")}
    return subprocess.run(
        [sys.executable, "-m", "tfward.cli.main", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
        text=True,
        timeout=60,
    )


async def test_check_config_reports_every_problem_one_line_each_and_how_many(
    run_main: Any, tmp_path: Path
) -> None:
    path = tmp_path / "tfward.toml"
    path.write_text(BROKEN)
    result = await run_main(["check-config", str(path)])
    assert result.code == 2 and result.out == ""
    lines = result.err.splitlines()
    assert lines == [
        f"tfward: config error: {path}: daemon.listen: " + lines[0].split("daemon.listen: ")[1],
        f"tfward: config error: {path}: daemon.max_concurrent_runs: expected an integer >= 1, "
        "got 0",
        f"tfward: config error: {path}: workspace[0].name: " + lines[2].split(".name: ")[1],
        f"tfward: config error: {path}: workspace[0].source: expected an existing directory, "
        f"{tmp_path / 'missing'} does not exist",
        f"tfward: 4 problems in {path}",
    ]


async def test_check_config_warns_about_a_file_that_defines_no_workspace(
    run_main: Any, tmp_path: Path
) -> None:
    path = tmp_path / "tfward.toml"
    path.write_text("")
    result = await run_main(["check-config", str(path)])
    assert result.code == 0 and result.out.startswith(f"{path}: ok")
    assert result.err == (
        f"tfward: warning: {path} defines no [[workspace]]: the daemon would have nothing "
        "to run (README: Configuration)\n"
    )


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A config whose data_dir is below a regular file: it can never be created."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory\n")
    config = write_config(
        tmp_path, [demo_workspace(tmp_path, things=1)], daemon={"data_dir": "blocker/data"}
    )
    yield config.path, blocker / "data"


async def test_check_config_names_a_data_dir_that_cannot_be_created(
    run_main: Any, unwritable: tuple[Path, Path]
) -> None:
    path, data_dir = unwritable
    result = await run_main(["check-config", str(path)])
    assert result.code == 2 and result.out == ""
    assert result.err == (
        f"tfward: config error: {path}: daemon.data_dir: {data_dir} cannot be created: "
        f"{data_dir.parent} is not a directory\n"
    )


def test_serve_says_in_one_line_which_data_dir_it_cannot_write(
    unwritable: tuple[Path, Path],
) -> None:
    path, data_dir = unwritable
    result = tfward("serve", str(path))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"tfward: config error: {path}: daemon.data_dir: {data_dir} cannot be created: "
        f"{data_dir.parent} is not a directory"
    ]
    assert "Traceback" not in result.stderr + result.stdout


def test_output_closed_early_ends_the_command_with_141_and_no_traceback() -> None:
    read, write = os.pipe()
    os.close(read)  # the reader (`head`) has gone
    try:
        result = tfward("check-config", "examples/tfward.toml", stdout=write)
    finally:
        os.close(write)
    assert result.returncode == EXIT_PIPE
    assert result.stderr == ""


def _commands(
    parser: argparse.ArgumentParser, path: str = "tfward"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{path} {name}")


POSITIONALS = {
    "name": "WORKSPACE",
    "run_id": "RUN_ID",
    "sv_id": "SV_ID",
    "release_id": "REL_ID",
    "config": "CONFIG",
    "file": "FILE",
}


def test_every_command_and_argument_has_help_and_each_kind_of_argument_one_name() -> None:
    for path, parser in _commands(_parser()):
        assert parser.description or path.count(" ") > 1 or path == "tfward", path
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                assert all(a.help for a in action._choices_actions), path
                continue
            assert action.help, f"{path}: {action.dest} has no help"
            if not action.option_strings and action.dest != "verb":
                assert action.metavar == POSITIONALS[action.dest], (path, action.dest)


async def test_serve_help_says_what_it_does_and_what_its_argument_is(run_main: Any) -> None:
    result = await run_main(["serve", "--help"])
    assert result.code == 0
    text = " ".join(result.out.split())  # argparse wraps lines to the terminal's width
    assert "SIGHUP reloads the config" in text
    assert "CONFIG the config file (default: ./tfward.toml)" in text


async def test_check_config_connects_to_a_postgresql_database_and_says_it_is_ok(
    run_main: Any, tmp_path: Path
) -> None:
    url = postgres.fresh_database_url()
    config = write_config(tmp_path, [], daemon={"database_url": url, "node_id": "n1"})
    result = await run_main(["check-config", str(config.path)])
    assert result.code == 0, result.err
    assert f"  database {shown(url)}: ok, node n1\n" in result.out


async def test_check_config_says_in_one_line_why_a_postgresql_database_cannot_be_used(
    run_main: Any, tmp_path: Path
) -> None:
    url = postgres.fresh_database_url().replace("/t", "/nosuchdb_t", 1)
    config = write_config(tmp_path, [], daemon={"database_url": url})
    result = await run_main(["check-config", str(config.path)])
    assert result.code == 2 and result.out == ""
    [line] = result.err.splitlines()
    assert line.startswith(
        f"tfward: config error: {config.path}: daemon.database_url: {shown(url)} cannot be used: "
    )
    assert "nosuchdb_t" in line and "does not exist" in line
