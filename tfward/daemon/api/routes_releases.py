"""Release endpoints: create, list, show (items grouped by batch, exact counts), cancel.

`GET /api/v1/releases/{id}?wait_after=REVISION&wait_timeout=30` long-polls: it answers once
the release looks different from the view whose `revision` was given (an item or its run moved
on), or when the timeout passes. The revision is a digest of the view, so a client that watches
sees every change without polling on a timer; the wait wakes only when the release's change
key is published (a write to it, its items or their runs: store/changes.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import trio
from quart_trio import QuartTrio
from sqlalchemy import Connection
from werkzeug.exceptions import NotFound as HTTPNotFound
from werkzeug.exceptions import ServiceUnavailable

from tfward.errors import BadRequest
from tfward.ids import now, rfc3339
from tfward.releases import model
from tfward.releases.decide import RunResult
from tfward.releases.model import Item, ItemStatus, Release, ReleaseStatus
from tfward.services.releases import cancel_item_run
from tfward.store import audit
from tfward.store import releases as release_store
from tfward.store.audit import AuditAction
from tfward.store.changes import Key

from . import audited, query
from .body import json_object

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon

_CREATE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "batches": list,
    "configuration_version_id": str,
    "variables": dict,
}
_BATCHES = "field 'batches': expected a non-empty list of non-empty lists of workspace names"


def register(app: QuartTrio, daemon: Daemon) -> None:
    store = daemon.store

    @app.post("/api/v1/releases")
    async def create_release() -> tuple[dict[str, Any], int]:
        if daemon.releases is None or not daemon.config.releases.enabled:
            # The executor starts with the daemon: enabling needs a restart.
            raise ServiceUnavailable(
                "releases are disabled: set [releases] enabled = true and restart the daemon"
            )
        if daemon.stopping:
            raise ServiceUnavailable(f"not accepting releases: {daemon.stop_reason}")
        body = await json_object(_CREATE_FIELDS)
        tried = audited.attempt(AuditAction.RELEASE_CREATE, "releases")
        async with audited.refusals_recorded(store, tried):
            return {"data": await store.write(_create(daemon, body, tried))}, 201

    @app.get("/api/v1/releases")
    async def list_releases() -> dict[str, Any]:
        limit: int = query.args()["limit"]
        statuses = [ReleaseStatus(s) for s in query.args()["status"] or ()]

        def load(conn: Connection) -> list[dict[str, Any]]:
            found = release_store.snapshots(conn, statuses=statuses, limit=limit)
            return [release_view(release, runs) for release, runs in found]

        return {"data": await store.read(load)}

    @app.get("/api/v1/releases/<release_id>")
    async def show_release(release_id: str) -> dict[str, Any]:
        def load(conn: Connection) -> dict[str, Any]:
            return release_view(*release_store.snapshot(conn, release_id))

        view = await store.read(load)
        seen: str | None = query.args()["wait_after"]
        timeout: float = query.args()["wait_timeout"]  # checked: 0 to 300 (query.py)
        if not seen or view["revision"] != seen or view["status"] in _TERMINAL:
            return {"data": view}
        # The release's key changes with it, its items and their runs (store/changes.py).
        with trio.move_on_after(timeout), store.changes.subscribe(Key.release(release_id)) as sub:
            while (view := await store.read(load))["revision"] == seen:
                if store.changes.closed:
                    break
                await sub.wait()
        return {"data": view}

    @app.post("/api/v1/releases/<release_id>/actions/<action>")
    async def release_action(release_id: str, action: str) -> tuple[dict[str, Any], int]:
        if action != "cancel":
            raise HTTPNotFound(f"unknown release action {action!r}")
        await json_object({})
        return {"data": await cancel_release(daemon, release_id)}, 202


async def cancel_release(daemon: Daemon, release_id: str) -> dict[str, Any]:
    """Cancel a release for the current caller (whose role the route has checked), through the
    audit trail: what has not started is skipped, running items' runs are cancelled like a
    run's cancel; the release's view. 409 once it has finished, 404 if unknown. The API's
    route and the web page's button both come here."""
    store = daemon.store
    tried = audited.attempt(AuditAction.RELEASE_CANCEL, f"release {release_id}")

    def tx(conn: Connection) -> Release:
        release = release_store.transition(
            conn, release_id, lambda r: model.request_cancel(r, now())
        )
        running = [i.workspace for i in release.with_status(ItemStatus.RUNNING)]
        audit.record(conn, tried, detail={"name": release.name, "running": running})
        return release

    async with audited.refusals_recorded(store, tried):
        release = await store.write(tx)
    # The same path as a run's cancel; the executor repeats it for any run it finds still
    # running, so a cancel that lands while an item is being claimed is not lost.
    for item in release.with_status(ItemStatus.RUNNING):
        if item.run_id:
            await cancel_item_run(daemon.supervisor, item.run_id)
    return await store.read(lambda c: release_view(*release_store.snapshot(c, release_id)))


_TERMINAL = {str(s) for s in ReleaseStatus if s.is_terminal}


def _create(
    daemon: Daemon, body: dict[str, Any], tried: audit.Attempt
) -> Callable[[Connection], dict[str, Any]]:
    """The transaction that creates a release and records it, after the body is checked
    (422 naming what is wrong)."""
    batches = _batches(body.get("batches"), {ws.name for ws in daemon.config.workspaces})
    variables = _variables(body.get("variables"), batches, daemon)
    name = body.get("name") or ""
    if len(name) > 200:
        raise BadRequest("field 'name': at most 200 characters")

    def tx(conn: Connection) -> dict[str, Any]:
        release = release_store.create_release(
            conn,
            name=name,
            batches=batches,
            configuration_version_id=body.get("configuration_version_id"),
            variables=variables,
            created_by=tried.actor,
        )
        detail: dict[str, Any] = {
            "name": release.name,
            "batches": batches,
            "configuration_version_id": body.get("configuration_version_id"),
            "variables": sorted(variables or {}),  # the names; the values are in the release
        }
        created = dataclasses.replace(tried, target=f"release {release.id}")
        audit.record(conn, created, detail=detail)
        return release_view(release, {})

    return tx


def _batches(value: Any, configured: set[str]) -> list[list[str]]:
    """The batches as given, or 422 naming unknown and repeated workspaces."""
    if not isinstance(value, list) or not value:
        raise BadRequest(_BATCHES)
    for batch in value:
        if not isinstance(batch, list) or not batch:
            raise BadRequest(_BATCHES)
        if not all(isinstance(name, str) and name for name in batch):
            raise BadRequest(_BATCHES)
    names = [name for batch in value for name in batch]
    problems = []
    unknown = sorted({n for n in names if n not in configured})
    if unknown:
        problems.append(f"unknown workspaces: {', '.join(unknown)}")
    repeated = sorted(n for n, count in Counter(names).items() if count > 1)
    if repeated:
        problems.append(f"workspaces named more than once: {', '.join(repeated)}")
    if problems:
        raise BadRequest("; ".join(problems))
    return [list(batch) for batch in value]


def _variables(
    value: Mapping[str, Any] | None, batches: list[list[str]], daemon: Daemon
) -> dict[str, Any] | None:
    """Release variables are stored in the database and passed to terraform in clear, so a
    variable a workspace marks sensitive cannot be overridden by a release."""
    if not value:
        return None
    refused = sorted(
        f"{name} (in {ws})"
        for batch in batches
        for ws in batch
        for name in value
        if name in daemon.config.workspace(ws).sensitive
    )
    if refused:
        raise BadRequest(
            "field 'variables': sensitive variables cannot be set by a release: "
            + ", ".join(refused)
        )
    return dict(value)


def release_view(release: Release, runs: Mapping[str, RunResult]) -> dict[str, Any]:
    counts = release.counts
    view: dict[str, Any] = {
        "id": release.id,
        "name": release.name,
        "status": str(release.status),
        "error": release.error,
        "created_by": release.created_by,
        "rollout": {
            "kind": release.rollout.kind,
            "description": release.rollout.describe(),
            "configuration_version_id": release.rollout.configuration_version_id,
            "configuration_sha256": release.rollout.configuration_sha256,
            "variables": release.rollout.variables,
        },
        "counts": {
            "total": counts.total,
            "succeeded": counts.succeeded,
            "failed": counts.failed,
            "skipped": counts.skipped,
            "cancelled": counts.cancelled,
            "running": len(release.with_status(ItemStatus.RUNNING)),
            "pending": len(release.with_status(ItemStatus.PENDING)),
        },
        "current_batch": None if release.status.is_terminal else model.current_batch(release),
        "cancel_requested": release.cancel_requested_at is not None,
        "actions": [] if release.status.is_terminal else ["cancel"],
        "timestamps": {
            "created_at": rfc3339(release.created_at),
            "started_at": rfc3339(release.started_at),
            "cancel_requested_at": rfc3339(release.cancel_requested_at),
            "finished_at": rfc3339(release.finished_at),
        },
        "batches": [
            {
                "batch": batch[0].batch,
                "status": model.batch_status(batch),
                "items": [_item_view(item, runs.get(item.run_id or "")) for item in batch],
            }
            for batch in release.batches
        ],
    }
    digest = hashlib.sha256(json.dumps(view, sort_keys=True, default=str).encode())
    view["revision"] = digest.hexdigest()[:16]
    return view


def _item_view(item: Item, run: RunResult | None) -> dict[str, Any]:
    return {
        "id": item.id,
        "workspace": item.workspace,
        "status": str(item.status),
        "run_id": item.run_id,
        "run_status": str(run.status) if run else None,
        "error": item.error,
        "started_at": rfc3339(item.started_at),
        "finished_at": rfc3339(item.finished_at),
    }
