"""The releases (`/releases`, `/releases/{id}`) and the notification deliveries
(`/deliveries`) pages, with their admin buttons: cancel a release, retry a dead outbox row
(through the functions the API's routes call, into the audit trail)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response
from sqlalchemy import Connection

from tfward.store import deliveries
from tfward.store import outbox as outbox_store
from tfward.store import releases as release_store

from ..api.routes_outbox import retry_row
from ..api.routes_releases import cancel_release, release_view
from . import forms
from .common import context, require, see_other
from .render import page

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon

RELEASES_SHOWN = 100
DELIVERIES_SHOWN = 200
DEAD_SHOWN = 200


def register(web: Blueprint, daemon: Daemon) -> None:
    store = daemon.store

    @web.get("/releases")
    async def releases() -> Response:
        def load(conn: Connection) -> list[dict[str, Any]]:
            found = release_store.snapshots(conn, statuses=[], limit=RELEASES_SHOWN)
            return [release_view(release, runs) for release, runs in found]

        values = context(
            "releases", releases=await store.read(load), enabled=daemon.config.releases.enabled
        )
        return await page("releases.html", values)

    @web.get("/releases/<release_id>")
    async def release(release_id: str) -> Response:
        view = await store.read(lambda c: release_view(*release_store.snapshot(c, release_id)))
        return await page("release.html", context("releases", release=view))

    @web.post("/releases/<release_id>/cancel")
    async def release_cancel(release_id: str) -> Response:
        require("release", "cancel")
        await forms.fields(())
        await cancel_release(daemon, release_id)
        return see_other(f"/releases/{release_id}")

    @web.get("/deliveries")
    async def deliveries_page() -> Response:
        def load(conn: Connection) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            attempts = deliveries.list_attempts(conn, limit=DELIVERIES_SHOWN)
            dead = outbox_store.list_rows(conn, status="dead", limit=DEAD_SHOWN)
            return attempts, dead

        attempts, dead = await store.read(load)
        return await page("deliveries.html", context("deliveries", attempts=attempts, dead=dead))

    @web.post("/outbox/<row_id>/retry")
    async def retry(row_id: str) -> Response:
        require("outbox", "retry")
        await forms.fields(())
        await retry_row(daemon, row_id)
        return see_other("/deliveries")
