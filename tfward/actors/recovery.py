"""Recovery at start: finish what a previous daemon left in flight, before anything runs.

For each run found non-terminal (DESIGN §6):
- `planning`: back to `pending` (its directory removed), to be planned again;
- `applying` before terraform apply started: back to `pending`; during or after the apply: the
  state terraform left in the run directory is stored first (`partial` during the apply,
  `apply` once it had finished), then the run ends `failed`/`interrupted` (or `applied` when
  terraform had finished and the state is stored);
- `apply_pending`: stays waiting if its plan artifact is intact and the workspace state has not
  moved since the plan; otherwise it is planned again (seed 003).
Every one of these goes through the termination funnel. Then: terraform process groups
recorded on runs that still exist are killed, locks held by finished runs are released, run
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
from sqlalchemy import Connection, select

from tfward.daemon.store import artifacts, states
from tfward.daemon.store import runs as run_store
from tfward.daemon.store import workspaces as ws_store
from tfward.daemon.store.tables import runs as runs_table
from tfward.daemon.store.tables import workspace_locks
from tfward.runs.model import ErrorKind, Run, Stage, Status

from . import workdir
from .funnel import Outcome, finish_run
from .handle import RunHandle
from .pipeline import RunPipeline
from .runtime import Runtime
from .terraform import process_group_alive

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
    in_flight = await rt.store.read(_load_in_flight)
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
    await _remove_orphan_dirs(rt, report)
    rt.metrics.recovered(report.as_dict())
    if any(report.as_dict().values()):
        log.warning("recovery: %s", {k: v for k, v in report.as_dict().items() if v})
    return report


def _load_in_flight(conn: Connection) -> list[tuple[Run, int | None]]:
    found = run_store.list_runs(
        conn,
        statuses=(Status.PLANNING, Status.APPLYING, Status.APPLY_PENDING),
        limit=100_000,
        oldest_first=True,
    )
    pids = dict(
        conn.execute(
            select(runs_table.c.id, runs_table.c.pid).where(
                runs_table.c.id.in_([r.id for r in found])
            )
        ).all()
    )
    return [(run, pids.get(run.id)) for run in found]


async def stop_leftover_processes(
    runs_root: Path, recorded: list[int], grace: float, report: RecoveryReport
) -> None:
    """Stop terraform process groups a previous daemon left running: those recorded on runs,
    and any process whose working directory is a run directory (it may have started just
    before the pid was recorded). They are stopped the way a cancel stops them — SIGINT to
    the group, `grace` seconds, then SIGKILL — so terraform lets in-flight operations finish
    and writes the state that recovery then stores."""
    groups = {pid for pid in recorded if _is_terraform_group(pid)} | _groups_in(runs_root)
    groups.discard(os.getpgrp())
    if not groups:
        return
    for pgid in groups:
        _signal_group(pgid, signal.SIGINT)
    with trio.move_on_after(grace):
        # Not our children: there is no exit event to wait on, so poll.
        while any(_running(g) for g in groups):  # noqa: ASYNC110
            await trio.sleep(0.1)
    for pgid in sorted(groups):
        if _running(pgid):
            _signal_group(pgid, signal.SIGKILL)
            report.killed_processes.append(pgid)
        else:
            report.stopped_processes.append(pgid)


def _running(pgid: int) -> bool:
    """Whether the group has a member that is not a zombie. Our orphans are reaped by init,
    which may take its time (or, in some sandboxes, never): a zombie has exited already."""
    if not process_group_alive(pgid):
        return False
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command: state, ppid, pgrp.
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _is_terraform_group(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return process_group_alive(pid) and b"terraform" in cmdline


def _groups_in(runs_root: Path) -> set[int]:
    """Process groups of live processes whose working directory is under `runs_root`."""
    root = str(runs_root.resolve()) + os.sep
    groups: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
            if cwd.startswith(root):
                groups.add(os.getpgid(int(proc.name)))
        except OSError:
            continue
    return groups


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


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
    rows = conn.execute(
        select(workspace_locks.c.workspace_id, workspace_locks.c.run_id).where(
            workspace_locks.c.run_id.is_not(None)
        )
    ).all()
    for ws_id, run_id in rows:
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
        lambda c: {r.id for r in run_store.list_runs(c, statuses=unfinished, limit=100_000)}
    )
    for name in names:
        if name not in live:
            await trio.to_thread.run_sync(shutil.rmtree, root / name, True)
            report.removed_directories.append(name)
