"""The web page as a plain HTTP client sees it (httpx, no browser): sign in through the form,
read the CSRF token a page carries, post forms. The browser tests use tests/browser.py."""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import httpx

from tfward.daemon.service import Daemon

_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def message_of(answer: httpx.Response) -> str:
    """The one line an error page says (unescaped)."""
    found = re.search(r'id="error-message">(.*?)</p>', answer.text, re.S)
    assert found is not None, f"not an error page ({answer.status_code}): {answer.text[:300]}"
    return html.unescape(found[1])


def csrf_of(text: str) -> str:
    found = _CSRF.search(text)
    assert found is not None, "the page has no form with a CSRF token"
    return found[1]


async def sign_in(web: httpx.AsyncClient, token: str) -> httpx.Response:
    """The sign-in form, filled and sent; the answer (303 on success)."""
    form = await web.get("/login")
    assert form.status_code == 200, form.text
    return await web.post("/login", data={"csrf": csrf_of(form.text), "token": token})


@asynccontextmanager
async def session(daemon: Daemon, token: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client with a live session of `token` (its cookie kept by the client)."""
    async with httpx.AsyncClient(base_url=daemon.addresses[0], timeout=30) as web:
        answer = await sign_in(web, token)
        assert answer.status_code == 303, answer.text
        yield web


async def page_csrf(web: httpx.AsyncClient, path: str = "/") -> str:
    """The CSRF token of the session, as the page at `path` carries it."""
    found = await web.get(path)
    assert found.status_code == 200, found.text
    return csrf_of(found.text)


@dataclass(frozen=True)
class Event:
    """A server-sent event (`kind` ":" for a comment, a heartbeat)."""

    kind: str
    data: Any = None
    id: str | None = None


async def events(answer: httpx.Response) -> AsyncIterator[Event]:
    """The server-sent events of a streamed answer, until the server ends it."""
    kind, ident, data = "message", None, cast(list[str], [])
    async for line in answer.aiter_lines():
        if line.startswith(":"):
            yield Event(":")
        elif not line:
            if data:
                yield Event(kind, json.loads("\n".join(data)), ident)
            kind, ident, data = "message", None, cast(list[str], [])
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                ident = value
