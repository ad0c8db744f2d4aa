"""Sign-in sessions of the web page (web/sessions.py): what a session is worth over time, and
the whole life of one through a real daemon — sign-in, the cookie's flags, what the database
keeps, idle and absolute expiry (on the book's clock), logout, and a reload that removes the
token."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from harness import demo_workspace, running_daemon, token_for, with_tokens, write_config
from pages import csrf_of, page_csrf, session, sign_in

from tfward.config import Config
from tfward.daemon.api.auth import Principal
from tfward.daemon.web.sessions import COOKIE, LOGIN_COOKIE, Verdict, digest, judge, needs_touch
from tfward.ids import now
from tfward.store.sessions import WebSession

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
HOUR = 3600.0
SESSION = WebSession(
    id_sha256="a" * 64,
    token_sha256="b" * 64,
    token_name="alice",
    role="apply",
    created_at=T0,
    last_seen_at=T0,
    expires_at=T0 + timedelta(days=7),
)
ALICE = Principal("alice", "apply")


@pytest.mark.parametrize(
    ("case", "when", "last_seen", "accepted", "verdict"),
    [
        ("just signed in", T0, T0, ALICE, Verdict.LIVE),
        ("used an hour ago", T0 + timedelta(hours=5), T0 + timedelta(hours=4), ALICE, Verdict.LIVE),
        ("idle for the idle time", T0 + timedelta(hours=12), T0, ALICE, Verdict.IDLE),
        ("idle longer", T0 + timedelta(hours=13), T0, ALICE, Verdict.IDLE),
        (
            "used all along, past the maximum",
            T0 + timedelta(days=7),
            T0 + timedelta(days=7),
            ALICE,
            Verdict.EXPIRED,
        ),  # fmt: skip
        ("its token removed", T0, T0, None, Verdict.REVOKED),
        ("its token given another role", T0, T0, Principal("alice", "read"), Verdict.REVOKED),
        ("its token renamed", T0, T0, Principal("bob", "apply"), Verdict.REVOKED),
    ],
)
def test_a_session_is_live_until_idle_for_the_idle_time_past_its_maximum_or_its_token_is_gone(
    case: str, when: datetime, last_seen: datetime, accepted: Principal | None, verdict: Verdict
) -> None:
    seen = dataclasses.replace(SESSION, last_seen_at=last_seen)
    assert judge(seen, when, idle=12 * HOUR, accepted=accepted) is verdict, case


def test_a_use_is_written_down_once_a_minute_not_on_every_page() -> None:
    assert not needs_touch(SESSION, T0 + timedelta(seconds=59), idle=12 * HOUR)
    assert needs_touch(SESSION, T0 + timedelta(seconds=60), idle=12 * HOUR)
    # With a short idle time, a quarter of it.
    assert needs_touch(SESSION, T0 + timedelta(seconds=5), idle=20)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    base = write_config(tmp_path, [demo_workspace(tmp_path, things=1)])
    return with_tokens(base, alice="apply", reader="read")


def cookie_flags(answer: httpx.Response) -> set[str]:
    """The attributes of the session cookie an answer sets (lower case)."""
    (cookie,) = [c for c in answer.headers.get_list("set-cookie") if c.startswith(f"{COOKIE}=")]
    return {part.strip().lower() for part in cookie.split(";")[1:]}


def _tables(config: Config) -> bytes:
    """Every byte of the database files, the WAL included."""
    data = config.daemon.data_dir
    return b"".join(p.read_bytes() for p in data.glob("tfward.db*"))


async def test_signing_in_starts_a_session_the_database_knows_only_by_its_hash(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, _):
        async with httpx.AsyncClient(base_url=daemon.addresses[0]) as web:
            answer = await sign_in(web, token_for("alice", "apply"))
            assert answer.status_code == 303 and answer.headers["location"] == "/"
            flags = cookie_flags(answer)
            assert {"httponly", "samesite=strict", "path=/"} <= flags
            assert "secure" not in flags  # public_url is http here
            session_id = web.cookies[COOKIE]
            assert "alice" in (await web.get("/")).text
        rows = (
            sqlite3.connect(daemon.config.daemon.data_dir / "tfward.db")
            .execute("SELECT id_sha256, token_name, role FROM web_sessions")
            .fetchall()
        )
    assert rows == [(digest(session_id), "alice", "apply")]
    stored = _tables(config)
    assert session_id.encode() not in stored
    assert token_for("alice", "apply").encode() not in stored


async def test_a_public_url_on_https_makes_the_cookie_secure(tmp_path: Path) -> None:
    base = write_config(
        tmp_path, [demo_workspace(tmp_path)], daemon={"public_url": "https://tfward.example"}
    )
    config = with_tokens(base, alice="apply")
    async with running_daemon(config) as (daemon, _):
        async with httpx.AsyncClient(base_url=daemon.addresses[0]) as web:
            form = await web.get("/login")
            # A Secure cookie is not sent back over http: the test sends it by hand, as the
            # browser behind an https proxy would.
            nonce = web.cookies[LOGIN_COOKIE]
            web.cookies.clear()
            answer = await web.post(
                "/login",
                data={"csrf": csrf_of(form.text), "token": token_for("alice", "apply")},
                headers={"Cookie": f"{LOGIN_COOKIE}={nonce}"},
            )
    assert answer.status_code == 303
    assert "secure" in cookie_flags(answer)


async def test_an_unknown_token_and_a_forged_sign_in_form_start_no_session(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, _):
        async with httpx.AsyncClient(base_url=daemon.addresses[0]) as web:
            wrong = await sign_in(web, "tfw_nobody")
            assert wrong.status_code == 401 and "unknown API token" in wrong.text
            assert COOKIE not in web.cookies
        # Another site's page posting the sign-in form has no form cookie to repeat.
        async with httpx.AsyncClient(base_url=daemon.addresses[0]) as other:
            forged = await other.post(
                "/login", data={"csrf": "x", "token": token_for("alice", "apply")}
            )
            assert forged.status_code == 403
            assert COOKIE not in other.cookies


async def test_signing_in_leads_back_to_the_page_asked_for_and_never_to_another_site(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, _):
        async with httpx.AsyncClient(base_url=daemon.addresses[0]) as web:
            first = await web.get("/workspaces/demo")
            assert first.status_code == 303
            assert first.headers["location"] == "/login?next=/workspaces/demo"
            form = await web.get(first.headers["location"])
            answer = await web.post(
                first.headers["location"],
                data={"csrf": csrf_of(form.text), "token": token_for("alice", "apply")},
            )
            assert answer.headers["location"] == "/workspaces/demo"
        for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
            async with httpx.AsyncClient(base_url=daemon.addresses[0]) as web:
                form = await web.get("/login", params={"next": target})
                answer = await web.post(
                    "/login",
                    params={"next": target},
                    data={"csrf": csrf_of(form.text), "token": token_for("alice", "apply")},
                )
                assert answer.headers["location"] == "/", target


async def test_logout_ends_the_session_and_pages_send_to_sign_in_again(config: Config) -> None:
    async with running_daemon(config) as (daemon, _):
        async with session(daemon, token_for("alice", "apply")) as web:
            old = web.cookies[COOKIE]
            csrf = await page_csrf(web)
            answer = await web.post("/logout", data={"csrf": csrf})
            assert answer.status_code == 303 and answer.headers["location"] == "/login"
            assert (await web.get("/")).headers["location"] == "/login?next=/"
            # The old cookie is worth nothing now, even sent again by hand.
            web.cookies.clear()
            again = await web.get("/", headers={"Cookie": f"{COOKIE}={old}"})
            assert again.status_code == 303


async def test_a_session_ends_after_its_idle_time_and_after_its_maximum(config: Config) -> None:
    async with running_daemon(config) as (daemon, _):
        book = daemon.sessions
        async with session(daemon, token_for("alice", "apply")) as web:
            assert (await web.get("/")).status_code == 200
            book.clock = lambda: now() + timedelta(hours=11, minutes=59)
            assert (await web.get("/")).status_code == 200  # and that use counts
            book.clock = lambda: now() + timedelta(hours=23, minutes=58)
            assert (await web.get("/")).status_code == 200
            book.clock = lambda: now() + timedelta(hours=36)
            assert (await web.get("/")).headers["location"] == "/login?next=/"
        book.clock = now
        async with session(daemon, token_for("alice", "apply")) as web:
            # Used every few hours, it still ends 7 days after sign-in.
            for hours in range(10, 7 * 24, 10):
                book.clock = lambda h=hours: now() + timedelta(hours=h)  # type: ignore[misc]
                assert (await web.get("/")).status_code == 200, hours
            book.clock = lambda: now() + timedelta(days=7)
            assert (await web.get("/")).status_code == 303


async def test_a_reload_that_removes_a_token_ends_its_sessions_and_keeps_the_others(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, _):
        async with (
            session(daemon, token_for("alice", "apply")) as alice,
            session(daemon, token_for("reader", "read")) as reader,
        ):
            text = config.path.read_text()
            start = text.index('name = "alice"')
            entry_start = text.rindex("[[api_token]]", 0, start)
            entry_end = text.index("[[api_token]]", start)
            config.path.write_text(text[:entry_start] + text[entry_end:])
            assert await daemon.reload()
            from tfward.store import sessions as session_store

            assert await daemon.store.read(session_store.count) == 1
            assert (await alice.get("/")).status_code == 303
            assert (await reader.get("/")).status_code == 200
