"""Outbox jobs that follow an apply or a stored state: run triggers, inventory sync, drift clear.

- `run_trigger`: creates the downstream `plan_and_apply` run (auto-applied only when the
  downstream workspace sets `auto_apply_run_trigger`), linked by `source_run_id`, and marks the
  job done in the same transaction; then tells the downstream workspace actor. A re-run finds
  the run it created before and creates no second one. If the daemon dies between the commit
  and the tell, the actor finds the pending run in the database when it starts.
- `inventory_sync`: writes the resources of one state version into the inventory; a sync for
  an older state never overwrites a newer one (see `store/inventory.py`).
- `drift_clear`: an apply stored a new state; drift found in an older state is cleared.
- `plan_json`: `terraform show -json` of a run's plan after the run (actors/planjson.py), stored
  with the job marked done; a plan JSON stored already (a re-run) is left as it is.
"""

from __future__ import annotations

import logging

import trio
from sqlalchemy import Connection

from tfward.actors import planjson
from tfward.actors.workspace import Submitted
from tfward.errors import NotFound, PlanUnusable, StateRejected
from tfward.ids import now
from tfward.runs.model import Operation, Run
from tfward.store import artifacts, states
from tfward.store import drift as drift_store
from tfward.store import inventory as inventory_store
from tfward.store import runs as run_store
from tfward.store.resources import resources_of

from .jobs import JobContext, JobFailed, PermanentFailure

log = logging.getLogger(__name__)


# ---- run_trigger ----------------------------------------------------------------------------


async def run_trigger(ctx: JobContext) -> None:
    payload = ctx.job.payload
    name, source = str(payload["workspace"]), str(payload["source_run_id"])
    try:
        ws = ctx.rt.config.workspace(name)
    except KeyError:
        raise PermanentFailure(
            f"downstream workspace {name!r} is no longer configured"
        ) from None
    ws_id = ctx.rt.workspace_ids.get(name)
    if ws_id is None:
        raise PermanentFailure(f"downstream workspace {name!r} has no id yet")

    def tx(conn: Connection) -> tuple[Run, bool]:
        existing = run_store.triggered_run(conn, source, ws_id)
        if existing is not None:
            return run_store.get_run(conn, existing), False
        run = run_store.create_run(
            conn,
            workspace_id=ws_id,
            workspace_name=name,
            operation=Operation.PLAN_AND_APPLY,
            auto_apply=ws.auto_apply_run_trigger,
            message=f"Triggered by run {source} of workspace {payload.get('source_workspace')}",
            created_by=f"run-trigger:{payload.get('source_workspace')}",
            source_run_id=source,
        )
        return run, True

    run, created = await ctx.finish_with(tx)
    if not created:
        log.info("run trigger of %s: run %s already exists", name, run.id)
        return
    log.info("run trigger: queued run %s in %s after %s", run.id, name, source)
    try:
        ctx.teller.tell(name, Submitted(run.id, run.is_speculative))
    except NotFound:
        # No actor (the workspace is being retired, or the daemon is stopping): the run
        # waits in `pending` and is picked up when an actor for the workspace starts.
        log.warning("run trigger: no actor for %s; run %s waits in pending", name, run.id)


# ---- inventory_sync -------------------------------------------------------------------------


async def inventory_sync(ctx: JobContext) -> None:
    job = ctx.job
    ws_id = job.workspace_id
    if ws_id is None:
        raise PermanentFailure("inventory_sync row without a workspace")
    sv_id, serial = str(job.payload["state_version_id"]), int(job.payload["serial"])
    started = await ctx.rt.store.write(
        lambda c: inventory_store.begin_sync(c, ws_id, sv_id, serial, now(), job.lease_expires_at)
    )
    if not started:
        await ctx.finish_with(lambda c: None)
        log.info("inventory: state %s is older than the synced one; nothing to do", sv_id)
        return
    try:
        try:
            raw = await ctx.rt.store.read(lambda c: states.get_raw(c, sv_id))
            secrets = _secrets_of(ctx, ws_id)
            resources = await trio.to_thread.run_sync(resources_of, raw, secrets)
        except (NotFound, StateRejected) as exc:
            raise PermanentFailure(str(exc)) from exc
        shown = await ctx.finish_with(
            lambda c: inventory_store.complete_sync(c, ws_id, sv_id, serial, resources, now())
        )
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await ctx.rt.store.write(lambda c: inventory_store.fail_sync(c, ws_id, sv_id, error))
        raise
    log.info(
        "inventory: %s",
        f"{len(resources)} resources of state {sv_id} (serial {serial})"
        if shown
        else f"state {sv_id} superseded by a newer one",
    )


def _secrets_of(ctx: JobContext, ws_id: str) -> list[str]:
    """The sensitive values of the workspace with id `ws_id`; none if it left the config."""
    for name, known in ctx.rt.workspace_ids.items():
        if known == ws_id:
            try:
                return ctx.rt.config.workspace(name).sensitive_values()
            except KeyError:
                return []
    return []


# ---- drift_clear ----------------------------------------------------------------------------


async def drift_clear(ctx: JobContext) -> None:
    job = ctx.job
    ws_id = job.workspace_id
    if ws_id is None:
        raise PermanentFailure("drift_clear row without a workspace")
    run_id, serial = str(job.payload["run_id"]), int(job.payload["serial"])
    cleared = await ctx.finish_with(lambda c: drift_store.clear(c, ws_id, run_id, serial, now()))
    if cleared:
        log.info("drift of %s cleared by run %s", job.payload.get("workspace"), run_id)


# ---- plan_json --------------------------------------------------------------------------------


async def plan_json(ctx: JobContext) -> None:
    run_id = str(ctx.job.payload["run_id"])

    def load(conn: Connection) -> tuple[str, planjson.Source] | None:
        if not artifacts.plan_json_missing(conn, run_id):
            return None  # stored already (a re-run of the job), or the plan is gone
        run = run_store.get_run(conn, run_id)
        plan = artifacts.get_plan_file(conn, run_id)
        cv_id, sha = run.configuration_version_id, run.configuration_sha256
        if plan is None or cv_id is None or sha is None:
            raise PermanentFailure(f"run {run_id} has no plan file or configuration")
        return run.workspace, planjson.Source(run_id, plan[0], cv_id, sha)

    try:
        loaded = await ctx.rt.store.read(load)
    except (NotFound, PlanUnusable) as exc:
        raise PermanentFailure(str(exc)) from exc
    if loaded is None:
        await ctx.finish_with(lambda c: None)
        return
    name, source = loaded
    try:
        ws = ctx.rt.config.workspace(name)
    except KeyError:
        made = planjson.not_run(f"workspace {name!r} left the config before show -json ran")
        planjson.report(ctx.rt, run_id, made)
    else:
        within = min(ws.plan_timeout, ctx.rt.config.outbox.lease * 0.4)
        try:
            made = await planjson.make(ctx.rt, ws, source, within=within)
        except planjson.NotMade as exc:
            raise JobFailed(str(exc)) from exc
    await ctx.finish_with(lambda c: planjson.store(c, run_id, made))
    if made.failure is None:
        log.info("run %s: plan JSON stored", run_id)
