"""Several real `tfward serve` processes on one PostgreSQL database (docs/architecture.md §15),
for the cluster tests and the cluster soak and bench: each daemon its own data dir and node id
(`node0`, `node1`, ...), all of them one database and one secret key (sealed states and plans
are read by whichever daemon drives the workspace next), the same workspaces."""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import postgres
import trio
from harness import Api, DaemonProcess, stray_processes, write_config

from tfward.config import Config


def created(calls: Path) -> list[str]:
    """The names of the demo things created (successfully) according to a calls log."""
    import json

    if not calls.exists():
        return []
    return [
        c["name"]
        for c in map(json.loads, calls.read_text().splitlines())
        if c["op"] == "create" and c.get("ok", True)
    ]


class Fleet:
    def __init__(
        self,
        root: Path,
        workspaces: list[dict[str, Any]],
        size: int,
        *,
        daemon: Mapping[str, Any] = {},
        url: str | None = None,
    ) -> None:
        self.url = url or postgres.fresh_database_url()
        key = root / "secret.key"
        key.write_bytes(secrets.token_bytes(32))
        key.chmod(0o600)
        self.configs: list[Config] = []
        for i in range(size):
            home = root / f"node{i}"
            home.mkdir()
            settings = {"database_url": self.url, "node_id": f"node{i}",
                        "secret_key_file": str(key), **daemon}  # fmt: skip
            self.configs.append(write_config(home, workspaces, daemon=settings))
        self.procs = [DaemonProcess(c) for c in self.configs]
        self.names = [w["name"] for w in workspaces]

    @asynccontextmanager
    async def running(self) -> AsyncIterator[trio.Nursery]:
        """A nursery for the daemons; whatever is still running at the end of the block (a
        failed test) is killed, so no daemon outlives it."""
        async with trio.open_nursery() as nursery:
            try:
                yield nursery
            finally:
                left = self.alive()
                for i in left:
                    self.procs[i].signal(signal.SIGCONT)
                    self.procs[i].signal(signal.SIGKILL)
                with trio.CancelScope(shield=True), trio.move_on_after(30):
                    for i in left:
                        await self.procs[i].wait()
                for proc in self.procs:  # what each said, for a failed test's reader
                    (proc.config.path.parent / "output.log").write_bytes(bytes(proc.output))

    def node(self, node_id: str) -> int:
        return int(node_id.removeprefix("node"))

    async def start(self, nursery: trio.Nursery, *which: int) -> None:
        for i in which or range(len(self.procs)):
            self.procs[i] = DaemonProcess(self.configs[i])
            await self.procs[i].start(nursery)

    def alive(self) -> list[int]:
        return [i for i, p in enumerate(self.procs) if p.proc is not None and p.proc.returncode
                is None]  # fmt: skip

    def api(self, i: int) -> Api:
        return Api(self.procs[i].client())

    async def cluster(self, i: int) -> dict[str, Any]:
        async with self.procs[i].client() as http:
            response = await http.get("/api/v1/cluster")
            assert response.status_code == 200, response.text
            return dict(response.json()["data"])

    async def owners(self, i: int) -> dict[str, str]:
        """Workspace -> the node that owns it, as daemon `i` answers (each exactly once)."""
        seen = await self.cluster(i)
        owners: dict[str, str] = {}
        for d in seen["daemons"]:
            for name in d["workspaces"]:
                assert name not in owners, f"{name} owned twice: {seen}"
                owners[name] = d["node_id"]
        return owners

    async def until_owned(self, i: int, among: set[str], within: float) -> dict[str, str]:
        """Until every workspace is owned by one of `among`, asked of daemon `i`; the owners."""
        with trio.fail_after(within):
            while True:
                owners = await self.owners(i)
                if set(owners) == set(self.names) and set(owners.values()) <= among:
                    return owners
                await trio.sleep(0.2)

    async def stop_all(self) -> None:
        """SIGTERM to every daemon still running; each exits 0 (a clean leave)."""
        for i in self.alive():
            self.procs[i].signal(signal.SIGTERM)
        for i in range(len(self.procs)):
            proc = self.procs[i]
            if proc.proc is not None:
                code = await proc.wait()
                assert code in (0, -signal.SIGKILL, -signal.SIGSTOP), (i, code)


async def wait_run(api: Api, run_id: str, *statuses: str, timeout: float = 120) -> dict[str, Any]:
    """Long-poll a run through any daemon (woken by other daemons' commits), in short rounds."""
    with trio.fail_after(timeout):
        while True:
            try:
                return await api.wait(run_id, *statuses, timeout=10)
            except trio.TooSlowError:
                continue


def kill_processes_of(marker: str) -> int:
    """SIGKILL every process whose command line or directory names `marker` (a run's
    terraform and providers, as when their host is lost); how many there were."""
    found = stray_processes(marker)
    for line in found:
        try:
            os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)
        except ProcessLookupError:
            continue
    return len(found)


