"""The API's streams and waits (tfward/daemon/api/streams.py, long-polls in routes_runs.py),
with a real daemon, real terraform and real HTTP: waits wake only for what they wait on, a
run's event stream resumes without loss or duplicate, streams beat, end, and fan out."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import pytest
import trio
from harness import Api, demo_workspace, running_daemon, write_config
from sqlalchemy import Connection

from tfward.config import load_config
from tfward.store import runs as run_store
from tfward.store.changes import Key, Topic


@dataclass(frozen=True)
class Sse:
    """An event (`kind`, JSON `data`, `id`), or a comment line (`kind` ":")."""

    kind: str
    data: Any = None
    id: int | None = None


class _Socket:
    """A raw HTTP/1.1 response on a socket: its head, then its chunked body's lines (a client
    that may hang up anywhere; httpx leaves generators unfinished when one does)."""

    def __init__(self, sock: trio.SocketStream) -> None:
        self.sock, self.buffer = sock, b""

    async def _fill(self) -> None:
        data = await self.sock.receive_some(65536)
        if not data:
            raise EOFError("the server closed the connection")
        self.buffer += data

    async def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            await self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    async def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            await self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    async def head(self) -> tuple[int, dict[str, str]]:
        status = int((await self.line()).split()[1])
        headers = {}
        while line := await self.line():
            name, _, value = line.decode().partition(":")
            headers[name.lower()] = value.strip()
        return status, headers


async def _events(body: _Socket) -> AsyncGenerator[Sse, None]:
    """Server-sent events from a chunked body, until its last chunk."""
    text, kind, ident, data = b"", "message", None, cast(list[str], [])
    while size := int((await body.line()).split(b";")[0], 16):
        text += await body.exactly(size)
        await body.line()
        while b"\n" in text:
            raw, text = text.split(b"\n", 1)
            line = raw.decode()
            if line.startswith(":"):
                yield Sse(":", line)
            elif not line:
                if data:
                    yield Sse(kind, json.loads("\n".join(data)), ident)
                kind, ident, data = "message", None, []
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "event":
                    kind = value
                elif name == "data":
                    data.append(value)
                elif name == "id":
                    ident = int(value)


@asynccontextmanager
async def stream(
    api: Api, path: str, headers: dict[str, str] | None = None
) -> AsyncIterator[AsyncGenerator[Sse, None]]:
    """The server-sent events of `path`, until the server closes or the block is left (the
    client hangs up)."""
    url = api.http.base_url
    assert url.host and url.port
    sent = {"Host": f"{url.host}:{url.port}", **dict(api.http.headers), **(headers or {})}
    sent.pop("accept-encoding", None)
    sock = await trio.open_tcp_stream(url.host, url.port)
    async with sock:
        request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in sent.items())
        await sock.send_all(request.encode() + b"\r\n")
        body = _Socket(sock)
        status, found = await body.head()
        assert status == 200, (status, found)
        assert found["content-type"].startswith("text/event-stream")
        assert found["transfer-encoding"] == "chunked"
        async with aclosing(_events(body)) as events:
            yield events


def _note(conn: Connection, run_id: str) -> None:
    """A commit about the run: one more warning on its row, saved as every run change is."""
    run_store.transition(conn, run_id, lambda r: replace(r, warnings=(*r.warnings, "noted")))


async def _lock(api: Api, workspace: str) -> None:
    response = await api.http.post(f"/api/v1/workspaces/{workspace}/actions/lock", json={})
    assert response.status_code == 200, response.text


async def test_a_long_poll_on_one_run_sleeps_through_a_hundred_commits_about_another(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, "a"), demo_workspace(tmp_path, "b")])
    async with running_daemon(config) as (daemon, api):
        for workspace in ("a", "b"):
            await _lock(api, workspace)  # their runs wait in the queue
        a, b = await api.create_run("a"), await api.create_run("b")
        hub, answered = daemon.store.changes, trio.Event()

        async def long_poll() -> None:
            params: dict[str, str | int] = {"wait_status": "applied", "wait_timeout": 120}
            response = await api.http.get(f"/api/v1/runs/{a['id']}", params=params, timeout=130)
            assert response.json()["data"]["status"] == "cancelled"
            answered.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(long_poll)
            with trio.fail_after(10):
                while not hub.watching(Key.run(a["id"])):
                    await trio.sleep(0.01)
            before = hub.wakeups[Topic.RUN]
            for _ in range(100):
                await daemon.store.write(lambda c: _note(c, b["id"]))
            assert hub.wakeups[Topic.RUN] == before and not answered.is_set()
            assert (await api.action(a["id"], "cancel")).status_code == 202
        assert answered.is_set() and hub.wakeups[Topic.RUN] > before


async def test_a_client_that_drops_and_resumes_with_last_event_id_gets_every_log_line_once(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=4, delay=1)])
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo", operation="plan_and_apply", auto_apply=True)
        path = f"/api/v1/runs/{run['id']}/events"
        text, offset, drops, seen = "", 0, 0, cast(list[Sse], [])
        with trio.fail_after(120):
            while not seen or seen[-1].kind != "end":
                resume = {"Last-Event-ID": str(offset)} if offset else {}
                async with stream(api, path, resume) as events:
                    async for event in events:
                        seen.append(event)
                        if event.kind == "log":
                            assert event.data["offset"] == offset
                            text, offset = text + event.data["lines"], int(event.id or 0)
                            if drops < 3 and seen[-2].kind == "run":  # the first log of it
                                drops += 1
                                break  # the client goes away mid-stream
        assert drops >= 1
        assert text == await api.logs(run["id"]) and "Apply complete!" in text
        assert seen[-1].kind == "end"  # and the stream closed after it
        last_view = [e for e in seen if e.kind == "run"][-1]
        assert last_view.data["status"] == seen[-1].data["status"] == "applied"


async def test_a_quiet_run_stream_beats_and_a_finished_run_streams_its_log_then_ends(
    tmp_path: Path,
) -> None:
    root = tmp_path
    config = write_config(
        root, [demo_workspace(root, "busy"), demo_workspace(root, "quiet")],
        daemon={"event_heartbeat": 0.2},
    )  # fmt: skip
    async with running_daemon(config) as (daemon, api):
        await _lock(api, "quiet")
        waiting = await api.create_run("quiet")
        with trio.fail_after(30):
            async with stream(api, f"/api/v1/runs/{waiting['id']}/events") as events:
                first = await anext(events)
                assert first.kind == "run" and first.data["status"] == "pending"
                assert (await anext(events)).kind == ":"  # nothing happens: a heartbeat
        done = await api.create_run("busy", operation="plan")
        await api.wait(done["id"], "planned_and_finished")
        with trio.fail_after(30):
            async with stream(api, f"/api/v1/runs/{done['id']}/events") as events:
                kinds = [event.kind async for event in events]
        assert kinds[0] == "run" and kinds[1] == "log" and kinds[-1] == "end"
        assert set(kinds) == {"run", "log", "end"} and kinds.count("run") == 1


async def test_the_workspace_stream_shows_locks_queues_and_runs_as_they_change(
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path, [demo_workspace(tmp_path, "a", things=1), demo_workspace(tmp_path, "b")]
    )
    async with running_daemon(config) as (daemon, api):
        with trio.fail_after(120):
            async with stream(api, "/api/v1/events") as events:
                first = [await anext(events), await anext(events)]
                assert [(e.kind, e.data["name"]) for e in first] == [
                    ("workspace", "a"),
                    ("workspace", "b"),
                ]
                assert first[0].data["lock"] is None and first[0].data["queued_runs"] == 0
                await _lock(api, "a")
                row = await _next_row(events, "a")
                assert row["lock"]["locked_by"] == "admin" and row["latest_run"] is None
                run = await api.create_run("a", operation="plan_and_apply", auto_apply=True)
                row = await _next_row(events, "a")
                assert row["queued_runs"] == 1 and row["latest_run"]["status"] == "pending"
                unlocked = await api.http.post("/api/v1/workspaces/a/actions/unlock", json={})
                assert unlocked.status_code == 200
                while (row := await _next_row(events, "a"))["latest_run"]["status"] != "applied":
                    assert row["latest_run"]["id"] == run["id"]
                assert row["queued_runs"] == 0 and row["current_run"] is None
                assert row["lock"] is None and row["latest_state_version"]["serial"] >= 1
                text = config.path.read_text()
                config.path.write_text(text.split('[[workspace]]\nname = "b"')[0])  # b goes
                assert await daemon.reload()
                removed = await anext(events)
                assert (removed.kind, removed.data) == ("workspace_removed", {"name": "b"})
        assert load_config(config.path).workspace("a")


async def _next_row(events: AsyncGenerator[Sse, None], name: str) -> dict[str, Any]:
    """The next `workspace` event about `name` (comments and other workspaces skipped)."""
    async for event in events:
        if event.kind == "workspace" and event.data["name"] == name:
            return dict(event.data)
    raise AssertionError("the stream ended")


async def test_twenty_followers_of_a_run_cost_about_what_one_costs_in_store_reads(
    tmp_path: Path,
) -> None:
    root = tmp_path
    workspaces = [demo_workspace(root, name, things=6, delay=1) for name in ("alone", "watched")]
    config = write_config(root, workspaces)
    async with running_daemon(config) as (daemon, api):
        before = daemon.store.reads
        alone = await api.create_run("alone", operation="plan_and_apply", auto_apply=True)
        await api.wait(alone["id"], "applied")
        unwatched = daemon.store.reads - before

        received: list[int] = []
        before = daemon.store.reads
        watched = await api.create_run("watched", operation="plan_and_apply", auto_apply=True)

        async def follow() -> None:
            count, text = 0, ""
            async with stream(api, f"/api/v1/runs/{watched['id']}/events") as events:
                async for event in events:
                    if event.kind == "log":
                        count, text = count + 1, text + event.data["lines"]
            assert "Apply complete!" in text
            received.append(count)

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(follow)
                await api.wait(watched["id"], "applied")
        extra = daemon.store.reads - before - unwatched
        # Reading the store for each follower's wake-ups would cost at least one read per log
        # event a follower received; the log comes from memory and a run's view once per change.
        assert len(received) == 20 and sum(received) >= 20 * 3
        assert extra < sum(received) / 2, (extra, received)


async def test_a_stream_refuses_a_bad_last_event_id_and_an_unknown_run(tmp_path: Path) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path)])
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo", operation="plan")
        for value in ("-1", "abc", "1" * 19, "1.5", "12a"):
            response = await api.http.get(
                f"/api/v1/runs/{run['id']}/events", headers={"Last-Event-ID": value}
            )
            assert response.status_code == 422, value
            assert "Last-Event-ID" in response.json()["error"]["message"]
        assert (await api.http.get("/api/v1/runs/run-nope/events")).status_code == 404
        response = await api.http.get("/api/v1/events", params={"follow": "true"})
        assert response.status_code == 422 and "'follow'" in response.text


@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/runs/{run}/events"])
async def test_streams_end_when_the_daemon_shuts_down(tmp_path: Path, path: str) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path)])
    async with running_daemon(config, shutdown=False) as (daemon, api):
        await _lock(api, "demo")
        run = await api.create_run("demo")
        with trio.fail_after(60):
            async with stream(api, path.format(run=run["id"])) as events:
                assert (await anext(events)).kind in ("run", "workspace")
                daemon.request_shutdown("test")
                kinds = [event.kind async for event in events]
        assert "end" not in kinds  # ended by the daemon, not by the run
