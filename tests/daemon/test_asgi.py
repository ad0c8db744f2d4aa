"""HTTP/1.1 connections as the daemon serves them (api/asgi.py): a request refused before its
body was read leaves the connection usable for the next request, or says `Connection: close`
and closes it; never a silent close that the next request runs into."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from harness import demo_workspace, running_daemon, write_config

from tfward.config import Config
from tfward.daemon.api.app import MAX_BODY
from tfward.daemon.service import Daemon


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return write_config(tmp_path, [demo_workspace(tmp_path, things=1)])


async def _connect(daemon: Daemon) -> trio.SocketStream:
    host, port = daemon.addresses[0].removeprefix("http://").rsplit(":", 1)
    return await trio.open_tcp_stream(host, int(port))


async def _response(stream: trio.SocketStream, buffered: bytearray) -> tuple[bytes, bytes]:
    """One response (head, body) read from `stream`; what follows it stays in `buffered`."""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in buffered:
            chunk = await stream.receive_some(65536)
            assert chunk, f"EOF before a response: {bytes(buffered)!r}"
            buffered += chunk
        head, _, rest = bytes(buffered).partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        while len(rest) < length:
            chunk = await stream.receive_some(65536)
            assert chunk, "EOF inside a response body"
            rest += chunk
    buffered[:] = rest[length:]
    return head, rest[:length]


async def _eof(stream: trio.SocketStream) -> bool:
    with trio.fail_after(10):
        return await stream.receive_some(65536) == b""


def _post(length: int) -> bytes:
    return (
        b"POST /api/v1/workspaces/demo/runs HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(length).encode() + b"\r\n\r\n"
    )


GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_after_a_401_for_a_whole_body_the_next_request_on_the_connection_is_answered(
    config: Config,
) -> None:
    body = b'{"operation": "plan", "message": "' + b"x" * 200_000 + b'"}'
    async with running_daemon(config) as (daemon, _):
        stream = await _connect(daemon)
        buffered = bytearray()
        for _ in range(3):
            await stream.send_all(_post(len(body)) + body)
            head, _ = await _response(stream, buffered)
            assert head.startswith(b"HTTP/1.1 401") and b"connection: close" not in head.lower()
            await stream.send_all(GET)
            head, answer = await _response(stream, buffered)
            assert head.startswith(b"HTTP/1.1 200") and b'"ok"' in answer
        await stream.aclose()


async def test_a_401_before_a_body_that_never_comes_says_connection_close_and_closes(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, _):
        stream = await _connect(daemon)
        await stream.send_all(_post(1000) + b'{"operation": ')  # the rest never comes
        buffered = bytearray()
        head, _ = await _response(stream, buffered)
        assert head.startswith(b"HTTP/1.1 401")
        # Without `Connection: close` the client may send its next request, which the server
        # cannot read: the connection must end, and the response must have said so.
        assert b"connection: close" in head.lower()
        assert not buffered and await _eof(stream)
        await stream.aclose()


async def test_a_client_alternating_refused_posts_and_gets_keeps_one_connection_throughout(
    config: Config,
) -> None:
    """httpx with one pooled connection: big bodies refused with 401 before they are read,
    each followed by a GET. Every request is answered and all of them go over the connection
    opened first (httpcore's trace reports each new TCP connection)."""
    body = {"operation": "plan", "message": "m" * 1_000_000}
    connects = 0

    async def trace(event: str, info: dict[str, Any]) -> None:
        nonlocal connects
        connects += event == "connection.connect_tcp.complete"

    async with running_daemon(config) as (daemon, _):
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=daemon.addresses[0], limits=limits) as client:
            traced: dict[str, Any] = {"trace": trace}
            for _ in range(20):
                for headers in ({}, {"Authorization": "Bearer not-a-token"}):
                    refused = await client.post(
                        "/api/v1/workspaces/demo/runs",
                        json=body,
                        headers=headers,
                        extensions=traced,
                    )
                    assert refused.status_code == 401
                assert (await client.get("/healthz", extensions=traced)).status_code == 200
    assert connects == 1


async def test_a_body_declared_over_the_limit_gets_413_and_connection_close_at_once(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, api):
        stream = await _connect(daemon)
        auth = b"Authorization: " + api.http.headers["Authorization"].encode() + b"\r\n"
        head = _post(MAX_BODY + 1).replace(b"Host: x\r\n", b"Host: x\r\n" + auth)
        await stream.send_all(head + b"{")  # the rest is never sent, nor waited for
        buffered = bytearray()
        head, body = await _response(stream, buffered)
        assert head.startswith(b"HTTP/1.1 413") and b"connection: close" in head.lower(), head
        assert b"Request Entity Too Large" in body or b"413" in body
        assert await _eof(stream)
        await stream.aclose()
