"""Recovery at start: finish what a previous daemon left in flight, before anything runs.

For each run found non-terminal (docs/architecture.md §5):
- `planning`: back to `pending` (its directory removed), to be planned again;
- `applying` before terraform apply started: back to `pending`; during or after the apply: the
  state terraform left in the run directory is stored first (`partial` during the apply,
  `apply` once it had finished), then the run ends `failed`/`interrupted` (or `applied` when
  terraform had finished and the state is stored);
- `apply_pending`: stays waiting if its plan artifact is intact and the workspace state has not
  moved since the plan; otherwise it is planned again (seed 003).
Every one of these goes through the termination funnel. Then: terraform process groups
recorded on runs that still exist are killed, locks held by finished runs are released, run
credentials of the previous process are revoked (a run that goes on gets a new one), run
directories of finished or unknown runs are removed. What was done is counted in the metrics
(`tfward_recovery_actions_total`), and saved plans found unusable too.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

import trio
from sqlalchemy import Connection

from tfward.ids import now
from tfward.runs.model import ErrorKind, Run, Stage, Status
from tfward.store import artifacts, credentials, states
from tfward.store import runs as run_store
from tfward.store import workspaces as ws_store

from . import workdir
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
from .runtime import Runtime

log = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    requeued: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    kept_waiting: list[str] = field(default_factory=list)
    stopped_processes: list[int] = field(default_factory=list)  # exited after SIGINT
    killed_processes: list[int] = field(default_factory=list)  # needed SIGKILL
    released_locks: list[str] = field(default_factory=list)
    removed_directories: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str] | list[int]]:
        return dict(self.__dict__)


async def recover(rt: Runtime) -> RecoveryReport:
    """Finish what a previous daemon left in flight. Runs before any actor or the API starts;
    returns the report (also logged, and served at GET /api/v1/recovery)."""
    report = RecoveryReport()
    in_flight = await rt.store.read(run_store.in_flight)
    await stop_leftover_processes(
        rt.data_dir / "runs",
        [pid for _, pid in in_flight if pid],
        rt.config.terraform.cancel_grace,
        report,
    )
    for run, _ in in_flight:
        if run.workspace not in rt.workspace_ids:
            continue  # removed from the config: left as it is until configured again
        await _recover_run(rt, run, report)
    await rt.store.write(lambda c: _release_stale_locks(c, report))
    # No terraform of the previous process runs any more: its run credentials die with it.
    await rt.store.write(lambda c: credentials.revoke_all(c, now()))
    await _remove_orphan_dirs(rt, report)
    rt.metrics.recovered(report.as_dict())
    if any(report.as_dict().values()):
        log.warning("recovery: %s", {k: v for k, v in report.as_dict().items() if v})
    return report


async def stop_leftover_processes(
    runs_root: Path, recorded: list[int], grace: float, report: RecoveryReport
) -> None:
    """Stop terraform process groups a previous daemon left running: those recorded on runs,
    and any process whose working directory is a run directory (it may have started just
    before the pid was recorded). They are stopped the way a cancel stops them — SIGINT to
    the group, `grace` seconds, then SIGKILL — so terraform lets in-flight operations finish
    and writes the state that recovery then stores."""
    groups = {pid for pid in recorded if is_terraform_group(pid)} | groups_with_cwd_under(runs_root)
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
    await pipeline.log.open()
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
        if run.stage in (Stage.SAVING_STATE, Stage.POST_APPLY):
            outcome = Outcome(Status.APPLIED, warning=f"the daemon stopped during {run.stage}")
            report.finished.append(run.id)
        else:
            outcome = Outcome.failed(ErrorKind.INTERRUPTED, await _interrupted_message(rt, run))
            report.interrupted.append(run.id)
    else:
        reason = await rt.store.read(
            lambda c: _plan_problem(c, run, rt.workspace_ids[run.workspace])
        )
        if reason is None:
            report.kept_waiting.append(run.id)
            return
        if reason in artifacts.PLAN_PROBLEM_REASONS:  # not when only the lock was lost
            rt.metrics.plan_unusable(artifacts.PLAN_PROBLEM_REASONS[reason])
        outcome = Outcome.requeued(reason)
        report.requeued.append(run.id)
    await finish_run(rt, pipeline.ending, outcome, keeper=pipeline.keeper)


async def _interrupted_message(rt: Runtime, run: Run) -> str:
    path = rt.run_dir(run.id) / workdir.STATE_FILE
    try:
        applied = states.parse_state(path.read_bytes()).resource_count
    except (OSError, Exception):  # noqa: BLE001 — only for the message
        return "the daemon stopped during the apply; terraform left no readable state"
    return (
        f"the daemon stopped during the apply; the state terraform left ({applied} "
        f"resources) was stored"
    )


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


def _release_stale_locks(conn: Connection, report: RecoveryReport) -> None:
    for ws_id, run_id in ws_store.locks_held_by_runs(conn):
        run = run_store.get_run(conn, run_id)
        if run.status.is_terminal and run.status is not Status.APPLIED_STATE_ERROR:
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
            await trio.to_thread.run_sync(shutil.rmtree, root / name, True)
            report.removed_directories.append(name)
