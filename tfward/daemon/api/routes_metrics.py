"""Prometheus metrics (daemon/metrics.py):

    GET /metrics      the text exposition format; the database's part is read at scrape time

Like every read, it needs a token with the `read` role (auth.py); Prometheus sends one with
`authorization: {credentials_file: ...}` in its scrape config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST
from quart import Response
from quart_trio import QuartTrio

from tfward.store import tallies

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon


def register(app: QuartTrio, daemon: Daemon) -> None:
    @app.get("/metrics")
    async def metrics() -> Response:
        """One read transaction, then the exposition (see Metrics.exposition)."""
        counts = await daemon.store.read(tallies.read)
        return Response(daemon.rt.metrics.exposition(counts), content_type=CONTENT_TYPE_LATEST)
