"""The web page in a real browser: headless Chromium driven by Selenium (tests/browser.py)
against a real daemon with real terraform and the demo provider.

What a person does: sign in, start a plan and apply, watch the log arrive, confirm, see it
applied and its state; cancel a slow run; read-only people see no buttons and forged forms are
refused; a resource named like markup stays text everywhere; signing out and an idle session
send back to the sign-in page. The screenshots in docs/ come from here
(`TFWARD_UPDATE_SCREENSHOTS=1` writes them; otherwise they go to the test's directory).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from browser import Browser, browser_or_skip, chrome
from harness import (
    REPO,
    bearer,
    demo_workspace,
    running_daemon,
    token_for,
    until,
    with_tokens,
    write_config,
)

from tfward.config import Config
from tfward.ids import now

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    """One browser for the module (a start costs seconds); each test forgets its cookies."""
    browser_or_skip()
    with chrome() as found:
        yield found


def screenshot_path(tmp_path: Path, name: str) -> Path:
    if os.environ.get("TFWARD_UPDATE_SCREENSHOTS") == "1":
        return REPO / "docs" / name
    return tmp_path / name


def tokens(config: Config) -> Config:
    return with_tokens(config, ann="admin", alice="apply", reader="read")


async def opened(driver: Any, url: str) -> Browser:
    browser = Browser(driver, url)
    await browser.forget()
    return browser


async def test_a_plan_and_apply_started_confirmed_and_followed_live_in_the_browser(
    driver: Any, tmp_path: Path
) -> None:
    workspaces = [demo_workspace(tmp_path, n, things=t) for n, t in (("demo", 3), ("network", 2))]
    config = tokens(write_config(tmp_path, workspaces))
    async with running_daemon(config) as (daemon, api):
        api.http.headers.update(bearer("ann", "admin"))
        browser = await opened(driver, daemon.addresses[0])
        await browser.sign_in(token_for("alice", "apply"))
        assert await browser.path() == "/"
        await browser.click('a[href="/workspaces/demo"]')
        await browser.wait_path("/workspaces/demo")
        await browser.type('input[name="message"]', "three more things")
        await browser.click("#start-apply")
        run_id = (await browser.wait_path("/runs/")).removeprefix("/runs/")
        # No reload from here on: the page follows the run's events.
        await browser.wait_for("#log", r"demo_thing\.this\[2\] will be created")
        await browser.wait_for("#status", r"apply pending")
        await browser.wait_for("#plan", r"\+3")
        assert await browser.visible("#action-confirm")
        await browser.screenshot(screenshot_path(tmp_path, "screenshot-run-confirm.png"))
        await browser.click("#action-confirm")
        await browser.wait_path(f"/runs/{run_id}")
        await browser.wait_for("#status", r"^applied$", timeout=90)
        await browser.wait_for("#log", r"run finished: applied")
        assert not await browser.visible("#action-confirm")
        assert await browser.text("#confirmed-by") == "alice"
        await browser.get("/workspaces/demo")
        assert await browser.count("#states tr.state") == 1
        assert "apply" in await browser.text("#states tr.state")
        # The workspaces page, with another workspace's run waiting, for the README.
        other = await api.create_run("network")
        await api.wait(other["id"], "apply_pending")
        await browser.get("/")
        latest = await browser.text('tr[data-workspace="demo"] .c-run')
        assert latest.startswith("applied")
        await browser.screenshot(screenshot_path(tmp_path, "screenshot-workspaces.png"))


async def test_a_slow_run_cancelled_from_its_page_ends_cancelled_and_unlocks(
    driver: Any, tmp_path: Path
) -> None:
    workspace = demo_workspace(tmp_path, things=2, delay=60, auto_apply=True)
    config = tokens(write_config(tmp_path, [workspace]))
    async with running_daemon(config) as (daemon, api):
        api.http.headers.update(bearer("ann", "admin"))
        browser = await opened(driver, daemon.addresses[0])
        await browser.sign_in(token_for("alice", "apply"))
        await browser.get("/workspaces/demo")
        await browser.click("#start-apply")
        run_id = (await browser.wait_path("/runs/")).removeprefix("/runs/")
        await browser.wait_for("#status", r"^applying$", timeout=90)
        await browser.wait_for("#log", r"Creating\.\.\.")
        await browser.click("#action-cancel")
        await browser.wait_path(f"/runs/{run_id}")
        await browser.wait_for("#status", r"^cancelled$", timeout=90)
        await browser.get("/workspaces/demo")
        assert await browser.text("#lock-state") == "unlocked"
        await browser.get("/")
        assert await browser.text('tr[data-workspace="demo"] .c-lock') == "unlocked"
        assert (await api.run(run_id))["status"] == "cancelled"


async def test_a_read_session_has_no_buttons_and_forged_forms_get_403_changing_nothing(
    driver: Any, tmp_path: Path
) -> None:
    config = tokens(write_config(tmp_path, [demo_workspace(tmp_path, things=1)]))
    async with running_daemon(config) as (daemon, api):
        api.http.headers.update(bearer("ann", "admin"))
        await api.http.post("/api/v1/workspaces/demo/actions/lock", json={"reason": "hold"})
        run = await api.create_run("demo")  # waits behind the lock: pending, cancellable
        await api.http.post("/api/v1/workspaces/demo/actions/unlock")
        browser = await opened(driver, daemon.addresses[0])
        await browser.sign_in(token_for("reader", "read"))
        await browser.get("/workspaces/demo")
        assert await browser.count("#start form, #lock form, #states form") == 0
        assert await browser.count("button") == 1  # sign out
        await browser.get(f"/runs/{run['id']}")
        assert await browser.count("[data-action]") == 0
        # A script on the page posts forms: without the CSRF token, and with it as `read`.
        statuses = await browser.script(FORGE, "/workspaces/demo/actions/lock")
        assert statuses == [403, 403]
        statuses = await browser.script(FORGE, f"/runs/{run['id']}/actions/cancel")
        assert statuses == [403, 403]
        # Nothing changed: no user lock, and the run was never asked to stop.
        waiting = await api.wait(run["id"], "apply_pending")
        assert waiting["timestamps"]["cancel_requested_at"] is None
        assert (await api.workspace("demo"))["lock"]["run_id"] == run["id"]


# Posts `arguments[0]` twice from the page: without a CSRF token, then with the one the page's
# own sign-out form carries; calls back with both statuses.
FORGE = """
const [path, done] = arguments;
const csrf = document.querySelector('input[name=csrf]').value;
const post = (body) => fetch(path, {method: 'POST', body: new URLSearchParams(body),
                                    redirect: 'manual'}).then(r => r.status);
Promise.all([post({reason: 'forged'}), post({csrf: csrf, reason: 'forged'})]).then(done);
"""


async def test_a_resource_named_like_markup_is_text_in_the_plan_the_log_and_the_state(
    driver: Any, tmp_path: Path
) -> None:
    extra = (
        f'resource "demo_thing" "odd" {{\n  name = "{XSS}"\n}}\n'
        'output "odd" {\n  value = demo_thing.odd.id\n}\n'
    )
    workspace = demo_workspace(tmp_path, things=0, extra_tf=extra)
    config = tokens(write_config(tmp_path, [workspace]))
    async with running_daemon(config) as (daemon, api):
        api.http.headers.update(bearer("ann", "admin"))
        browser = await opened(driver, daemon.addresses[0])
        await browser.sign_in(token_for("alice", "apply"))
        await browser.get("/workspaces/demo")
        await browser.click("#start-apply")
        run_id = (await browser.wait_path("/runs/")).removeprefix("/runs/")
        await api.wait(run_id, "apply_pending")
        await browser.get(f"/runs/{run_id}")
        await browser.click("#plan details summary")
        assert XSS in await browser.text("#plan pre.values")
        assert XSS in await browser.text("#log")
        await browser.click("#action-confirm")
        await api.wait(run_id, "applied")

        async def synced() -> bool:
            found = await api.http.get("/api/v1/workspaces/demo/resources")
            return bool(found.json()["data"])

        await until(daemon, synced)
        await browser.get("/workspaces/demo")
        assert XSS in await browser.text("#resources")
        await browser.click("#states details summary")
        assert XSS in await browser.text("#states")
        for path in ("/", "/workspaces/demo", f"/runs/{run_id}"):
            await browser.get(path)
            assert await browser.count("img") == 0, path
            assert not await browser.alert_open(), path


async def test_signing_out_and_an_idle_session_lead_back_to_the_sign_in_page(
    driver: Any, tmp_path: Path
) -> None:
    config = tokens(write_config(tmp_path, [demo_workspace(tmp_path, things=1)]))
    async with running_daemon(config) as (daemon, _):
        browser = await opened(driver, daemon.addresses[0])
        await browser.sign_in(token_for("alice", "apply"))
        await browser.get("/workspaces/demo")
        await browser.click("#logout")
        await browser.wait_path("/login")
        await browser.get("/workspaces/demo")
        assert await browser.path() == "/login?next=/workspaces/demo"

        await browser.sign_in(token_for("alice", "apply"))
        await browser.get("/releases")
        assert await browser.path() == "/releases"
        idle = config.web.session_idle
        daemon.sessions.clock = lambda: now() + timedelta(seconds=idle + 1)
        await browser.get("/releases")
        assert await browser.path() == "/login?next=/releases"
        # Signing in again leads back to where the person was.
        daemon.sessions.clock = now
        await browser.sign_in(token_for("alice", "apply"))
        assert await browser.path() == "/releases"
