"""The tests' fake third parties (webhook receivers, run-task services) are real HTTP servers on
loopback: a bare ASGI app served by Hypercorn on 127.0.0.1 with a port the OS picks."""

from __future__ import annotations

from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve


async def serve(
    app: Any, graceful: float = 0.2, *, task_status: trio.TaskStatus[list[str]]
) -> None:
    """Serve `app` until cancelled; `task_status.started` gets the bound URLs."""
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = graceful
    await hypercorn_serve(app, config, task_status=task_status)


async def request_body(scope: dict[str, Any], receive: Any, send: Any) -> bytes | None:
    """The whole body of an HTTP request; None for the lifespan protocol (answered here)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return None
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body
