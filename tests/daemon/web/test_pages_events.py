"""The web page's live updates (web/pages_events.py) over real HTTP: the API's event streams
for a session, resumed from the offset the page shows, refused without a session, ended with
it."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import trio
from harness import bearer, demo_workspace, running_daemon, token_for, with_tokens, write_config
from pages import Event, events, page_csrf, session

from tfward.config import Config


@pytest.fixture
def config(tmp_path: Path) -> Config:
    found = write_config(
        tmp_path, [demo_workspace(tmp_path, things=2)], daemon={"event_heartbeat": 0.2}
    )
    return with_tokens(found, ann="admin", reader="read")


async def _until_end(web: httpx.AsyncClient, path: str, **headers: str) -> list[Event]:
    """Every event of the stream at `path` (heartbeats left out) until the server ends it."""
    found: list[Event] = []
    with trio.fail_after(30):
        async with web.stream("GET", path, headers=headers) as answer:
            assert answer.status_code == 200, await answer.aread()
            assert answer.headers["content-type"].startswith("text/event-stream")
            found = [e async for e in events(answer) if e.kind != ":"]
    return found


async def test_a_run_pages_stream_starts_after_the_log_the_page_shows(config: Config) -> None:
    async with running_daemon(config) as (daemon, api):
        api.http.headers.update(bearer("ann", "admin"))
        run = await api.create_run("demo", operation="plan")
        await api.wait(run["id"], "planned_and_finished")
        whole = await api.logs(run["id"])
        async with session(daemon, token_for("reader", "read")) as web:
            page = (await web.get(f"/runs/{run['id']}")).text
            shown = int(re.findall(r'id="log" data-offset="(\d+)"', page)[0])
            assert shown == len(whole.encode())
            caught_up = await _until_end(web, f"/runs/{run['id']}/events?after={shown}")
            from_start = await _until_end(web, f"/runs/{run['id']}/events")
            resumed = await _until_end(
                web, f"/runs/{run['id']}/events?after=0", **{"Last-Event-ID": "10"}
            )
    assert [e.kind for e in caught_up] == ["run", "end"]
    assert caught_up[0].data["status"] == caught_up[1].data["status"] == "planned_and_finished"
    logged = [e for e in from_start if e.kind == "log"]
    assert "".join(e.data["lines"] for e in logged) == whole
    assert logged[-1].id == str(shown)
    assert [e for e in resumed if e.kind == "log"][0].data["offset"] == 10


async def test_streams_need_a_session_a_known_run_and_known_parameters(config: Config) -> None:
    async with running_daemon(config) as (daemon, api):
        api.http.headers.update(bearer("ann", "admin"))
        run = await api.create_run("demo", operation="plan")
        async with httpx.AsyncClient(base_url=daemon.addresses[0]) as stranger:
            for path in (f"/runs/{run['id']}/events", "/events"):
                assert (await stranger.get(path)).status_code == 401, path
        async with session(daemon, token_for("reader", "read")) as web:
            assert (await web.get("/runs/run-unknown/events")).status_code == 404
            assert (await web.get(f"/runs/{run['id']}/events?after=-1")).status_code == 422
            assert (await web.get("/events?since=1")).status_code == 422
        await api.wait(run["id"], "planned_and_finished")


async def test_a_stream_ends_when_its_session_ends_and_cannot_reconnect(config: Config) -> None:
    async with running_daemon(config) as (daemon, _):
        async with session(daemon, token_for("reader", "read")) as web:
            csrf = await page_csrf(web)
            cookies = dict(web.cookies)
            with trio.fail_after(30):
                async with web.stream("GET", "/events") as answer:
                    stream = events(answer)
                    first = await anext(stream)
                    assert (first.kind, first.data["name"]) == ("workspace", "demo")
                    assert (await anext(stream)).kind == ":"  # quiet: a heartbeat
                    signed_out = await web.post("/logout", data={"csrf": csrf})
                    assert signed_out.status_code == 303
                    rest = [e async for e in stream]  # the server ends the stream
            assert all(e.kind == ":" for e in rest)
        async with httpx.AsyncClient(base_url=daemon.addresses[0], cookies=cookies) as old:
            assert (await old.get("/events")).status_code == 401
