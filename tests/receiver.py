"""A notification receiver for the tests: a real HTTP server on loopback (a bare ASGI app on
Hypercorn), scripted to fail N times then succeed, answer 500 forever, answer slowly, hang, or
check `X-TFE-Notification-Signature`.

`followups_config` writes a tfward config with `[[notification]]` destinations and `[outbox]`
settings on top of the harness's `write_config`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import loopback
import trio
from harness import any_change, open_store, toml_value, write_config
from sqlalchemy import Connection

from tfward.actors.runtime import Runtime
from tfward.config import Config, load_config
from tfward.outbox.worker import OutboxWorker
from tfward.store import workspaces as ws_store
from tfward.store.db import Store

T = TypeVar("T")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    raw: bytes
    at: float  # trio.current_time() when it arrived
    answered: int | None = None

    @property
    def payload(self) -> Any:
        return json.loads(self.raw)

    @property
    def trigger(self) -> str:
        return str(self.payload["notifications"][0]["trigger"])

    def signature_ok(self, token: str) -> bool:
        want = hmac.new(token.encode(), self.raw, hashlib.sha512).hexdigest()
        return hmac.compare_digest(self.headers.get("x-tfe-notification-signature", ""), want)


@dataclass
class Receiver:
    """Answers `fail_first` requests with 503, then `status`; each answer after `delay`
    seconds; `hang` never answers. With `token`, a bad signature is answered 401."""

    fail_first: int = 0
    status: int = 200
    delay: float = 0.0
    hang: bool = False
    token: str | None = None
    received: list[Received] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    url: str = ""
    _changed: trio.Event = field(default_factory=trio.Event)

    async def serve(self, *, task_status: trio.TaskStatus[Receiver]) -> None:
        async with trio.open_nursery() as nursery:
            self.url = (await nursery.start(loopback.serve, self._app))[0]
            task_status.started(self)

    def at(self, path: str) -> str:
        return f"{self.url}{path}"

    def answered_ok(self) -> list[Received]:
        return [r for r in self.received if r.answered is not None and 200 <= r.answered < 300]

    async def wait_until(self, done: Callable[[Receiver], bool], within: float = 30) -> None:
        with trio.fail_after(within):
            while not done(self):
                changed = self._changed
                await changed.wait()

    async def wait_for_ok(self, count: int, within: float = 30) -> list[Received]:
        await self.wait_until(lambda r: len(r.answered_ok()) >= count, within)
        return self.answered_ok()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = await loopback.request_body(scope, receive, send)
        if body is None:
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        request = Received(scope["path"], headers, body, trio.current_time())
        self.received.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self._notify()
        try:
            if self.hang:
                await trio.sleep_forever()
            if self.delay:
                await trio.sleep(self.delay)
            failed_before = sum(1 for r in self.received[:-1] if r.answered == 503)
            status = 503 if failed_before < self.fail_first else self.status
            if self.token is not None and not request.signature_ok(self.token):
                status = 401
        finally:
            self.in_flight -= 1
        request.answered = status
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})
        self._notify()


@asynccontextmanager
async def serving(*receivers: Receiver) -> AsyncIterator[None]:
    """Serve the receivers for the duration of the block."""
    async with trio.open_nursery() as nursery:
        for receiver in receivers:
            await nursery.start(receiver.serve)
        yield
        nursery.cancel_scope.cancel()


def followups_config(
    root: Path,
    workspaces: list[dict[str, Any]],
    notifications: Sequence[Mapping[str, Any]] = (),
    outbox: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Config:
    """`harness.write_config`, plus `[[notification]]` tables and an `[outbox]` table."""
    config = write_config(root, [], **kwargs)
    text = config.path.read_text()
    for ws in workspaces:
        text += "\n" + _table("[[workspace]]", ws)
    for destination in notifications:
        text += "\n" + _table("[[notification]]", destination)
    if outbox:
        text += "\n" + _table("[outbox]", outbox)
    config.path.write_text(text)
    return load_config(config.path)


def _table(header: str, values: Mapping[str, Any]) -> str:
    return header + "\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())


# ---- the outbox worker without a daemon -------------------------------------------------------


@dataclass
class Told:
    """A stand-in for the supervisor: records what the worker tells workspace actors."""

    messages: list[tuple[str, Any]] = field(default_factory=list)

    def tell(self, workspace: str, msg: Any) -> None:
        self.messages.append((workspace, msg))

    def owns(self, workspace: str) -> bool:
        return True  # one daemon: it drives every workspace


@dataclass
class WorkerEnv:
    store: Store
    rt: Runtime
    told: Told
    nursery: trio.Nursery

    async def start_worker(self, **kwargs: Any) -> OutboxWorker:
        worker = OutboxWorker(self.rt, self.told, **kwargs)
        await self.nursery.start(worker.run)
        return worker

    async def until(self, check: Callable[[Connection], T | None], within: float = 30) -> T:
        """Until `check` (run in a read transaction) returns something truthy; waits on the
        store's commits in between, so no polling interval is needed."""
        with trio.fail_after(within), any_change(self.store) as changed:
            while True:
                value = await self.store.read(check)
                if value:
                    return value
                with trio.move_on_after(0.5):  # time alone (a lease running out) commits nothing
                    await changed.wait()


@asynccontextmanager
async def worker_env(config: Config) -> AsyncIterator[WorkerEnv]:
    """A migrated store with the config's workspaces, a Runtime, and a nursery for workers
    (`env.start_worker()`); everything is stopped at the end of the block."""
    config.daemon.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(config)
    store.migrate()
    names = [ws.name for ws in config.workspaces]
    ws_ids = store.run_sync(lambda c: ws_store.sync_configured(c, names))
    rt = Runtime(config, store, ws_ids)
    try:
        async with trio.open_nursery() as nursery:
            yield WorkerEnv(store, rt, Told(), nursery)
            nursery.cancel_scope.cancel()
    finally:
        store.close()
