"""The workspaces page and a workspace's page (web/pages_workspaces.py), over HTTP: what they
show, what they cost the database, and their forms through the API's own functions."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
from sqlalchemy import event

from tfward.config import Config
from tfward.daemon.service import Daemon
from tfward.store import audit


@contextmanager
def transactions(daemon: Daemon) -> Iterator[list[list[str]]]:
    """Every transaction the daemon's engine runs meanwhile, as its statements (each starts
    with BEGIN; a worker thread runs one transaction at a time)."""
    found: list[list[str]] = []
    current: dict[int, list[str]] = {}

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        thread = threading.get_ident()
        if statement == "BEGIN" or thread not in current:
            current[thread] = []
            found.append(current[thread])
        current[thread].append(statement)

    event.listen(daemon.store.engine, "before_cursor_execute", seen)
    try:
        yield found
    finally:
        event.remove(daemon.store.engine, "before_cursor_execute", seen)


def many_workspaces(root: Path, count: int) -> list[dict[str, Any]]:
    """`count` workspaces sharing one copy of the demo configuration."""
    first = demo_workspace(root, "ws-0000")
    return [first] + [{**first, "name": f"ws-{i:04d}"} for i in range(1, count)]


async def _page_queries(daemon: Daemon, token: str) -> tuple[list[str], str]:
    """The statements of the transactions that read the session and the workspaces (the
    outbox worker and the actors run their own meanwhile)."""
    async with session(daemon, token) as web:
        await web.get("/")  # the session's first use is written down; count a later one
        with transactions(daemon) as found:
            page = await web.get("/")
    assert page.status_code == 200, page.text
    mine = [t for t in found if any("web_sessions" in s or "FROM workspaces" in s for s in t)]
    return [statement for t in mine for statement in t], page.text


@pytest.mark.parametrize("count", [3, 1000])
async def test_the_workspaces_page_costs_the_same_few_queries_for_three_or_a_thousand(
    tmp_path: Path, count: int
) -> None:
    config = with_tokens(write_config(tmp_path, many_workspaces(tmp_path, count)), ann="admin")
    async with running_daemon(config) as (daemon, _):
        api = _client(daemon, "ann", "admin")
        async with api:
            for name in ("ws-0000", "ws-0001"):  # locked: their runs wait in the queue
                await api.post(f"/api/v1/workspaces/{name}/actions/lock", json={"reason": "x"})
                answer = await api.post(f"/api/v1/workspaces/{name}/runs", json={})
                assert answer.status_code == 201, answer.text
        queries, html = await _page_queries(daemon, token_for("ann", "admin"))
    assert html.count('data-workspace="') == count
    assert html.count("pending") >= 2 and "locked by ann" in html
    # BEGIN and the session's row; BEGIN and the page's eight grouped reads (store/overview.py):
    # the same for three workspaces as for a thousand, never one per workspace.
    assert len(queries) == 2 + 9, "\n".join(queries)


def _client(daemon: Daemon, name: str, role: str) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {token_for(name, role)}"}
    return httpx.AsyncClient(base_url=daemon.addresses[0], headers=headers, timeout=60)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    base = write_config(tmp_path, [demo_workspace(tmp_path, things=1)])
    return with_tokens(base, ann="admin", alice="apply", reader="read")


async def test_the_name_filter_shows_only_the_workspaces_whose_name_contains_it(
    tmp_path: Path,
) -> None:
    workspaces = [demo_workspace(tmp_path, n) for n in ("net-eu", "net-us", "app")]
    config = with_tokens(write_config(tmp_path, workspaces), alice="apply")
    async with running_daemon(config) as (daemon, _):
        async with session(daemon, token_for("alice", "apply")) as web:
            page = (await web.get("/", params={"name": "net"})).text
            assert 'data-workspace="net-eu"' in page and 'data-workspace="net-us"' in page
            assert 'data-workspace="app"' not in page
            refused = await web.get("/", params={"nmae": "net"})
            assert refused.status_code == 422 and "unknown query parameter 'nmae'" in message_of(
                refused
            )


async def test_a_lock_taken_on_the_page_is_the_apis_lock_and_its_reason_is_shown_as_text(
    config: Config,
) -> None:
    reason = "<script>alert(1)</script> & maintenance"
    async with running_daemon(config) as (daemon, api):
        api.http.headers.update(bearer("ann", "admin"))
        async with session(daemon, token_for("alice", "apply")) as web:
            csrf = await page_csrf(web, "/workspaces/demo")
            answer = await web.post(
                "/workspaces/demo/actions/lock", data={"csrf": csrf, "reason": reason}
            )
            assert answer.status_code == 303
            lock = (await api.workspace("demo"))["lock"]
            assert (lock["locked_by"], lock["reason"]) == ("alice", reason)
            page = (await web.get("/workspaces/demo")).text
            assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; maintenance" in page
            assert "<script>alert" not in page
            again = await web.post("/workspaces/demo/actions/lock", data={"csrf": csrf})
            assert again.status_code == 303  # one's own lock again: nothing changes


async def test_a_force_unlock_on_the_page_reaches_the_audit_trail_under_the_tokens_name(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, api):
        api.http.headers.update(bearer("ann", "admin"))
        async with session(daemon, token_for("alice", "apply")) as alice:
            csrf = await page_csrf(alice, "/workspaces/demo")
            await alice.post("/workspaces/demo/actions/lock", data={"csrf": csrf})
            # alice has no force-unlock: the button is absent and the form refused.
            assert "force-unlock" not in (await alice.get("/workspaces/demo")).text
            denied = await alice.post("/workspaces/demo/actions/force-unlock", data={"csrf": csrf})
            assert denied.status_code == 403
        async with session(daemon, token_for("ann", "admin")) as ann:
            csrf = await page_csrf(ann, "/workspaces/demo")
            done = await ann.post("/workspaces/demo/actions/force-unlock", data={"csrf": csrf})
            assert done.status_code == 303
            nothing = await ann.post("/workspaces/demo/actions/force-unlock", data={"csrf": csrf})
            assert nothing.status_code == 409 and "nothing to force-unlock" in message_of(nothing)
        assert (await api.workspace("demo"))["lock"] is None
        events = await daemon.store.read(lambda c: audit.list_events(c, limit=10))
    assert [(e.actor, str(e.action), str(e.outcome)) for e in events] == [
        ("ann", "force_unlock", "refused"),
        ("ann", "force_unlock", "ok"),
    ]


async def test_destroy_needs_the_workspaces_name_typed_and_an_apply_role(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, api):
        api.http.headers.update(bearer("ann", "admin"))
        async with session(daemon, token_for("alice", "apply")) as web:
            csrf = await page_csrf(web, "/workspaces/demo")
            form = {"csrf": csrf, "operation": "destroy", "confirm_name": "dmeo"}
            refused = await web.post("/workspaces/demo/runs", data=form)
            assert refused.status_code == 422 and "type the workspace's name" in message_of(refused)
            unknown = await web.post("/workspaces/demo/runs", data={**form, "color": "red"})
            assert unknown.status_code == 422 and "unknown form field 'color'" in message_of(
                unknown
            )
            started = await web.post("/workspaces/demo/runs", data={**form, "confirm_name": "demo"})
            assert started.status_code == 303
            run_id = started.headers["location"].removeprefix("/runs/")
            run = await api.run(run_id)
            assert (run["operation"], run["created_by"]) == ("destroy", "alice")
            # terraform 1.0.3 plans a destroy of an empty state as a change to confirm
            await api.wait(run_id, "apply_pending", "planned_and_finished")


async def test_configuration_versions_link_to_their_diff_with_the_one_before(
    config: Config, tmp_path: Path
) -> None:
    async with running_daemon(config) as (daemon, api):
        api.http.headers.update(bearer("ann", "admin"))
        first = await api.create_run("demo", operation="plan")
        await api.wait(first["id"], "planned_and_finished")
        (tmp_path / "demo" / "extra.tf").write_text('output "hello" {\n  value = "<b>hi</b>"\n}\n')
        second = await api.create_run("demo", operation="plan")
        await api.wait(second["id"], "planned_and_finished")
        async with session(daemon, token_for("reader", "read")) as web:
            page = (await web.get("/workspaces/demo")).text
            (link,) = re.findall(r'href="(/configuration-versions/[^"]+/diff/[^"]+)"', page)
            diff = (await web.get(link)).text
    assert "<code>extra.tf</code>" in diff and "added" in diff
    assert '<span class="d-add">+  value = &#34;&lt;b&gt;hi&lt;/b&gt;&#34;</span>' in diff
