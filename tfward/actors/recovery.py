"""Recovery at start: finish what a previous daemon left in flight, before anything runs.

For each run found non-terminal (docs/architecture.md §5), first the rest of terraform's
output files (what it wrote after the daemon died) is appended to the run's log, then:
- `planning`: back to `pending` (its directory removed), to be planned again;
- `applying` before terraform apply started: back to `pending`; during or after the apply:
  the newest copy of the state — the run directory's state, terraform's `errored.tfstate` or
  the state it printed, this run's backup files — is stored first, then the run ends `applied`
  if terraform had finished (the stage was past `applying`, or the exit code the shim wrote
  is 0: kind `apply`), else `failed`/`interrupted` (kind `partial`);
- `apply_pending`: stays waiting if its plan artifact is intact and the workspace state has not
  moved since the plan; otherwise it is planned again (seed 003).
Every one of these goes through the termination funnel. Then: terraform process groups
recorded on runs that still exist are killed, locks held by finished runs are released, run
credentials of the previous process are revoked (a run that goes on gets a new one), run
directories of finished or unknown runs are removed (a finished run's leftover output is added
to its log first). What was done is counted in the metrics (`tfward_recovery_actions_total`),
and saved plans found unusable too. Storage faults are waited out (patiently): a daemon that
starts while storage fails waits, degraded, instead of crashing.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
from collections.abc import Mapping
from pathlib import Path

import trio
from sqlalchemy import Connection

from tfward.errors import NotFound, StateRejected
from tfward.ids import now
from tfward.runs.model import ErrorKind, Run, Stage, Status
from tfward.store import artifacts, credentials, states
from tfward.store import runs as run_store
from tfward.store import workspaces as ws_store
from tfward.store.health import patient

from . import planjson, takeover, workdir
from .funnel import Outcome, finish_run
from .handle import RunHandle
from .pipeline import RunPipeline
from .procgroup import (
    group_running,
    groups_with_cwd_under,
    is_terraform_group,
    kill_group,
    signal_group,
)
from .runlog import RunLog
from .runtime import Runtime
from .statekeeper import RunStateKeeper, choose
from .takeover import Origin, RecoveryReport
from .terraform import read_exit_code

log = logging.getLogger(__name__)


async def recover(
    rt: Runtime, owned: Mapping[str, Origin] | None = None, *, at_start: bool = True
) -> RecoveryReport:
    """Finish what a previous daemon left in flight in the workspaces `owned` (name -> where
    their runs ran: this daemon's earlier life, or the daemon they were taken from; None:
    every configured workspace, from this daemon). At start it runs before any actor or the
    API starts, and also removes orphan directories of this data dir; when the lease loop
    takes workspaces over, for those alone (docs/architecture.md §15). Returns the report
    (logged, served at GET /api/v1/recovery). Patient with storage; under the new owner's
    fence, so a daemon that loses the workspaces again meanwhile stops (FencedOut)."""
    if owned is None:
        owned = dict.fromkeys(rt.workspace_ids, Origin.of_self(rt))
    with patient(rt.give_up):
        return await _recover(rt, owned, at_start)


async def _recover(rt: Runtime, owned: Mapping[str, Origin], at_start: bool) -> RecoveryReport:
    report = RecoveryReport()
    found = await rt.store.read(run_store.in_flight)
    in_flight = [(run, pid) for run, pid in found if run.workspace in owned]
    await _stop_processes(rt, owned, in_flight, at_start, report)
    for run, _ in in_flight:
        if run.workspace not in rt.workspace_ids:
            continue  # removed from the config: left as it is until configured again
        origin = owned[run.workspace]
        run_dir = origin.run_dir(run.id)
        if await trio.to_thread.run_sync(takeover.reachable, origin, run_dir):
            if run_dir != rt.run_dir(run.id):
                rt.adopted_dirs[run.id] = run_dir
            try:
                await _recover_run(rt, run, report)
            finally:
                rt.adopted_dirs.pop(run.id, None)
        elif takeover.needs_directory(run):
            await takeover.finish_out_of_reach(rt, run, origin, report)
        else:
            await _recover_run(rt, run, report)  # nothing applied: no directory needed
    ws_ids = [rt.workspace_ids[n] for n in owned if n in rt.workspace_ids]
    await rt.store.write(lambda c: _release_stale_locks(c, report, set(ws_ids)))
    # No terraform of the previous owner runs any more: its run credentials die with it.
    await rt.store.write(lambda c: credentials.revoke_for_workspaces(c, ws_ids, now()))
    if at_start:
        await _remove_orphan_dirs(rt, report)
    rt.metrics.recovered(report.as_dict())
    if any(report.as_dict().values()):
        log.warning("recovery: %s", {k: v for k, v in report.as_dict().items() if v})
    return report


async def _stop_processes(
    rt: Runtime,
    owned: Mapping[str, Origin],
    in_flight: list[tuple[Run, int | None]],
    at_start: bool,
    report: RecoveryReport,
) -> None:
    """Terraform left running by the runs' previous owner, when it ran on this host (a pid
    means nothing elsewhere): at start every process in this data dir's runs, and every
    `show -json` after a run (planjson.py: in a kept init or its own directory; its job comes
    back); at a takeover those working in the taken runs' directories."""
    here = [(run, pid) for run, pid in in_flight if owned[run.workspace].same_host]
    roots = [owned[run.workspace].run_dir(run.id) for run, _ in here]
    if at_start:
        roots += [rt.data_dir / d for d in ("runs", planjson.SCRATCH_DIR, "init-cache")]
    await stop_leftover_processes(
        roots, [pid for _, pid in here if pid], rt.config.terraform.cancel_grace, report
    )


async def stop_leftover_processes(
    roots: list[Path], recorded: list[int], grace: float, report: RecoveryReport
) -> None:
    """Stop terraform process groups a previous daemon left running: those recorded on runs,
    and any process whose working directory is a run directory (it may have started just
    before the pid was recorded). They are stopped the way a cancel stops them — SIGINT to
    the group, `grace` seconds, then SIGKILL — so terraform lets in-flight operations finish
    and writes the state that recovery then stores."""
    groups = {pid for pid in recorded if is_terraform_group(pid)}
    for root in roots:
        groups |= groups_with_cwd_under(root)
    groups.discard(os.getpgrp())
    if not groups:
        return
    for pgid in groups:
        signal_group(pgid, signal.SIGINT)
    with trio.move_on_after(grace):
        # Not our children: there is no exit event to wait on, so poll.
        while any(group_running(g) for g in groups):  # noqa: ASYNC110
            await trio.sleep(0.1)
    for pgid in sorted(groups):
        if group_running(pgid):
            kill_group(pgid)
            report.killed_processes.append(pgid)
        else:
            report.stopped_processes.append(pgid)


async def _recover_run(rt: Runtime, run: Run, report: RecoveryReport) -> None:
    pipeline = RunPipeline(
        rt, RunHandle(run.id, run.is_speculative, 0.0), rt.workspace(run.workspace)
    )
    pipeline.keeper = RunStateKeeper(pipeline.ctx, with_backups=True)
    await pipeline.log.open()
    run_dir = rt.run_dir(run.id)
    added = await pipeline.log.recover_output(run_dir / workdir.OUTPUT_DIR)
    if added:
        pipeline.log.note(
            f"{added} bytes of terraform output, written after the daemon stopped, were "
            "added from its output files"
        )
    outcome: Outcome | None
    if run.status is Status.PLANNING or (
        run.status is Status.APPLYING and run.stage in (None, Stage.RESTORING_PLAN, Stage.PRE_APPLY)
    ):
        outcome = Outcome.requeued(
            f"the daemon stopped while the run was {run.status} ({run.stage})"
        )
        report.requeued.append(run.id)
    elif run.status is Status.APPLYING:
        pipeline.ending.apply_started = True
        pipeline.ending.plan_json_after = await rt.store.read(
            lambda c: artifacts.plan_json_missing(c, run.id)
        )
        outcome = await _apply_outcome(rt, run, pipeline)
        (report.finished if outcome.status is Status.APPLIED else report.interrupted).append(run.id)
    else:
        reason = await rt.store.read(
            lambda c: _plan_problem(c, run, rt.workspace_ids[run.workspace])
        )
        if reason is None:
            report.kept_waiting.append(run.id)
            await pipeline.log.flush(patient=True)
            return
        if reason in artifacts.PLAN_PROBLEM_REASONS:  # not when only the lock was lost
            rt.metrics.plan_unusable(artifacts.PLAN_PROBLEM_REASONS[reason])
        outcome = Outcome.requeued(reason)
        report.requeued.append(run.id)
    await finish_run(rt, pipeline.ending, outcome, keeper=pipeline.keeper)


async def _apply_outcome(rt: Runtime, run: Run, pipeline: RunPipeline) -> Outcome:
    """How a run found applying ends: `applied` when terraform had finished (the stage was past
    the apply, or its exit code on disk is 0), else `failed`/`interrupted`."""
    output_dir = rt.run_dir(run.id) / workdir.OUTPUT_DIR
    code = await trio.to_thread.run_sync(_apply_exit_code, output_dir)
    if run.stage in (Stage.SAVING_STATE, Stage.POST_APPLY):
        return Outcome(Status.APPLIED, warning=f"the daemon stopped during {run.stage}")
    if code == 0:
        return Outcome(
            Status.APPLIED,
            warning="the daemon stopped after terraform applied (exit code 0), before the "
            "state was saved",
        )
    stored = await rt.store.read(lambda c: _stored_kind(c, run))
    gone = not await trio.to_thread.run_sync(rt.run_dir(run.id).exists)
    if stored == "apply" and gone:
        # The funnel had stored the applied state and removed the directory already.
        return Outcome(Status.APPLIED, warning="the daemon stopped while the run finished")
    how = "terraform was stopped" if code is None else f"terraform exited with code {code}"
    left = "the state terraform left was stored"
    if stored is None:
        left = await _what_is_left(rt, run, pipeline.keeper)
    return Outcome.failed(
        ErrorKind.INTERRUPTED, f"the daemon stopped during the apply ({how}); {left}"
    )


async def _what_is_left(rt: Runtime, run: Run, keeper: RunStateKeeper) -> str:
    """What the funnel will find of the state a stopped apply left (it stores the newest copy
    next): a copy newer than the workspace's state, none, or only copies it cannot store."""
    copies = await trio.to_thread.run_sync(keeper.copies)
    if not copies:
        return "terraform left no readable state"
    ws_id = rt.workspace_ids[run.workspace]
    current = await rt.store.read(lambda c: states.current(c, ws_id))
    try:
        newer = choose(copies, current) is not None
    except StateRejected:
        return "terraform left no state that can be stored (a copy is kept aside)"
    if newer:
        return "the state terraform left was stored"
    return "terraform left no state newer than the workspace's"


def _apply_exit_code(output_dir: Path) -> int | None:
    """The exit code of the run's newest `terraform apply`, as the shim wrote it."""
    exits = sorted(output_dir.glob("*-apply.exit")) if output_dir.is_dir() else []
    return read_exit_code(exits[-1]) if exits else None


def _stored_kind(conn: Connection, run: Run) -> str | None:
    """The kind of the newest state version this run stored, if any."""
    ws_id = run_store.workspace_id_of(conn, run.id)
    mine = [v for v in states.list_versions(conn, ws_id, limit=20) if v.run_id == run.id]
    return mine[0].kind if mine else None


def _plan_problem(conn: Connection, run: Run, ws_id: str) -> str | None:
    """Why an apply_pending run cannot keep waiting, or None if its plan is still good."""
    current = states.current(conn, ws_id)
    problem = artifacts.plan_problem(
        conn,
        run.id,
        run.plan_hash,
        current.id if current else None,
        run_store.planned_state_version(conn, run.id),
    )
    if problem is not None:
        return problem
    lock = ws_store.get_lock(conn, ws_id)
    if lock is None or lock.run_id != run.id:
        return "it no longer holds the workspace lock"
    return None


def _release_stale_locks(conn: Connection, report: RecoveryReport, ws_ids: set[str]) -> None:
    for ws_id, run_id in ws_store.locks_held_by_runs(conn):
        if ws_id not in ws_ids:
            continue  # another daemon's workspace
        run = run_store.get_run(conn, run_id)
        if run.status.is_terminal and not takeover.keeps_lock(run):
            ws_store.release_lock(conn, ws_id, run_id=run_id)
            report.released_locks.append(ws_id)


async def _remove_orphan_dirs(rt: Runtime, report: RecoveryReport) -> None:
    root = rt.data_dir / "runs"
    if not root.is_dir():
        return
    names = [p.name for p in root.iterdir()]
    # Every run not finished keeps its directory: apply_pending ones apply from it, and runs
    # of a workspace removed from the config keep the state terraform left until it returns.
    unfinished = (Status.PENDING, Status.PLANNING, Status.APPLY_PENDING, Status.APPLYING)
    live = await rt.store.read(
        lambda c: {r.id for r in run_store.list_runs(c, statuses=unfinished, limit=None)}
    )
    for name in names:
        if name not in live:
            await _store_leftover_output(rt, name, root / name / workdir.OUTPUT_DIR)
            await trio.to_thread.run_sync(shutil.rmtree, root / name, True)
            report.removed_directories.append(name)


async def _store_leftover_output(rt: Runtime, run_id: str, output_dir: Path) -> None:
    """A finished run whose directory is still there (its log could not be stored whole):
    what its output files hold beyond the stored log is added before they go."""
    if not await trio.to_thread.run_sync(output_dir.is_dir):
        return
    try:
        workspace = await rt.store.read(lambda c: run_store.get_run(c, run_id).workspace)
        secrets = rt.workspace(workspace).sensitive_values()
    except NotFound:
        return  # an unknown run, or a workspace no longer configured: nothing to mask with
    log_ = RunLog(run_id, rt.store, secrets)
    await log_.open()
    if await log_.recover_output(output_dir):
        log_.note("the rest of terraform's output, found in the run directory at start")
        await log_.close()
