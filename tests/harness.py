"""Test harness: real config files, a real daemon on loopback, real terraform.

`write_config` writes a TOML file the way an operator would; `running_daemon` starts the real
`Daemon` in the test's trio loop (real SQLite file, real Hypercorn on 127.0.0.1:0) and yields an
httpx client for its API, authenticated with the local admin token the daemon created.
Waiting uses the API's long-poll (`wait_status`), not sleeps.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import postgres
import trio

from tfward.actors.runtime import FaultInjector
from tfward.config import Config, load_config
from tfward.daemon.service import Daemon
from tfward.store.changes import Key, Subscription, Topic
from tfward.store.db import Store

REPO = Path(__file__).resolve().parents[1]
PROVIDER_DIR = REPO / "examples" / "provider"
DEMO_WORKSPACE = REPO / "examples" / "workspaces" / "demo"
FAKE_TERRAFORM = REPO / "tests" / "fakes" / "fake_terraform.py"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    raise TypeError(f"cannot write {value!r} as TOML")


def _table(name: str, values: Mapping[str, Any]) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())


def write_config(
    root: Path,
    workspaces: list[dict[str, Any]],
    *,
    daemon: Mapping[str, Any] = {},
    terraform: Mapping[str, Any] = {},
) -> Config:
    """Write `root/tfward.toml` (data in `root/data`, port chosen by the OS) and load it. The
    database is a SQLite file in the data dir, or a fresh PostgreSQL database under
    `TFWARD_TEST_DATABASE=postgresql` (tests/postgres.py), unless `daemon` names one."""
    # A small disk reserve: a test starts many daemons (the 64 MB default is for a host).
    d = {
        "listen": "127.0.0.1:0",
        "data_dir": "data",
        "organization": "tests",
        "disk_reserve_mb": 4,
        **daemon,
    }
    if "database_url" not in d and postgres.selected() == "postgresql":
        d["database_url"] = postgres.fresh_database_url()
    t = {
        "dev_overrides": {"example.com/tfward/demo": str(PROVIDER_DIR)},
        "cancel_grace": "10s",
        **terraform,
    }
    text = _table("daemon", d) + "\n" + _table("terraform", t)
    for ws in workspaces:
        text += "\n" + _table("[workspace]", ws)
    path = root / "tfward.toml"
    path.write_text(text)
    return load_config(path)


def demo_workspace(
    root: Path,
    name: str = "demo",
    *,
    things: int = 2,
    delay: float = 0,
    extra_tf: str = "",
    **settings: Any,
) -> dict[str, Any]:
    """A copy of the example demo workspace under `root/<name>`, its backing store in
    `root/<name>-store`; returns the `[[workspace]]` table."""
    source = root / name
    shutil.copytree(DEMO_WORKSPACE, source)
    if extra_tf:
        (source / "extra.tf").write_text(extra_tf)
    store = root / f"{name}-store"
    store.mkdir()
    table: dict[str, Any] = {
        "name": name,
        "source": str(source),
        "vars": {"prefix": name, "things": things, "delay": delay, **settings.pop("vars", {})},
        "env": {
            "TFWARD_DEMO_STORE_DIR": str(store),
            "TFWARD_DEMO_CALLS_LOG": str(root / f"{name}-calls.jsonl"),
        },
    }
    table.update(settings)
    return table


class Api:
    """The daemon's HTTP API, as a client sees it."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.http = client

    async def create_run(self, workspace: str, **body: Any) -> dict[str, Any]:
        response = await self.http.post(f"/api/v1/workspaces/{workspace}/runs", json=body)
        assert response.status_code == 201, response.text
        return response.json()["data"]

    async def run(self, run_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/api/v1/runs/{run_id}")
        assert response.status_code == 200, response.text
        return response.json()["data"]

    async def wait(self, run_id: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
        """Long-poll until the run is in one of `statuses` (or terminal)."""
        with trio.fail_after(timeout + 5):
            while True:
                # The API waits 300 s at most per request (more is 422); the loop goes on.
                params: dict[str, Any] = {"wait_timeout": min(timeout, 300)}
                if statuses:  # an empty wait_status is refused (422): no statuses, no wait
                    params["wait_status"] = ",".join(statuses)
                response = await self.http.get(
                    f"/api/v1/runs/{run_id}", params=params, timeout=timeout + 5
                )
                run = response.json()["data"]
                if run["status"] in statuses or not statuses:
                    return run
                if run["timestamps"]["finished_at"]:
                    raise AssertionError(
                        f"run ended {run['status']} ({run['error_kind']}: "
                        f"{run['error_message']}), wanted {statuses}"
                    )

    async def plan_json(self, run_id: str, timeout: float = 60) -> Any:
        """The run's plan JSON (None: the document `null`), waiting for it: an auto-applied run
        that nothing reviewed gets it after it ended (tfward/actors/planjson.py)."""
        with trio.fail_after(timeout):
            while True:
                response = await self.http.get(f"/api/v1/runs/{run_id}/plan")
                if response.status_code == 200:
                    return response.json()
                assert response.status_code == 404 and "no plan JSON yet" in response.text, (
                    response.status_code, response.text,
                )  # fmt: skip
                await trio.sleep(0.02)

    async def wait_stage(self, run_id: str, stage: str, timeout: float = 60) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while True:
                run = await self.run(run_id)
                if run["stage"] == stage:
                    return run
                if run["timestamps"]["finished_at"]:
                    raise AssertionError(f"run ended {run['status']} before stage {stage}")
                await trio.sleep(0.05)

    async def action(self, run_id: str, action: str, **body: Any) -> httpx.Response:
        return await self.http.post(f"/api/v1/runs/{run_id}/actions/{action}", json=body or None)

    async def logs(self, run_id: str) -> str:
        response = await self.http.get(f"/api/v1/runs/{run_id}/logs")
        assert response.status_code == 200, response.text
        return response.text

    async def workspace(self, name: str) -> dict[str, Any]:
        response = await self.http.get(f"/api/v1/workspaces/{name}")
        assert response.status_code == 200, response.text
        return response.json()["data"]

    async def state_versions(self, name: str) -> list[dict[str, Any]]:
        response = await self.http.get(f"/api/v1/workspaces/{name}/state-versions")
        assert response.status_code == 200, response.text
        return response.json()["data"]


@asynccontextmanager
async def running_daemon(
    config: Config, *, faults: FaultInjector | None = None, shutdown: bool = True
) -> AsyncIterator[tuple[Daemon, Api]]:
    """Start the daemon in this trio loop; on exit shut it down gracefully (or the test did).
    A test may read the stopped daemon's store afterwards (`facts`): that opens its engine
    again, and the test's teardown closes it (`close_stopped_stores`)."""
    daemon = Daemon(config, faults=faults)
    STOPPED_STORES.append(daemon.store)
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.serve)
        async with httpx.AsyncClient(
            base_url=daemon.addresses[0], headers=admin_headers(config), timeout=30
        ) as client:
            yield daemon, Api(client)
        if shutdown:
            daemon.request_shutdown("test finished")


STOPPED_STORES: list[Store] = []


def close_stopped_stores() -> None:
    """Close the stores of this test's daemons again: a read after the daemon stopped opened
    a connection pool that nothing else closes (PostgreSQL's connections would be left to the
    garbage collector, which warns)."""
    while STOPPED_STORES:
        STOPPED_STORES.pop().close()


ROLES = ("read", "plan", "apply", "admin")
TOKENS = {role: f"tfw_test-{role}-token" for role in ROLES}


def with_tokens(config: Config, **roles: str) -> Config:
    """The config with one `[[api_token]]` per name=role (the token: `token_for(name, role)`)."""
    from tfward.config.tokens import token_sha256

    text = config.path.read_text()
    for name, role in roles.items():
        digest = token_sha256(token_for(name, role))
        text += f'\n[[api_token]]\nname = "{name}"\nrole = "{role}"\nsha256 = "{digest}"\n'
    config.path.write_text(text)
    return load_config(config.path)


def token_for(name: str, role: str) -> str:
    return f"{TOKENS[role]}-{name}"


def bearer(name: str, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(name, role)}"}


def admin_token(config: Config) -> str:
    """The local admin token the daemon creates at first start (no `[[api_token]]` set)."""
    return (config.daemon.data_dir / "admin.token").read_text().strip()


def admin_headers(config: Config) -> dict[str, str]:
    """Headers for the local admin token; none when the config names its own tokens."""
    if config.api_tokens:
        return {}
    return {"Authorization": f"Bearer {admin_token(config)}"}


def processes_in_group(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stray_processes(marker: str) -> list[str]:
    """Live processes (not zombies) whose command line or working directory contains `marker`
    (terraform and its providers run in the run directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(proc / "cwd")
            status = (proc / "status").read_text()
        except OSError:
            continue
        if (marker in cmdline or marker in cwd) and "State:\tZ" not in status:
            found.append(f"{proc.name}: {cmdline} (in {cwd})")
    return found


def any_change(store: Store) -> AbstractContextManager[Subscription]:
    """A subscription to every change the store publishes (store/changes.py): what a test
    waits on where it cannot name the one key it expects. Take it before reading."""
    return store.changes.subscribe(*(Key.every(topic) for topic in Topic))


async def until(daemon: Daemon, check: Any, within: float = 90) -> Any:
    """Until the async `check()` returns something truthy, woken by the daemon's commits."""
    with trio.fail_after(within), any_change(daemon.store) as changed:
        while True:
            value = await check()
            if value:
                return value
            with trio.move_on_after(0.5):
                await changed.wait()


async def facts(daemon: Daemon, run_id: str) -> dict[str, Any]:
    """Everything the termination contract speaks of, read from the daemon's own store."""
    from tfward.store import artifacts, states
    from tfward.store import outbox as outbox_store
    from tfward.store import runs as run_store
    from tfward.store import workspaces as ws_store

    def load(conn: Any) -> dict[str, Any]:
        run = run_store.get_run(conn, run_id)
        ws_id = run_store.workspace_id_of(conn, run_id)
        return {
            "run": run,
            "log": b"".join(d for _, d in artifacts.read_log(conn, run_id)).decode(),
            "lock": ws_store.get_lock(conn, ws_id),
            "outbox": outbox_store.list_rows(conn, run_id=run_id, limit=None),
            "states": states.list_versions(conn, ws_id),
        }

    found = await daemon.store.read(load)
    found["dir_exists"] = (daemon.config.daemon.data_dir / "runs" / run_id).exists()
    found["triggers"] = [
        row["payload"]["trigger"] for row in found["outbox"] if row["kind"] == "notify"
    ]
    return found


def state_addresses(daemon: Daemon, sv_id: str) -> list[str]:
    from tfward.store import states

    doc = json.loads(daemon.store.run_sync(lambda c: states.get_raw(c, sv_id)))
    return sorted(
        f"{r['type']}.{r['name']}" + (f"[{i['index_key']}]" if "index_key" in i else "")
        for r in doc.get("resources", [])
        for i in r.get("instances", [])
    )


class DaemonProcess:
    """The daemon as a real process (`tfward serve`), for signals and kill -9."""

    def __init__(self, config: Config, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        # The package of this checkout, whatever the working directory (a bench runs anywhere).
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        self.env = {**os.environ, "PYTHONPATH": path, **(env or {})}
        self.proc: trio.Process | None = None
        self.url = ""
        self.output = bytearray()

    async def start(self, nursery: trio.Nursery) -> None:
        """Start it and return once it listens (it logs the address after recovery)."""
        import subprocess
        import sys

        self.output = bytearray()
        self.proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "tfward.cli.main", "serve", str(self.config.path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        listening = trio.Event()
        nursery.start_soon(self._drain, listening)
        with trio.fail_after(60):
            await listening.wait()

    async def _drain(self, listening: trio.Event) -> None:
        # The daemon logs JSON lines to stdout (stderr is merged in for tracebacks).
        assert self.proc is not None and self.proc.stdout is not None
        try:
            async with self.proc.stdout:
                while chunk := await self.proc.stdout.receive_some(65536):
                    self.output += chunk
                    marker = b"tfward listening on "
                    if not listening.is_set() and marker in self.output:
                        tail = self.output[self.output.index(marker) + len(marker) :]
                        if b"\n" in tail:
                            self.url = re.split(rb'[",\s]', tail)[0].decode()
                            listening.set()
        except trio.Cancelled:
            # The test ended with the daemon running (it failed, or timed out): no daemon
            # outlives it. Stopped as an operator would (its terraform with it), else killed.
            with trio.CancelScope(shield=True):
                await self._stop_left_over()
            raise

    async def _stop_left_over(self) -> None:
        assert self.proc is not None
        if self.proc.returncode is not None:
            return
        self.proc.terminate()
        with trio.move_on_after(15):
            await self.proc.wait()
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers=admin_headers(self.config), timeout=30
        )

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait(self, timeout: float = 120) -> int:
        assert self.proc is not None
        with trio.fail_after(timeout):
            return await self.proc.wait()


def open_store(config: Config) -> Any:
    """The daemon's database, opened the way the daemon opens it (for after it stopped)."""
    from tfward.runtasks.keys import load_keys
    from tfward.store.db import Store
    from tfward.store.sealing import Sealer

    return Store(config.daemon.database_url, sealer=Sealer(load_keys(config.daemon).encryption))


def chained_things(count: int, delay: float) -> str:
    """`count` demo_things created one after another (each depends on the previous)."""
    blocks = []
    for i in range(count):
        depends = f"\n  depends_on = [demo_thing.chain{i - 1}]" if i else ""
        blocks.append(
            f'resource "demo_thing" "chain{i}" {{\n  name  = "chain-{i}"\n'
            f"  delay = {delay}{depends}\n}}\n"
        )
    return "\n".join(blocks)


def create_demo_run(conn: Any, operation: str = "plan") -> str:
    """A run of a workspace `demo` created straight in the store (the workspace is made
    configured first); its id. For store and run-log tests without a daemon."""
    from tfward.runs.model import Operation
    from tfward.store import runs as run_store
    from tfward.store import workspaces as ws_store

    ws_id = ws_store.sync_configured(conn, ["demo"])["demo"]
    return run_store.create_run(
        conn,
        workspace_id=ws_id,
        workspace_name="demo",
        operation=Operation(operation),
        auto_apply=False,
    ).id
