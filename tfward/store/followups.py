"""Follow-up outbox rows, written in the caller's transaction (the one that causes them).

- `notify_created`: a new run (`run:created`), from `runs.create_run` (written `done` when no
  destination wants it);
- `after_finish`: an applied run that stored a new state version queues a `run_trigger` per
  downstream workspace and, when its workspace is marked drifted, a `drift_clear`, from the
  termination funnel's final transaction;
- `inventory_sync`: a stored state version whose resources were not written with it, from
  `states.store`;
- `plan_json`: a run whose plan was recorded without its JSON (nothing reviewed it during the
  run), from the termination funnel's final transaction (actors/planjson.py).

Every row has an idempotency key derived from its cause, so a retried transaction or a re-run
job never queues a second one (seed H5, O3).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, bindparam, select

from tfward.runs.model import Run, Status

from . import outbox as outbox_store
from .tables import state_versions, workspace_drift


def notify_created(conn: Connection, run: Run, workspace_id: str, *, wanted: bool = True) -> None:
    outbox_store.notify(
        conn,
        "run:created",
        key=f"notify:{run.id}:run:created",
        workspace_id=workspace_id,
        run=run,
        wanted=wanted,
    )


# Built once: the termination funnel runs these for every run that applied.
_STATE_VERSION_OF_RUN = (
    select(state_versions.c.id, state_versions.c.serial)
    .where(state_versions.c.run_id == bindparam("run_id"))
    .order_by(state_versions.c.serial.desc())
    .limit(1)
)
_DRIFTED = select(workspace_drift.c.drifted).where(
    workspace_drift.c.workspace_id == bindparam("ws_id")
)


def state_version_of_run(conn: Connection, run_id: str) -> tuple[str, int] | None:
    """The newest state version `run_id` stored: (id, serial), or None."""
    row = conn.execute(_STATE_VERSION_OF_RUN, {"run_id": run_id}).first()
    return None if row is None else (row.id, row.serial)


def after_finish(
    conn: Connection, run: Run, workspace_id: str, downstream: Sequence[str]
) -> None:
    """Follow-ups of a run that ended `applied` having stored a new state version: a
    `run_trigger` row per downstream workspace and a `drift_clear` row if the workspace is
    marked drifted (no later check can mark it before this transaction commits: drift checks
    are runs of the same workspace). Nothing otherwise."""
    if run.status is not Status.APPLIED:
        return
    stored = state_version_of_run(conn, run.id)
    if stored is None:
        return  # the apply changed nothing: no state, nothing to trigger or clear
    sv_id, serial = stored
    for name in downstream:
        outbox_store.enqueue(
            conn,
            "run_trigger",
            {"source_run_id": run.id, "source_workspace": run.workspace, "workspace": name,
             "state_version_id": sv_id},
            key=f"run_trigger:{run.id}:{name}",
            workspace_id=workspace_id,
        )
    drifted = conn.execute(_DRIFTED, {"ws_id": workspace_id}).scalar()
    if not drifted:
        return  # nothing to clear: a job would only find that out
    outbox_store.enqueue(
        conn,
        "drift_clear",
        {"run_id": run.id, "workspace": run.workspace, "state_version_id": sv_id,
         "serial": serial},
        key=f"drift_clear:{run.id}",
        workspace_id=workspace_id,
    )


def inventory_sync(
    conn: Connection, workspace_id: str, state_version_id: str, serial: int, run_id: str | None
) -> None:
    outbox_store.enqueue(
        conn,
        "inventory_sync",
        {"state_version_id": state_version_id, "serial": serial, "run_id": run_id},
        key=f"inventory_sync:{state_version_id}",
        workspace_id=workspace_id,
    )


def plan_json(conn: Connection, run: Run) -> None:
    """`terraform show -json` of `run`'s plan, after the run. No workspace on the row: the
    workspace's notifications do not wait behind it (rows of one workspace run in order)."""
    outbox_store.enqueue(
        conn,
        "plan_json",
        {"run_id": run.id, "workspace": run.workspace},
        key=f"plan_json:{run.id}",
        run_id=run.id,
    )
