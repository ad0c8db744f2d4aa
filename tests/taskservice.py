"""A run-task service for the tests: a real HTTP server on loopback (a bare ASGI app on
Hypercorn), behaving like a third-party HCP run-task integration.

For every request it checks `X-TFC-Task-Signature` over the raw body bytes, records the
request, answers, and then acts as told for that task name:
    passed / failed        fetch the plan JSON with the token (when offered), call back
    running_then_passed    call back `running` twice, 0.5 s apart, then `passed`
    never                  answer 200 and never call back
    error                  answer 500 (a delivery failure)
    barrier:N              answer only once N requests have arrived (proves concurrency)
`write_task_config` writes a tfward config with `[[run_task]]` tables and a fixed daemon port,
so `public_url` (and so the callback URLs) point at the daemon.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import loopback
import trio
from harness import PROVIDER_DIR, toml_value

from tfward.config import Config, load_config
from tfward.runtasks.delivery import SIGNATURE_HEADER

HMAC_KEY = "test-hmac-key-for-run-tasks"


@dataclass
class Received:
    task: str
    raw: bytes
    headers: dict[str, str]
    payload: dict[str, Any]
    signature_ok: bool

    @property
    def token(self) -> str:
        return str(self.payload["access_token"])


@dataclass
class TaskService:
    hmac_key: str = HMAC_KEY
    behaviour: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    callbacks: list[tuple[str, str, int]] = field(default_factory=list)  # task, status, answer
    plan_fetches: list[tuple[str, int]] = field(default_factory=list)
    run_stages: list[tuple[str, str | None]] = field(default_factory=list)  # payload, run stage
    # An API token's header: with it, each request's run is read to record its stage.
    api_headers: dict[str, str] = field(default_factory=dict)
    url: str = ""
    _changed: trio.Event = field(default_factory=trio.Event)
    _nursery: trio.Nursery | None = None

    def task_url(self, name: str) -> str:
        return f"{self.url}/task/{name}"

    async def serve(self, *, task_status: trio.TaskStatus[TaskService]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.url = (await nursery.start(loopback.serve, self._app, 0.5))[0]
            task_status.started(self)

    async def wait_for(self, count: int, seconds: float = 60) -> list[Received]:
        """Until `count` requests have arrived (at most `seconds`)."""
        with trio.fail_after(seconds):
            while len(self.received) < count:
                await self._changed.wait()
        return self.received

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # ---- the ASGI app ---------------------------------------------------------------------

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        raw = await loopback.request_body(scope, receive, send)
        if raw is None:
            return
        name = scope["path"].rsplit("/", 1)[-1]
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        expected = hmac.new(self.hmac_key.encode(), raw, hashlib.sha512).hexdigest()
        got = headers.get(SIGNATURE_HEADER.lower(), "")
        received = Received(name, raw, headers, json.loads(raw), hmac.compare_digest(got, expected))
        self.received.append(received)
        self._poke()
        behaviour = self.behaviour.get(name, "passed")
        status = 200
        if behaviour == "error":
            status = 500
        elif behaviour.startswith("barrier:"):
            with trio.move_on_after(10):
                await self.wait_for(int(behaviour.split(":")[1]), seconds=10)
            status = 200 if len(self.received) >= int(behaviour.split(":")[1]) else 500
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        if status == 200 and behaviour != "never" and self._nursery is not None:
            self._nursery.start_soon(self._act, received, behaviour)

    async def _act(self, received: Received, behaviour: str) -> None:
        payload = received.payload
        auth = {"Authorization": f"Bearer {received.token}"}
        async with httpx.AsyncClient(timeout=10) as client:
            if self.api_headers:
                got = await client.get(payload["run_app_url"], headers=self.api_headers)
                self.run_stages.append((payload["stage"], got.json()["data"]["stage"]))
            if "plan_json_api_url" in payload:
                response = await client.get(payload["plan_json_api_url"], headers=auth)
                self.plan_fetches.append((received.task, response.status_code))
            steps = {
                "passed": ["passed"],
                "failed": ["failed"],
                "running_then_passed": ["running", "running", "passed"],
            }.get(behaviour.split(":")[0], ["passed"])
            for i, status in enumerate(steps):
                if i:
                    await trio.sleep(0.5)
                response = await client.patch(
                    payload["task_result_callback_url"],
                    headers=auth,
                    json=callback_body(status, f"{received.task} says {status}"),
                )
                self.callbacks.append((received.task, status, response.status_code))
                self._poke()


def callback_body(
    status: str, message: str = "", outcomes: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    outcomes = (
        outcomes
        if outcomes is not None
        else [
            {
                "type": "task-result-outcomes",
                "attributes": {
                    "outcome-id": "ID-1",
                    "description": "one finding",
                    "body": "# details",
                    "url": "https://scanner.example/ID-1",
                    "tags": {"severity": [{"label": "High", "level": "error"}]},
                },
            }
        ]
    )
    return {
        "data": {
            "type": "task-results",
            "attributes": {"status": status, "message": message, "url": "https://scanner.example"},
            "relationships": {"outcomes": {"data": outcomes}},
        }
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_url() -> str:
    """An http URL nothing listens on: connections are refused at once."""
    return f"http://127.0.0.1:{free_port()}/task/down"


def _table(name: str, values: Mapping[str, Any]) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())


def write_task_config(
    root: Path,
    workspaces: list[dict[str, Any]],
    tasks: list[dict[str, Any]],
    *,
    daemon: Mapping[str, Any] = {},
    terraform: Mapping[str, Any] = {},
) -> Config:
    """Like harness.write_config, plus `[[run_task]]` tables; the daemon listens on a fixed
    free port so that `public_url` is where task services can reach it."""
    port = free_port()
    d = {
        "listen": f"127.0.0.1:{port}",
        "public_url": f"http://127.0.0.1:{port}",
        "data_dir": "data",
        "organization": "tests",
        **daemon,
    }
    t = {
        "dev_overrides": {"example.com/tfward/demo": str(PROVIDER_DIR)},
        "cancel_grace": "10s",
        **terraform,
    }
    text = _table("daemon", d) + "\n" + _table("terraform", t)
    for task in tasks:
        text += "\n" + _table("[run_task]", task)
    for ws in workspaces:
        text += "\n" + _table("[workspace]", ws)
    path = root / "tfward.toml"
    path.write_text(text)
    return load_config(path)


def task_table(service: TaskService, name: str, **settings: Any) -> dict[str, Any]:
    """A `[[run_task]]` table for task `name` of `service` (2 s timeout, one retry)."""
    return {
        "name": name,
        "url": service.task_url(name),
        "hmac_key": service.hmac_key,
        "timeout": "2s",
        "retries": 1,
        **settings,
    }
