"""The check of the directories the daemon writes (daemon/preflight.py), and what the daemon
itself says when one fails at start: one line naming the key, the directory and why."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import demo_workspace, running_daemon, write_config

from tfward.config import Config
from tfward.daemon import preflight
from tfward.errors import ConfigError
from tfward.store.db import sqlite_file

NOBODY = 65534


def as_another_user(check: Callable[[], str | None]) -> str | None:
    """`check()` run as the user `nobody` (root may write anywhere): in a forked child that
    drops its privileges, answering through a pipe. Without root, as this user."""
    if os.geteuid() != 0:
        return check()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest, no trio; only the check, then _exit
        code = 0
        try:
            os.close(read)
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(write, json.dumps(check()).encode())
        except BaseException:  # noqa: BLE001 - the child must reach os._exit whatever happens
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as answer:
        text = answer.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the check failed in the child"
    found: str | None = json.loads(text)
    return found


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return write_config(tmp_path, [demo_workspace(tmp_path, things=1)])


def test_directories_that_can_be_made_are_no_problem_and_the_check_leaves_nothing(
    config: Config, tmp_path: Path
) -> None:
    before = sorted(tmp_path.rglob("*"))
    assert preflight.storage_problems(config) == []
    assert sorted(tmp_path.rglob("*")) == before  # data/ is not created by the check


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory every user may reach (pytest's own tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="tfward-preflight-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_a_directory_the_daemon_may_not_write_is_named_with_the_reason(shared: Path) -> None:
    locked = shared / "locked"
    locked.mkdir(mode=0o755)  # root's: others may read, not write
    assert as_another_user(lambda: preflight.directory_problem(locked)) == (
        f"{locked} is not writable: Permission denied"
    )
    inside = locked / "data"
    assert as_another_user(lambda: preflight.directory_problem(inside)) == (
        f"{inside} cannot be created in {locked}: Permission denied"
    )
    assert preflight.directory_problem(shared / "a" / "b") is None


def test_a_path_below_a_file_cannot_be_created_and_a_file_is_no_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    assert preflight.directory_problem(blocker) == f"{blocker} is not a directory"
    assert preflight.directory_problem(blocker / "d") == (
        f"{blocker / 'd'} cannot be created: {blocker} is not a directory"
    )


def test_a_database_file_the_daemon_may_not_write_is_named(shared: Path) -> None:
    database = shared / "tfward.db"
    database.write_bytes(b"")
    database.chmod(0o644)  # root's: others may read, not write
    assert as_another_user(lambda: preflight.file_problem(database)) == (
        f"{database} is not writable: Permission denied"
    )
    assert sqlite_file(f"sqlite:///{database}") == database
    assert sqlite_file("postgresql+psycopg://x/y") is None


def test_one_cause_is_one_problem_even_for_directories_inside_it(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("x")
    config = write_config(tmp_path, [], daemon={"data_dir": "blocker/data"})
    [problem] = preflight.storage_problems(config)
    assert problem.key_path == "daemon.data_dir" and "is not a directory" in problem.message


async def test_the_daemon_names_a_data_dir_it_cannot_make_at_start(tmp_path: Path) -> None:
    """Started without the check (as the tests start it), the daemon still says it in one
    line: a ConfigError on the key, not an OSError from deep inside the start."""
    (tmp_path / "blocker").write_text("x")
    config = write_config(
        tmp_path, [demo_workspace(tmp_path, things=1)], daemon={"data_dir": "blocker/data"}
    )
    with pytest.raises(BaseExceptionGroup) as caught:
        async with running_daemon(config):
            pass
    found, rest = caught.value.split(ConfigError)
    assert found is not None and rest is None
    error = found.exceptions[0]
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    assert isinstance(error, ConfigError) and error.key_path == "daemon.data_dir"
    assert error.message.endswith("is not writable: Not a directory")
