"""Persistence of runs: rows <-> `Run`, and load -> transition -> save in one transaction."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, func, insert, select, update

from tfward.errors import InvalidTransition, NotFound
from tfward.ids import new_id, now
from tfward.runs.model import (
    ErrorClass,
    ErrorKind,
    Operation,
    ResourceChanges,
    Run,
    Stage,
    Status,
)

from . import followups
from .changes import Key, touch, touch_with
from .tables import configuration_versions, release_items, run_timeline, runs, workspaces
from .workspaces import WorkspaceIds


def run_from_row(row: Row[Any], workspace_name: str) -> Run:
    m = row._mapping
    return Run(
        id=m["id"],
        workspace=workspace_name,
        operation=Operation(m["operation"]),
        auto_apply=m["auto_apply"],
        status=Status(m["status"]),
        created_at=m["created_at"],
        stage=Stage(m["stage"]) if m["stage"] else None,
        message=m["message"],
        targets=tuple(m["targets"]),
        replace=tuple(m["replace"]),
        created_by=m["created_by"],
        error_kind=ErrorKind(m["error_kind"]) if m["error_kind"] else None,
        error_message=m["error_message"],
        error_class=ErrorClass(m["error_class"]) if m["error_class"] else None,
        has_changes=m["has_changes"],
        changes=ResourceChanges(m["add_count"], m["change_count"], m["destroy_count"]),
        plan_hash=m["plan_hash"],
        configuration_version_id=m["configuration_version_id"],
        configuration_sha256=m["configuration_sha256"],
        started_at=m["started_at"],
        planned_at=m["planned_at"],
        plan_expires_at=m["plan_expires_at"],
        confirmed_at=m["confirmed_at"],
        confirmed_by=m["confirmed_by"],
        apply_started_at=m["apply_started_at"],
        finished_at=m["finished_at"],
        cancel_requested_at=m["cancel_requested_at"],
        force_cancel_requested_at=m["force_cancel_requested_at"],
        warnings=tuple(m["warnings"]),
        status_changed_at=m["status_changed_at"],
        release_item_id=m["release_item_id"],
        pinned_configuration_version_id=m["pinned_configuration_version_id"],
        variable_overrides=m["variable_overrides"],
        source_run_id=m["source_run_id"],
        refresh_only=bool(m["refresh_only"]),
        discard_requested_at=m["discard_requested_at"],
        discard_requested_by=m["discard_requested_by"],
        discard_reason=m["discard_reason"],
        plan_json_error=m["plan_json_error"],
    )


def _values(run: Run) -> dict[str, Any]:
    return {
        "status": str(run.status),
        "stage": str(run.stage) if run.stage else None,
        "error_kind": str(run.error_kind) if run.error_kind else None,
        "error_message": run.error_message,
        "error_class": str(run.error_class) if run.error_class else None,
        "has_changes": run.has_changes,
        "add_count": run.changes.add,
        "change_count": run.changes.change,
        "destroy_count": run.changes.destroy,
        "plan_hash": run.plan_hash,
        "configuration_version_id": run.configuration_version_id,
        "started_at": run.started_at,
        "planned_at": run.planned_at,
        "plan_expires_at": run.plan_expires_at,
        "confirmed_at": run.confirmed_at,
        "confirmed_by": run.confirmed_by,
        "apply_started_at": run.apply_started_at,
        "finished_at": run.finished_at,
        "cancel_requested_at": run.cancel_requested_at,
        "force_cancel_requested_at": run.force_cancel_requested_at,
        "warnings": list(run.warnings),
        "status_changed_at": run.status_changed_at,
        "discard_requested_at": run.discard_requested_at,
        "discard_requested_by": run.discard_requested_by,
        "discard_reason": run.discard_reason,
        "plan_json_error": run.plan_json_error,
    }


# Built once: a run is read on every step of a run and every API call about one, and building
# the joined select each time cost more than running it.
_SELECT = (
    select(
        runs,
        workspaces.c.name.label("workspace_name"),
        configuration_versions.c.sha256.label("configuration_sha256"),
    )
    .join(workspaces, workspaces.c.id == runs.c.workspace_id)
    .outerjoin(
        configuration_versions,
        configuration_versions.c.id == runs.c.configuration_version_id,
    )
)
_BY_ID = _SELECT.where(runs.c.id == bindparam("run_id"))


def get_run(conn: Connection, run_id: str) -> Run:
    row = conn.execute(_BY_ID, {"run_id": run_id}).first()
    if row is None:
        raise NotFound(f"run {run_id} not found")
    return run_from_row(row, row.workspace_name)


def workspace_id_of(conn: Connection, run_id: str) -> str:
    ws_id = conn.execute(select(runs.c.workspace_id).where(runs.c.id == run_id)).scalar()
    if ws_id is None:
        raise NotFound(f"run {run_id} not found")
    return str(ws_id)


# Built once (every run is created by these): building .values() cost more than running it.
_NEXT_SEQ = select(func.coalesce(func.max(runs.c.seq), 0) + 1)
_INSERT = insert(runs)


def create_run(
    conn: Connection,
    *,
    workspace_id: str,
    workspace_name: str,
    operation: Operation,
    auto_apply: bool,
    message: str = "",
    targets: Sequence[str] = (),
    replace: Sequence[str] = (),
    created_by: str | None = None,
    release_item_id: str | None = None,
    pinned_configuration_version_id: str | None = None,
    variable_overrides: Mapping[str, Any] | None = None,
    source_run_id: str | None = None,
    refresh_only: bool = False,
    notified: bool = True,
) -> Run:
    """Insert a pending run, with its `run:created` notification in the same transaction
    (`notified` False: no destination wants it, the row is written done). A pinned
    configuration version (a release's, or one a caller chose) is the run's from the start;
    the pipeline applies exactly that instead of a new snapshot."""
    seq = conn.execute(_NEXT_SEQ).scalar_one()
    created = now()
    run = Run(
        id=new_id("run"),
        workspace=workspace_name,
        operation=operation,
        auto_apply=auto_apply,
        status=Status.PENDING,
        created_at=created,
        message=message,
        targets=tuple(targets),
        replace=tuple(replace),
        created_by=created_by,
        status_changed_at=created,
        release_item_id=release_item_id,
        pinned_configuration_version_id=pinned_configuration_version_id,
        configuration_version_id=pinned_configuration_version_id,
        configuration_sha256=_sha256_of(conn, pinned_configuration_version_id),
        variable_overrides=variable_overrides,
        source_run_id=source_run_id,
        refresh_only=refresh_only,
    )
    conn.execute(
        _INSERT,
        {
            "id": run.id,
            "seq": seq,
            "workspace_id": workspace_id,
            "operation": str(operation),
            "auto_apply": auto_apply,
            "message": message,
            "targets": list(targets),
            "replace": list(replace),
            "created_by": created_by,
            "created_at": created,
            "release_item_id": release_item_id,
            "pinned_configuration_version_id": pinned_configuration_version_id,
            "variable_overrides": None if variable_overrides is None else dict(variable_overrides),
            "source_run_id": source_run_id,
            "refresh_only": refresh_only,
            **_values(run),
        },
    )
    _record_timeline(conn, run.id, run.status, None, created)
    followups.notify_created(conn, run, workspace_id, wanted=notified)
    touch(conn, Key.workspace(workspace_id))
    # As get_run reads it back (tests/store/test_runs.py): the view cache keeps it.
    touch_with(conn, Key.run(run.id), run)
    return run


def _sha256_of(conn: Connection, cv_id: str | None) -> str | None:
    if cv_id is None:
        return None
    sha = conn.execute(
        select(configuration_versions.c.sha256).where(configuration_versions.c.id == cv_id)
    ).scalar()
    return None if sha is None else str(sha)


def save(conn: Connection, before: Run, after: Run, *, whole: bool = False) -> Run:
    """Write `after` if the row still holds `before`'s status (compare-and-set). A terminal
    `after` is refused: only the termination funnel ends a run (`save_final`). `whole`: the
    caller read `before` in this transaction (the change then carries the run as it is now,
    for the API's view cache; a `before` from elsewhere may differ in columns it did not
    compare)."""
    if after.status.is_terminal:
        raise InvalidTransition(
            f"run {after.id}: {after.status} can only be recorded by the termination funnel"
        )
    return _compare_and_set(conn, before, after, whole=whole)


def save_final(conn: Connection, before: Run, after: Run, *, whole: bool = False) -> Run:
    """The termination funnel's write of a run's outcome (`model.finish`); nothing else calls
    this (docs/architecture.md §4). `whole` as for `save`."""
    return _compare_and_set(conn, before, after, whole=whole)


# Hot statements are built once, with bind parameters: building an UPDATE of a run's columns
# took ten times as long as running it (docs/architecture.md §12, bench/README.md).
_UPDATE_IF = (
    update(runs)
    .where(runs.c.id == bindparam("b_id"), runs.c.status == bindparam("b_status"))
    .returning(runs.c.workspace_id)
)
_UPDATE = update(runs).where(runs.c.id == bindparam("b_id"))
_UPDATE_RETURNING = _UPDATE.returning(runs.c.workspace_id)
_RELEASE_OF_ITEM = select(release_items.c.release_id).where(release_items.c.id == bindparam("id"))


def _compare_and_set(conn: Connection, before: Run, after: Run, *, whole: bool) -> Run:
    if before == after:
        return after
    old, new = _values(before), _values(after)
    # Only what changed: the SET clause is made from these keys (one compiled form per set).
    changed = {key: value for key, value in new.items() if old[key] != value}
    if not changed:
        return after  # what only the read knows differs (the configuration's sha256)
    params = {**changed, "b_id": before.id, "b_status": str(before.status)}
    ws_id = conn.execute(_UPDATE_IF, params).scalar()
    if ws_id is None:
        raise NotFound(f"run {before.id} changed underneath (expected {before.status})")
    _touch_run(conn, after, str(ws_id), whole=whole)
    if (before.status, before.stage) != (after.status, after.stage):
        moved = after.status_changed_at if before.status != after.status else None
        _record_timeline(conn, after.id, after.status, after.stage, moved or now())
    return after


def _touch_run(conn: Connection, run: Run, ws_id: str, *, whole: bool) -> None:
    """A run's row changed (to `run`, if `whole`): so did its workspace's view (current and
    latest run, queue) and, for a release item's run, its release's (changes.py)."""
    touch(conn, Key.workspace(ws_id))
    if whole:
        touch_with(conn, Key.run(run.id), run)
    else:
        touch(conn, Key.run(run.id))
    if run.release_item_id is not None:
        release_id = conn.execute(_RELEASE_OF_ITEM, {"id": run.release_item_id}).scalar()
        if release_id is not None:
            touch(conn, Key.release(str(release_id)))


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """A status or stage a run entered, and when (`stage` None: the status has none)."""

    status: Status
    stage: Stage | None
    at: datetime


_INSERT_TIMELINE = insert(run_timeline)


def _record_timeline(
    conn: Connection, run_id: str, status: Status, stage: Stage | None, at: datetime
) -> None:
    conn.execute(
        _INSERT_TIMELINE,
        {"run_id": run_id, "status": str(status), "stage": str(stage) if stage else None, "at": at},
    )


def timeline(conn: Connection, run_id: str) -> list[TimelineEntry]:
    """Every status and stage the run entered, in order (runs created before migration
    0012_web have none)."""
    rows = conn.execute(
        select(run_timeline.c.status, run_timeline.c.stage, run_timeline.c.at)
        .where(run_timeline.c.run_id == run_id)
        .order_by(run_timeline.c.id)
    )
    return [
        TimelineEntry(Status(r.status), Stage(r.stage) if r.stage else None, r.at) for r in rows
    ]


def transition(conn: Connection, run_id: str, fn: Callable[[Run], Run]) -> tuple[Run, Run]:
    """Load the run, apply a pure transition, save it. Returns (before, after)."""
    before = get_run(conn, run_id)
    after = fn(before)
    save(conn, before, after, whole=True)
    return before, after


def amend_plan_json(conn: Connection, run_id: str, fn: Callable[[Run], Run]) -> Run:
    """What the plan JSON made after the run says, on the run whatever its status (it may be
    terminal): `fn` (`model.plan_json_stored` / `plan_json_failed`) may change only the change
    counts and `plan_json_error`."""
    before = get_run(conn, run_id)
    after = fn(before)
    same = dataclasses.replace(
        after, changes=before.changes, plan_json_error=before.plan_json_error
    )
    if same != before:
        raise InvalidTransition(f"run {run_id}: the plan JSON may change only its change counts")
    return _compare_and_set(conn, before, after, whole=True)


def set_process(conn: Connection, run_id: str, pid: int | None, stage: Stage | None) -> None:
    """Record the terraform PID and its stage before it matters after a crash
    (docs/architecture.md §2)."""
    conn.execute(_UPDATE, {"b_id": run_id, "pid": pid, "pid_stage": str(stage) if stage else None})


def set_configuration(
    conn: Connection, run_id: str, cv_id: str, state_version_id: str | None
) -> None:
    ws_id = conn.execute(
        _UPDATE_RETURNING,
        {
            "b_id": run_id,
            "configuration_version_id": cv_id,
            "planned_state_version_id": state_version_id,
        },
    ).scalar()
    if ws_id is not None:  # the run shows its configuration version
        touch(conn, Key.run(run_id), Key.workspace(str(ws_id)))


_PLANNED_STATE = select(runs.c.planned_state_version_id).where(runs.c.id == bindparam("run_id"))


def planned_state_version(conn: Connection, run_id: str) -> str | None:
    value = conn.execute(_PLANNED_STATE, {"run_id": run_id}).scalar()
    return None if value is None else str(value)


def list_runs(
    conn: Connection,
    *,
    workspace_id: str | None = None,
    statuses: Sequence[Status] = (),
    limit: int | None = 100,
    oldest_first: bool = False,
    offset: int = 0,
) -> list[Run]:
    query = _SELECT
    if workspace_id is not None:
        query = query.where(runs.c.workspace_id == workspace_id)
    if statuses:
        query = query.where(runs.c.status.in_([str(s) for s in statuses]))
    query = query.order_by(runs.c.seq.asc() if oldest_first else runs.c.seq.desc()).limit(limit)
    if offset:
        query = query.offset(offset)
    return [run_from_row(row, row.workspace_name) for row in conn.execute(query)]


def oldest_of_each(
    conn: Connection, ws_ids: WorkspaceIds, statuses: Sequence[Status]
) -> dict[str, Run]:
    """Each of the workspaces `ws_ids`' oldest run in `statuses` (what `list_runs(...,
    statuses=statuses, limit=1, oldest_first=True)` gives for one), in one statement."""
    oldest = (
        select(func.min(runs.c.seq))
        .where(runs.c.workspace_id.in_(ws_ids), runs.c.status.in_([str(s) for s in statuses]))
        .group_by(runs.c.workspace_id)
    )
    rows = conn.execute(_SELECT.where(runs.c.seq.in_(oldest)))
    return {row.workspace_id: run_from_row(row, row.workspace_name) for row in rows}


def count_of_each(conn: Connection, ws_ids: WorkspaceIds, status: Status) -> dict[str, int]:
    """How many runs each of the workspaces `ws_ids` has in `status` (none: left out)."""
    rows = conn.execute(
        select(runs.c.workspace_id, func.count())
        .where(runs.c.workspace_id.in_(ws_ids), runs.c.status == str(status))
        .group_by(runs.c.workspace_id)
    )
    return {str(ws_id): int(count) for ws_id, count in rows}


def in_flight(conn: Connection) -> list[tuple[Run, int | None]]:
    """Runs a daemon may have left in flight (planning, applying, apply_pending), oldest first,
    each with the terraform PID recorded on it (or None)."""
    found = list_runs(
        conn,
        statuses=(Status.PLANNING, Status.APPLYING, Status.APPLY_PENDING),
        limit=None,
        oldest_first=True,
    )
    rows = conn.execute(select(runs.c.id, runs.c.pid).where(runs.c.id.in_([r.id for r in found])))
    pids: dict[str, int | None] = {row.id: row.pid for row in rows}
    return [(run, pids.get(run.id)) for run in found]


def triggered_run(conn: Connection, source_run_id: str, ws_id: str) -> str | None:
    """The run a run trigger already created in `ws_id` for `source_run_id`, if any."""
    value = conn.execute(
        select(runs.c.id).where(runs.c.source_run_id == source_run_id, runs.c.workspace_id == ws_id)
    ).scalar()
    return None if value is None else str(value)
