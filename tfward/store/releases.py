"""Persistence of releases: rows <-> `Release`, and load -> transition -> save in one transaction.

A save is a compare-and-set: the release row only over the `version` it was loaded with, each
changed item only over the status it was loaded with. Claiming an item creates its run and
stores the run id in the same transaction, so an item has a run exactly when it left
`pending`; `runs.release_item_id` is unique, so the database itself refuses a second run for an
item. The transaction that ends a release also puts its notification in the outbox.

A release, its items and their runs are read in ONE statement: pysqlite sends no BEGIN before a
SELECT, so two SELECTs of one `Store.read` can see two different commits (a release row with
the counts from before an item's status change, and the item after it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from tfward.config import thaw
from tfward.errors import BadRequest, InvalidTransition, NotFound
from tfward.ids import new_id, now
from tfward.releases import model
from tfward.releases.decide import RunResult
from tfward.releases.model import Item, ItemStatus, Release, ReleaseStatus, Rollout
from tfward.runs.model import Operation, Run
from tfward.runs.model import Status as RunStatus

from . import artifacts
from . import outbox as outbox_store
from . import runs as run_store
from .changes import RELEASES, Key, touch
from .tables import configuration_versions, release_items, releases, runs, workspaces

TRIGGERS = {
    ReleaseStatus.SUCCEEDED: "release:completed",
    ReleaseStatus.FAILED: "release:failed",
    # A cancelled release did not roll its change out either.
    ReleaseStatus.CANCELLED: "release:failed",
}


def create_release(
    conn: Connection,
    *,
    name: str,
    batches: Sequence[Sequence[str]],
    configuration_version_id: str | None = None,
    variables: Mapping[str, Any] | None = None,
    created_by: str | None = None,
) -> Release:
    """Insert a pending release and its items. Workspaces are named as configured (the API
    checks them first); a configuration version that does not exist is NotFound (404)."""
    sha = None
    if configuration_version_id is not None:
        sha = conn.execute(
            select(configuration_versions.c.sha256).where(
                configuration_versions.c.id == configuration_version_id
            )
        ).scalar()
        if sha is None:
            raise NotFound(f"configuration version {configuration_version_id} not found")
    names = [ws for batch in batches for ws in batch]
    ws_ids = dict(
        conn.execute(
            select(workspaces.c.name, workspaces.c.id).where(workspaces.c.name.in_(names))
        ).all()
    )
    missing = sorted(set(names) - ws_ids.keys())
    if missing:
        raise BadRequest(f"unknown workspaces: {', '.join(missing)}")
    release_id = new_id("rel")
    release = model.new_release(
        release_id,
        name or release_id,
        batches,
        [new_id("ri") for _ in names],
        now(),
        rollout=Rollout(configuration_version_id, sha, dict(variables) if variables else None),
        created_by=created_by,
    )
    conn.execute(insert(releases).values(id=release.id, **_release_values(release)))
    conn.execute(
        insert(release_items),
        [
            {
                "id": item.id,
                "release_id": release.id,
                "batch": item.batch,
                "position": item.position,
                "workspace_id": ws_ids[item.workspace],
                **_item_values(item),
            }
            for item in release.items
        ],
    )
    touch(conn, RELEASES, Key.release(release.id))
    return release


def load(conn: Connection, release_id: str) -> Release:
    return snapshot(conn, release_id)[0]


def snapshot(conn: Connection, release_id: str) -> tuple[Release, dict[str, RunResult]]:
    """The release with its items, and its items' runs by run id, as of one moment."""
    found = _read(conn, releases.c.id == release_id)
    if not found:
        raise NotFound(f"release {release_id} not found")
    return found[0]


def snapshots(
    conn: Connection, *, statuses: Sequence[ReleaseStatus] = (), limit: int = 100
) -> list[tuple[Release, dict[str, RunResult]]]:
    """Like `snapshot`, for the newest `limit` releases (optionally of some statuses)."""
    newest = select(releases.c.id).order_by(releases.c.created_at.desc()).limit(limit)
    if statuses:
        newest = newest.where(releases.c.status.in_([str(s) for s in statuses]))
    return _read(conn, releases.c.id.in_(newest.scalar_subquery()))


def unfinished(conn: Connection) -> list[str]:
    """Ids of the releases an executor has to drive, oldest first."""
    query = (
        select(releases.c.id)
        .where(releases.c.status.in_([str(ReleaseStatus.PENDING), str(ReleaseStatus.RUNNING)]))
        .order_by(releases.c.created_at)
    )
    return [str(rid) for rid in conn.execute(query).scalars()]


def save(conn: Connection, before: Release, after: Release) -> Release:
    """Write `after` over `before` (compare-and-set on the version and on each changed item's
    status); raises InvalidTransition if someone else changed it first. Enqueues the
    notification when the release ends."""
    if before == after:
        return after
    result = conn.execute(
        update(releases)
        .where(releases.c.id == before.id, releases.c.version == before.version)
        .values(**_release_values(after))
    )
    if result.rowcount != 1:
        raise InvalidTransition(f"release {before.id} changed underneath; look again")
    old = {item.id: item for item in before.items}
    for item in after.items:
        if item == old[item.id]:
            continue
        result = conn.execute(
            update(release_items)
            .where(release_items.c.id == item.id, release_items.c.status == old[item.id].status)
            .values(**_item_values(item))
        )
        if result.rowcount != 1:
            raise InvalidTransition(f"release item {item.id} changed underneath; look again")
    if after.status.is_terminal and not before.status.is_terminal:
        _notify(conn, after)
    touch(conn, Key.release(after.id))
    return after


def transition(conn: Connection, release_id: str, fn: Callable[[Release], Release]) -> Release:
    """Load the release, apply a pure transition, save it."""
    before = load(conn, release_id)
    return save(conn, before, fn(before))


def claim(
    conn: Connection,
    release_id: str,
    item_id: str,
    *,
    workspace_id: str,
    max_parallel: int = 0,
) -> tuple[Release, Run]:
    """Claim a pending item: create its auto-applied `plan_and_apply` run and mark the item
    running with the run's id, in this one transaction. Raises InvalidTransition (and the
    transaction, run included, rolls back) when the item is no longer claimable."""
    before = load(conn, release_id)
    model.check_claim(before, item_id, max_parallel=max_parallel)
    item = before.item(item_id)
    rollout = before.rollout
    pinned = (
        _pin(conn, rollout.configuration_version_id, workspace_id)
        if rollout.configuration_version_id
        else None
    )
    run = run_store.create_run(
        conn,
        workspace_id=workspace_id,
        workspace_name=item.workspace,
        operation=Operation.PLAN_AND_APPLY,
        auto_apply=True,
        message=f"release {before.name}: batch {item.batch}",
        created_by=f"release {before.id}",
        release_item_id=item.id,
        pinned_configuration_version_id=pinned,
        variable_overrides=thaw(rollout.variables) if rollout.variables else None,
    )
    after = model.claim(before, item_id, run.id, now(), max_parallel=max_parallel)
    return save(conn, before, after), run


def runs_per_item(conn: Connection, release_id: str) -> dict[str, int]:
    """How many runs each item of a release has (for checks: never more than one)."""
    query = (
        select(release_items.c.id, runs.c.id)
        .select_from(release_items)
        .join(runs, runs.c.release_item_id == release_items.c.id, isouter=True)
        .where(release_items.c.release_id == release_id)
    )
    counts: dict[str, int] = {}
    for item_id, run_id in conn.execute(query).all():
        counts[item_id] = counts.get(item_id, 0) + (run_id is not None)
    return counts


def _pin(conn: Connection, cv_id: str, workspace_id: str) -> str:
    """The release's configuration version, as a version of `workspace_id` (content-addressed:
    the same archive in every workspace, stored once per workspace)."""
    row = conn.execute(
        select(configuration_versions.c.file_count).where(configuration_versions.c.id == cv_id)
    ).first()
    if row is None:
        raise NotFound(f"configuration version {cv_id} not found")
    sha, archive = artifacts.configuration_archive(conn, cv_id)
    return artifacts.put_configuration(conn, workspace_id, archive, row.file_count, sha).id


def _notify(conn: Connection, release: Release) -> None:
    """The release's end, for the destinations of its workspaces (outbox/jobs.py): they are
    named in the row, so the fan-out needs nothing but the row."""
    counts = release.counts
    outbox_store.notify(
        conn,
        TRIGGERS[release.status],
        key=f"notify:{release.id}:final",
        message=release.error or f"release {release.name} {release.status}",
        release_id=release.id,
        release_name=release.name,
        release_status=str(release.status),
        release_error=release.error,
        created_by=release.created_by,
        workspaces=list(dict.fromkeys(item.workspace for item in release.items)),
        rollout=release.rollout.describe(),
        counts={
            "total": counts.total,
            "succeeded": counts.succeeded,
            "failed": counts.failed,
            "skipped": counts.skipped,
            "cancelled": counts.cancelled,
        },
    )


def _run_error(kind: str | None, message: str | None) -> str | None:
    if kind and message:
        return f"{kind}: {message}"
    return message or kind


_ITEM_COLUMNS = [c.label(f"item_{c.name}") for c in release_items.c]


def _read(conn: Connection, where: Any) -> list[tuple[Release, dict[str, RunResult]]]:
    """Releases matching `where`, newest first, each with its items and their runs."""
    query = (
        select(
            releases,
            *_ITEM_COLUMNS,
            workspaces.c.name.label("item_workspace"),
            runs.c.status.label("run_status"),
            runs.c.error_kind.label("run_error_kind"),
            runs.c.error_message.label("run_error_message"),
        )
        .select_from(releases)
        .join(release_items, release_items.c.release_id == releases.c.id)
        .join(workspaces, workspaces.c.id == release_items.c.workspace_id)
        .outerjoin(runs, runs.c.id == release_items.c.run_id)
        .where(where)
        .order_by(
            releases.c.created_at.desc(),
            releases.c.id,
            release_items.c.batch,
            release_items.c.position,
        )
    )
    grouped: dict[str, tuple[Row[Any], list[Item], dict[str, RunResult]]] = {}
    for row in conn.execute(query):
        m = row._mapping
        _, found_items, found_runs = grouped.setdefault(m["id"], (row, [], {}))
        found_items.append(
            Item(
                id=m["item_id"],
                batch=m["item_batch"],
                position=m["item_position"],
                workspace=m["item_workspace"],
                status=ItemStatus(m["item_status"]),
                run_id=m["item_run_id"],
                started_at=m["item_started_at"],
                finished_at=m["item_finished_at"],
                error=m["item_error"],
            )
        )
        if m["item_run_id"] and m["run_status"]:
            found_runs[m["item_run_id"]] = RunResult(
                m["item_run_id"],
                RunStatus(m["run_status"]),
                _run_error(m["run_error_kind"], m["run_error_message"]),
            )
    return [(_from_row(row, found), found_runs) for row, found, found_runs in grouped.values()]


def _from_row(row: Row[Any], items: Sequence[Item]) -> Release:
    m = row._mapping
    return Release(
        id=m["id"],
        name=m["name"],
        status=ReleaseStatus(m["status"]),
        created_at=m["created_at"],
        items=tuple(items),
        rollout=Rollout(m["configuration_version_id"], m["configuration_sha256"], m["variables"]),
        counts=model.Counts(
            total=m["total"],
            succeeded=m["succeeded"],
            failed=m["failed"],
            skipped=m["skipped"],
            cancelled=m["cancelled"],
        ),
        version=m["version"],
        created_by=m["created_by"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        cancel_requested_at=m["cancel_requested_at"],
        error=m["error"],
    )


def _release_values(release: Release) -> dict[str, Any]:
    counts = release.counts
    return {
        "name": release.name,
        "status": str(release.status),
        "version": release.version,
        "total": counts.total,
        "succeeded": counts.succeeded,
        "failed": counts.failed,
        "skipped": counts.skipped,
        "cancelled": counts.cancelled,
        "configuration_version_id": release.rollout.configuration_version_id,
        "configuration_sha256": release.rollout.configuration_sha256,
        "variables": thaw(release.rollout.variables) if release.rollout.variables else None,
        "error": release.error,
        "created_by": release.created_by,
        "created_at": release.created_at,
        "started_at": release.started_at,
        "finished_at": release.finished_at,
        "cancel_requested_at": release.cancel_requested_at,
    }


def _item_values(item: Item) -> dict[str, Any]:
    return {
        "status": str(item.status),
        "run_id": item.run_id,
        "started_at": item.started_at,
        "finished_at": item.finished_at,
        "error": item.error,
    }
