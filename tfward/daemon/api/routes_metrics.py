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

from tfward.errors import StorageUnavailable
from tfward.obs.metrics import StorageState, Tallies
from tfward.store import tallies

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon


def register(app: QuartTrio, daemon: Daemon) -> None:
    @app.get("/metrics")
    async def metrics() -> Response:
        """One read transaction, then the exposition (see Metrics.exposition). While the
        database does not read, the rest still answers (and says why storage is degraded)."""
        try:
            counts: Tallies | None = await daemon.store.read(tallies.read, patient=False)
        except StorageUnavailable:
            counts = None
        health = daemon.store.health
        degraded = health.degraded
        storage = StorageState(
            str(degraded.problem) if degraded else None,
            {str(p): n for p, n in health.outages.items()},
        )
        body = daemon.rt.metrics.exposition(counts, storage)
        return Response(body, content_type=CONTENT_TYPE_LATEST)
