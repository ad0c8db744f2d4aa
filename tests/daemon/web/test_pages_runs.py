"""A run's page (web/pages_runs.py), over HTTP: a real plan and apply confirmed from it, what
it shows (timeline, plan, run tasks, who did what), a 50 MB log sent as its tail, and the
buttons each role gets."""

from __future__ import annotations

import functools
import re
from datetime import timedelta
from pathlib import Path

import pytest
from harness import (
    bearer,
    demo_workspace,
    running_daemon,
    token_for,
    with_tokens,
    write_config,
)
from pages import message_of, page_csrf, session
from sqlalchemy import Connection

from tfward.config import Config
from tfward.daemon.service import Daemon
from tfward.daemon.web.pages_runs import LOG_TAIL
from tfward.ids import new_id, now
from tfward.runs.model import Operation, Run
from tfward.store import artifacts, tasks
from tfward.store import runs as run_store
from tfward.store import workspaces as ws_store


@pytest.fixture
def config(tmp_path: Path) -> Config:
    base = write_config(tmp_path, [demo_workspace(tmp_path, things=2)])
    return with_tokens(base, ann="admin", alice="apply", reader="read")


def buttons(html: str) -> set[str]:
    """The run actions the page offers now (forms not hidden)."""
    return {
        m[1] for m in re.finditer(r'<form [^>]*data-action="([^"]+)"(?![^>]*hidden)[^>]*>', html)
    }


async def test_a_plan_confirmed_on_its_page_applies_and_the_page_tells_its_story(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, api):
        api.http.headers.update(bearer("ann", "admin"))
        async with session(daemon, token_for("alice", "apply")) as web:
            csrf = await page_csrf(web, "/workspaces/demo")
            form = {"csrf": csrf, "operation": "plan_and_apply", "message": "<b>bold</b> move"}
            started = await web.post("/workspaces/demo/runs", data=form)
            run_id = started.headers["location"].removeprefix("/runs/")
            await api.wait(run_id, "apply_pending")
            page = (await web.get(f"/runs/{run_id}")).text
            assert buttons(page) == {"confirm", "discard"}
            assert "demo_thing.this[0]" in page and "demo_thing.this[1]" in page
            assert "&lt;b&gt;bold&lt;/b&gt; move" in page
            confirmed = await web.post(f"/runs/{run_id}/actions/confirm", data={"csrf": csrf})
            assert confirmed.status_code == 303
            await api.wait(run_id, "applied")
            page = (await web.get(f"/runs/{run_id}")).text
            again = await web.post(f"/runs/{run_id}/actions/cancel", data={"csrf": csrf})
            assert again.status_code == 409 and "it is applied" in message_of(again)
    assert buttons(page) == set()
    assert re.search(r'id="created-by">alice<', page) and re.search(
        r'id="confirmed-by">alice<', page
    )
    steps = re.findall(r'<span class="what">([^<]+)</span>', page)
    assert steps[:4] == ["pending", "fetching", "init", "planning"]
    assert {"apply pending", "restoring plan", "applying", "saving state"} <= set(steps)
    assert steps[-1] == "applied"
    assert "run finished: applied" in page  # the log


async def test_a_read_session_gets_no_run_buttons_and_an_apply_session_no_force_cancel(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, api):
        api.http.headers.update(bearer("ann", "admin"))
        await api.http.post("/api/v1/workspaces/demo/actions/lock")  # the run waits, pending
        run = await api.create_run("demo")
        async with session(daemon, token_for("reader", "read")) as web:
            page = (await web.get(f"/runs/{run['id']}")).text
            csrf = await page_csrf(web, f"/runs/{run['id']}")
            assert 'data-action="' not in page
            refused = await web.post(f"/runs/{run['id']}/actions/cancel", data={"csrf": csrf})
            assert refused.status_code == 403
        assert (await api.run(run["id"]))["status"] == "pending"
        async with session(daemon, token_for("alice", "apply")) as web:
            page = (await web.get(f"/runs/{run['id']}")).text
            assert buttons(page) == {"cancel"}
            assert 'data-action="force-cancel"' not in page
        async with session(daemon, token_for("ann", "admin")) as web:
            page = (await web.get(f"/runs/{run['id']}")).text
            assert 'data-action="force-cancel"' in page  # there, hidden until a cancel
            assert buttons(page) == {"cancel"}


def _run_with_log(daemon: Daemon, megabytes: int) -> tuple[str, bytes, bytes]:
    """A run whose stored log holds `megabytes` MB of numbered lines; its first and last."""

    def tx(conn: object) -> Run:
        ws_id = ws_store.workspace_id(conn, "demo")  # type: ignore[arg-type]
        return run_store.create_run(
            conn,  # type: ignore[arg-type]
            workspace_id=ws_id,
            workspace_name="demo",
            operation=Operation.PLAN,
            auto_apply=False,
        )

    run = daemon.store.run_sync(tx)
    line = b"%08d " + b"x" * 90 + b"\n"
    per_chunk = (1 << 20) // len(line % 0)
    for chunk in range(megabytes):
        data = b"".join(line % (chunk * per_chunk + i) for i in range(per_chunk))
        daemon.store.run_sync(functools.partial(_append, run_id=run.id, seq=chunk, data=data))
    return run.id, line % 0, line % (megabytes * per_chunk - 1)


def _append(conn: Connection, *, run_id: str, seq: int, data: bytes) -> None:
    artifacts.append_log(conn, run_id, seq, [data])


async def test_a_run_page_with_a_50_mb_log_sends_only_its_tail_and_links_the_whole_log(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, _):
        run_id, first, last = _run_with_log(daemon, 50)
        async with session(daemon, token_for("alice", "apply")) as web:
            page = await web.get(f"/runs/{run_id}")
            assert page.status_code == 200
            assert len(page.content) < LOG_TAIL + 64 * 1024
            assert last.decode().strip() in page.text and first.decode().strip() not in page.text
            assert re.search(r"the last 25\d KB of 5\d{4} KB", page.text)
            assert f'href="/runs/{run_id}/log"' in page.text
            whole = 0
            async with web.stream("GET", f"/runs/{run_id}/log") as full:
                assert full.status_code == 200
                async for piece in full.aiter_bytes():
                    whole += len(piece)
        size = await daemon.store.read(lambda c: artifacts.log_size(c, run_id))
    assert whole == size > 50_000_000


async def test_run_task_results_show_per_stage_and_link_only_to_http_addresses(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, _):
        run_id, _, _ = _run_with_log(daemon, 0)

        def tx(conn: object) -> None:
            ws_id = ws_store.workspace_id(conn, "demo")  # type: ignore[arg-type]
            for name, url, status in (
                ("scanner", "https://scanner.example/r/1", tasks.PASSED),
                ("sneaky", "javascript:alert(1)", tasks.FAILED),
            ):
                rid = new_id("taskrs")
                new = tasks.NewResult(
                    rid, run_id, ws_id, name, "post_plan", "mandatory", b"x", "jti",
                    now() + timedelta(hours=1),
                )  # fmt: skip
                tasks.create(conn, [new], now())  # type: ignore[arg-type]
                tasks.finish(conn, rid, status, now(), message=f"{name} says <i>hi</i>", url=url)  # type: ignore[arg-type]

        daemon.store.run_sync(tx)
        async with session(daemon, token_for("alice", "apply")) as web:
            page = (await web.get(f"/runs/{run_id}")).text
    assert "<h3>post plan</h3>" in page
    assert 'href="https://scanner.example/r/1"' in page
    assert 'href="javascript:' not in page and "<code>javascript:alert(1)</code>" in page
    assert "sneaky says &lt;i&gt;hi&lt;/i&gt;" in page
