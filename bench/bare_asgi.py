#!/usr/bin/env python3
"""The floor of the HTTP stack: a bare ASGI handler on Hypercorn's trio worker.

bench/api_latency.py runs this beside the daemon and measures both the same way, so tfward's
CPU per `GET /api/v1/runs/{id}` is a ratio to what any app on this stack costs on this machine
in the same run (docs/architecture.md §12: <= 1.8). The handler reads nothing, checks nothing,
and answers every request with the bytes of `--body` (a run's view, as the daemon answers it)
and the daemon's headers (`content-type`, `content-length`). Hypercorn is configured as the
daemon configures it (no access log).

    python bench/bare_asgi.py --port 8711 --body /tmp/run.json
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve


def app_for(body: bytes) -> Any:
    head = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
    }
    answer = {"type": "http.response.body", "body": body}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send(head)
        await send(answer)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", type=Path, required=True)
    args = parser.parse_args()
    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    trio.run(serve, app_for(args.body.read_bytes()), config)


if __name__ == "__main__":
    main()
