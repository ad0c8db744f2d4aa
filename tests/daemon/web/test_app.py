"""What every page of the web page checks first (web/app.py): a session, the CSRF token of a
form, the role the API's table names for what the form does, the query string; and errors as
pages with one line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import httpx
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

from tfward.config import Config


@pytest.fixture
def config(tmp_path: Path) -> Config:
    base = write_config(tmp_path, [demo_workspace(tmp_path, things=1)])
    return with_tokens(base, ann="admin", alice="apply", reader="read")


PAGES = ("/", "/workspaces/demo", "/releases", "/deliveries")


async def test_every_page_without_a_session_sends_to_sign_in_and_every_form_is_refused(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, api):
        api.http.headers.update(bearer("ann", "admin"))
        async with httpx.AsyncClient(base_url=daemon.addresses[0]) as web:
            for path in PAGES:
                answer = await web.get(path)
                assert answer.status_code == 303, path
                assert answer.headers["location"].startswith("/login?next="), path
            posted = await web.post("/workspaces/demo/actions/lock", data={"csrf": "x"})
            assert posted.status_code == 401
            assert (await web.get("/static/tfward.css")).status_code == 200
            # An API token is no session: the pages want a cookie, the API a token.
            api_token = await web.get("/", headers=bearer("ann", "admin"))
            assert api_token.status_code == 303
        assert (await api.workspace("demo"))["lock"] is None


async def test_a_form_without_the_sessions_csrf_token_is_refused_and_changes_nothing(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, api):
        api.http.headers.update(bearer("ann", "admin"))
        async with session(daemon, token_for("ann", "admin")) as web:
            for form in ({}, {"csrf": ""}, {"csrf": "0" * 64}):
                locked = await web.post("/workspaces/demo/actions/lock", data=form)
                assert locked.status_code == 403, form
                assert "CSRF" in message_of(locked)
                started = await web.post(
                    "/workspaces/demo/runs", data={**form, "operation": "plan"}
                )
                assert started.status_code == 403
            # Another session's token is no better.
            async with session(daemon, token_for("alice", "apply")) as other:
                theirs = await page_csrf(other)
            assert (
                await web.post("/workspaces/demo/actions/lock", data={"csrf": theirs})
            ).status_code == 403
        assert (await api.workspace("demo"))["lock"] is None
        assert (await api.http.get("/api/v1/workspaces/demo/runs")).json()["data"] == []


async def test_a_read_session_sees_no_buttons_and_its_forms_are_refused_with_403(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, api):
        api.http.headers.update(bearer("ann", "admin"))
        async with session(daemon, token_for("reader", "read")) as web:
            page = (await web.get("/workspaces/demo")).text
            csrf = await page_csrf(web, "/workspaces/demo")  # its logout form has one
            for button in ("start-plan", "start-apply", "start-destroy", "lock-button"):
                assert f'id="{button}"' not in page, button
            for path, form in (
                ("/workspaces/demo/actions/lock", {}),
                ("/workspaces/demo/runs", {"operation": "plan"}),
                ("/workspaces/demo/runs", {"operation": "plan_and_apply"}),
            ):
                answer = await web.post(path, data={"csrf": csrf, **form})
                assert answer.status_code == 403, path
                assert "has role read" in message_of(answer)
        assert (await api.workspace("demo"))["lock"] is None
        assert (await api.http.get("/api/v1/workspaces/demo/runs")).json()["data"] == []


async def test_errors_are_pages_with_one_line_and_the_right_status(config: Config) -> None:
    async with running_daemon(config) as (daemon, _):
        async with session(daemon, token_for("alice", "apply")) as web:
            cases = {
                "/runs/run-nope": (404, "run run-nope not found"),
                "/workspaces/nope": (404, "workspace 'nope' not found"),
                "/workspaces/demo?page=0": (422, "query parameter 'page'"),
                "/workspaces/demo?page=1&page=2": (422, "given 2 times"),
                "/releases/rel-nope": (404, "release rel-nope not found"),
            }
            for path, (status, message) in cases.items():
                answer = await web.get(path)
                assert answer.status_code == status, path
                assert message in message_of(answer), path
                assert answer.headers["content-type"].startswith("text/html")


async def test_pages_forbid_framing_caching_and_scripts_from_anywhere_else(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, _):
        async with session(daemon, token_for("alice", "apply")) as web:
            answer = await web.get("/")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["cache-control"] == "no-store"
