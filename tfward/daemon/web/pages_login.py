"""Sign-in and sign-out: `GET /login`, `POST /login`, `POST /logout` (sessions.py says what a
session is). The sign-in form is guarded by a cookie of its own that the form repeats (double
submit), so a page of another site cannot sign a browser in under a token of its choosing."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from quart import Blueprint, Response, g, request

from tfward.errors import AccessDenied

from ..api import query
from . import forms, sessions
from .common import see_other
from .render import page

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon


def register(web: Blueprint, daemon: Daemon) -> None:
    book = daemon.sessions

    @web.get("/login")
    async def login() -> Response:
        return await _form(book, status=200, message=None)

    @web.post("/login")
    async def login_post() -> Response:
        given = request.cookies.get(sessions.LOGIN_COOKIE)
        form = await forms.fields({"token"})
        if given is None or not sessions.same_secret(await forms.csrf_given(), given):
            raise AccessDenied(403, "the sign-in form expired or came from elsewhere: reload it")
        started = await book.start(form.get("token", "").strip())
        if started is None:
            return await _form(book, status=401, message="unknown API token")
        session_id, _ = started
        response = see_other(_local(query.args()["next"]))
        response.set_cookie(
            sessions.COOKIE,
            session_id,
            max_age=int(daemon.config.web.session_max),
            path="/",
            secure=book.secure,
            httponly=True,
            samesite="Strict",
        )
        response.delete_cookie(sessions.LOGIN_COOKIE, path="/login")
        return response

    @web.post("/logout")
    async def logout() -> Response:
        await forms.fields(())
        signed: sessions.Signed = g.signed
        await book.end(signed.session_id)
        response = see_other("/login")
        response.delete_cookie(sessions.COOKIE, path="/")
        return response


async def _form(book: sessions.SessionBook, *, status: int, message: str | None) -> Response:
    """The sign-in form with a fresh form cookie."""
    nonce = secrets.token_urlsafe(24)
    values = {"message": message, "csrf": nonce, "next": _local(query.args()["next"]),
              "me": None, "section": "login"}  # fmt: skip
    response = await page("login.html", values, status=status)
    response.set_cookie(
        sessions.LOGIN_COOKIE,
        nonce,
        max_age=sessions.LOGIN_COOKIE_AGE,
        path="/login",
        secure=book.secure,
        httponly=True,
        samesite="Strict",
    )
    return response


def _local(target: str | None) -> str:
    """`target` if it is a path of this site, else `/` (no open redirect to another host)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target
