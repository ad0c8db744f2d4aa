"""One daemon per data dir, and a private data dir (tfward/daemon/datadir.py; issue 13, items 1
and 6). Two real `tfward serve` processes on one config: the second stops at once, before
recovery could touch the first one's terraform, with one line naming the PID that holds the
lock; a `kill -9` leaves no stale lock. After a real run, nothing under the data dir is
readable by anyone but the daemon's user."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from harness import Api, DaemonProcess, demo_workspace, running_daemon, write_config
from taskservice import free_port

from tfward.config import Config
from tfward.daemon.service import Daemon
from tfward.errors import AlreadyRunning


async def second_serve(config: Config) -> subprocess.CompletedProcess[bytes]:
    """`tfward serve` on `config` while another daemon runs; it must end on its own, at once."""
    with trio.fail_after(60):
        return await trio.run_process(
            [sys.executable, "-m", "tfward.cli.main", "serve", str(config.path)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


def assert_refused(second: subprocess.CompletedProcess[bytes], holder: int, what: str) -> None:
    """Exit 2, one line on stderr naming the holder's PID; nothing of tfward ran (its log has
    no line of a tfward logger: no migration, recovery or API)."""
    assert second.returncode == 2, second
    [line] = second.stderr.decode().splitlines()
    assert line.startswith(f"tfward: {what}") and f"(pid {holder} holds " in line, line
    loggers = [json.loads(text)["logger"] for text in second.stdout.decode().splitlines()]
    assert not [name for name in loggers if name.startswith("tfward")], loggers


async def test_a_second_daemon_exits_2_at_once_naming_the_pid_and_the_first_apply_ends_applied(
    tmp_path: Path,
) -> None:
    ws = demo_workspace(tmp_path, things=2, vars={"delay": 3}, auto_apply=True)
    config = write_config(tmp_path, [ws])  # port 0: the second daemon would get another port
    data_dir = config.daemon.data_dir
    async with trio.open_nursery() as nursery:
        first = DaemonProcess(config)
        await first.start(nursery)
        assert first.proc is not None
        async with first.client() as http:
            api = Api(http)
            run = await api.create_run("demo")
            await api.wait_stage(run["id"], "applying")
            second = await second_serve(config)
            assert_refused(second, first.proc.pid, f"the data dir {data_dir} is in use")
            done = await api.wait(run["id"], "applied")
            log = await api.logs(run["id"])
        assert done["error_kind"] is None and log.count("[tfward] run finished:") == 1
        assert "execution halted" not in log and "Interrupt received" not in log

        # kill -9 leaves no stale lock: the next daemon starts, and the file names it.
        first.signal(signal.SIGKILL)
        await first.wait()
        third = DaemonProcess(config)
        await third.start(nursery)
        assert third.proc is not None
        assert (data_dir / "tfward.lock").read_text().strip() == str(third.proc.pid)
        third.signal(signal.SIGTERM)
        assert await third.wait() == 0


async def test_a_second_daemon_on_the_same_port_is_refused_by_the_lock_not_by_the_socket(
    tmp_path: Path,
) -> None:
    listen = {"listen": f"127.0.0.1:{free_port()}"}
    config = write_config(tmp_path, [demo_workspace(tmp_path)], daemon=listen)
    async with trio.open_nursery() as nursery:
        first = DaemonProcess(config)
        await first.start(nursery)
        assert first.proc is not None
        second = await second_serve(config)
        assert_refused(second, first.proc.pid, f"the data dir {config.daemon.data_dir}")
        async with first.client() as http:
            assert (await http.get("/healthz")).status_code == 200
        first.signal(signal.SIGTERM)
        assert await first.wait() == 0


async def test_a_sqlite_database_outside_the_data_dir_is_locked_as_well(tmp_path: Path) -> None:
    database = {"database_url": f"sqlite:///{tmp_path / 'shared' / 'tfward.db'}"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_config(tmp_path / "a", [], daemon=database)
    other = write_config(tmp_path / "b", [], daemon=database)
    async with running_daemon(first):
        with pytest.raises(AlreadyRunning) as refused:
            await Daemon(other).serve()
        assert refused.value.pid == os.getpid()
        assert str(refused.value).startswith(f"the database {tmp_path / 'shared' / 'tfward.db'}")
        assert refused.value.lock_file == tmp_path / "shared" / "tfward.db.tfward.lock"
    # Its own data dir was claimed and released again: a daemon starts there now.
    async with running_daemon(other):
        pass


def loose_modes(root: Path) -> list[str]:
    """Files and directories under `root` (itself included) that others may read or enter."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue  # a symlink's own mode means nothing
        if stat.S_IMODE(mode) & 0o077:
            found.append(f"{path.relative_to(root)}: {stat.S_IMODE(mode):04o}")
    return found


async def test_nothing_under_the_data_dir_is_readable_by_others_after_a_real_run(
    tmp_path: Path,
) -> None:
    ws = demo_workspace(tmp_path, things=2, auto_apply=True)
    config = write_config(tmp_path, [ws])
    data_dir = config.daemon.data_dir
    async with trio.open_nursery() as nursery:
        daemon = DaemonProcess(config)
        await daemon.start(nursery)
        async with daemon.client() as http:
            api = Api(http)
            await api.wait((await api.create_run("demo"))["id"], "applied")
            plan = await api.create_run("demo", operation="plan")
            await api.wait(plan["id"], "planned_and_finished")
        # While it runs: the database with its -wal and -shm, the init kept, the backups.
        present = {p.name for p in data_dir.iterdir()}
        assert {"tfward.db", "tfward.db-wal", "tfward.db-shm", "tfward.lock"} <= present
        assert any((data_dir / "init-cache").rglob("*")) and any(
            (data_dir / "state-backups").rglob("*.tfstate*")
        )
        assert loose_modes(data_dir) == []
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    assert loose_modes(data_dir) == []


async def test_a_data_dir_made_under_a_loose_umask_is_made_private_at_start(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1)])
    data_dir = config.daemon.data_dir
    (data_dir / "runs").mkdir(parents=True)
    (data_dir / "tfward.db").touch()  # an empty file is an empty SQLite database
    for path, mode in [(data_dir, 0o755), (data_dir / "runs", 0o755)]:
        path.chmod(mode)
    (data_dir / "tfward.db").chmod(0o644)
    async with running_daemon(config):
        assert loose_modes(data_dir) == []
        assert stat.S_IMODE((data_dir / "tfward.db-wal").stat().st_mode) == 0o600
