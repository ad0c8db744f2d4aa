"""The daemon while its storage fails (docs/architecture.md §10), with real faults: a full disk
(the data dir on a small tmpfs), a read-only database (`chattr +i`), a write lock held by
another process. The API answers 503 with one line for every write it cannot make, reads
answer, /healthz, /metrics and sd_notify's STATUS= say why, the watchdog is still fed, a start
waits for storage instead of failing, and all of it ends when storage returns."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio
from harness import demo_workspace, running_daemon, write_config
from storagefaults import FullDisk, HeldWriteLock, ReadOnlyDatabase, tmpfs

from tfward.daemon.service import Daemon


async def until(condition: Callable[[], bool], within: float = 20) -> None:
    with trio.fail_after(within):
        while not condition():
            await trio.sleep(0.05)


def assert_503_in_one_line(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 503, response.text
    message = response.json()["error"]["message"]
    assert "\n" not in message and "Traceback" not in message
    assert all(w in message for w in ("storage degraded", *words)), message
    assert response.headers["Retry-After"]


async def test_creating_a_run_on_a_full_disk_answers_503_and_works_again_once_there_is_room(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "data", 30):
        config = write_config(
            tmp_path, [demo_workspace(tmp_path, things=1)], daemon={"disk_reserve_mb": 4}
        )
        async with running_daemon(config) as (daemon, api):
            filler = FullDisk(config.daemon.data_dir)
            await trio.to_thread.run_sync(filler.start)
            try:
                await until(lambda: daemon.store.health.failing)
                created = await api.http.post("/api/v1/workspaces/demo/runs", json={})
                assert_503_in_one_line(created, "disk_full")
                assert (await api.http.get("/api/v1/workspaces/demo/runs")).status_code == 200
                health = (await api.http.get("/healthz")).json()["data"]
                assert health["status"] == "degraded"
                assert health["storage"]["problem"] == "disk_full"
                metrics = (await api.http.get("/metrics")).text
                assert 'tfward_storage_degraded{problem="disk_full"} 1.0' in metrics
                assert "storage degraded" in daemon.status_line()
            finally:
                filler.stop()
            await until(lambda: not daemon.store.health.failing)
            assert (await api.http.get("/healthz")).json()["data"]["status"] == "ok"
            run = await api.create_run("demo", operation="plan")
            await api.wait(run["id"], "planned_and_finished")


async def test_a_read_only_database_answers_writes_503_at_once_and_still_serves_reads(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1)])
    async with running_daemon(config) as (daemon, api):
        with ReadOnlyDatabase(config.daemon.data_dir / "tfward.db"):
            for _ in range(3):  # the first is tried and refused, the others not even tried
                with trio.fail_after(2):  # at once: no waiting on a database that will not answer
                    locked = await api.http.post("/api/v1/workspaces/demo/actions/lock", json={})
                assert_503_in_one_line(locked)
            assert (await api.http.get("/api/v1/workspaces/demo")).status_code == 200
            metrics = (await api.http.get("/metrics")).text
            assert "tfward_runs{" in metrics  # the database still reads
        await until(lambda: not daemon.store.health.failing)
        locked = await api.http.post("/api/v1/workspaces/demo/actions/lock", json={})
        assert locked.status_code == 200, locked.text


async def test_the_watchdog_is_fed_and_status_says_why_while_the_database_is_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1)])
    trio_sock = trio.socket.from_stdlib_socket(sock)
    async with running_daemon(config) as (daemon, api):
        with ReadOnlyDatabase(config.daemon.data_dir / "tfward.db"):
            refused = await api.http.post("/api/v1/workspaces/demo/actions/lock", json={})
            assert refused.status_code == 503
            seen: list[str] = []
            with trio.fail_after(10):
                while seen.count("WATCHDOG=1") < 4 or not any(
                    "storage degraded" in m for m in seen
                ):
                    seen.append((await trio_sock.recv(4096)).decode())
    trio_sock.close()


async def test_a_daemon_started_while_another_process_holds_the_write_lock_waits_then_serves(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1)])
    async with running_daemon(config):
        pass  # the database exists, migrated
    config = write_config(tmp_path, [demo_workspace(tmp_path, "second", things=1)])
    lock = HeldWriteLock(config.daemon.data_dir / "tfward.db")
    await trio.to_thread.run_sync(lock.start)
    daemon = Daemon(config)
    try:
        async with trio.open_nursery() as nursery:
            started: list[Daemon] = []

            async def serve() -> None:
                started.append(await nursery.start(daemon.serve))

            nursery.start_soon(serve)
            await until(lambda: daemon.store.health.failing)
            await trio.sleep(1.0)
            assert not started  # it waits (a new workspace row needs a write) ...
            await trio.to_thread.run_sync(lock.stop)
            await until(lambda: bool(started), within=30)  # ... and serves once it can write
            async with httpx.AsyncClient(base_url=daemon.addresses[0]) as http:
                assert (await http.get("/healthz")).json()["data"]["status"] == "ok"
            daemon.request_shutdown("test finished")
    finally:
        lock.stop()
