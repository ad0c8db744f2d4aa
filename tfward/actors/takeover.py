"""Taking a workspace over from a daemon that died (docs/architecture.md §15): where its runs
ran, whether their directories can be reached from here, and how a run ends whose apply was
in flight when they cannot (`failed` / `owner_lost`).

A run directory is reachable when the daemon that ran it was on this host, or its data dir is
shared at the same path: then recovery stores its partial state exactly as after a crash
(§5). Otherwise nothing here can know what terraform created after the last stored state
version: the run ends `owner_lost` through the funnel, the workspace stays locked, and the
lock's reason says what to check and how to unlock. A run that had not started its apply is
planned again (nothing was applied); one waiting for confirmation keeps waiting (its plan is
in the database). Nothing is ever applied twice: only runs that never reached `terraform
apply` go back to `pending`.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection

from tfward.runs.model import ErrorKind, Run, Stage, Status
from tfward.store import cluster as cluster_store
from tfward.store import states

from .funnel import Ending, Outcome, finish_run
from .runlog import RunLog
from .runtime import Runtime

log = logging.getLogger(__name__)

# Stages in which `terraform apply` may have run: a directory is needed to know what it did.
_APPLY_STAGES = frozenset({Stage.APPLYING, Stage.SAVING_STATE, Stage.POST_APPLY})


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
    owner_lost: list[str] = field(default_factory=list)  # apply in flight, directory gone

    def as_dict(self) -> dict[str, list[str] | list[int]]:
        return dict(self.__dict__)


@dataclass(frozen=True, slots=True)
class Origin:
    """The daemon a workspace's runs in flight ran on."""

    node_id: str
    host: str
    data_dir: Path

    @classmethod
    def of_self(cls, rt: Runtime) -> Origin:
        return cls(rt.node_id, socket.gethostname(), rt.data_dir)

    @property
    def same_host(self) -> bool:
        return self.host == socket.gethostname()

    def run_dir(self, run_id: str) -> Path:
        return self.data_dir / "runs" / run_id


async def origin_of(rt: Runtime, node_id: str | None) -> Origin:
    """Where the previous owner `node_id` ran (None, or a daemon never seen: this one)."""
    if node_id is None or node_id == rt.node_id:
        return Origin.of_self(rt)
    node = await rt.store.read(lambda c: cluster_store.node(c, node_id))
    if node is None:
        return Origin(node_id, "", Path("/nonexistent"))
    return Origin(node.node_id, node.host, Path(node.data_dir))


def reachable(origin: Origin, run_dir: Path) -> bool:
    """The run directory can be read from here (blocking: a file-system look)."""
    return (origin.same_host or origin.data_dir.is_dir()) and run_dir.is_dir()


def needs_directory(run: Run) -> bool:
    """Only a run whose apply may have started needs its directory to be finished right."""
    return run.status is Status.APPLYING and run.stage in _APPLY_STAGES


def keeps_lock(run: Run) -> bool:
    """A finished run whose lock stays until someone looks (recovery does not release it)."""
    return run.status is Status.APPLIED_STATE_ERROR or run.error_kind is ErrorKind.OWNER_LOST


async def finish_out_of_reach(
    rt: Runtime, run: Run, origin: Origin, report: RecoveryReport
) -> None:
    """End a run whose apply was in flight on `origin` and whose directory is out of reach:
    `applied` if its state was stored already, else `failed` / `owner_lost`, the workspace
    locked with what to check (through the funnel: log, lock, `run:errored`)."""
    ws_id = rt.workspace_ids[run.workspace]
    stored = await rt.store.read(lambda c: _stored_by(c, run, ws_id))
    ending = Ending(run.id, run.workspace, ws_id, RunLog(run.id, rt.store), origin.run_dir(run.id))
    await ending.log.open()
    if run.stage is Stage.POST_APPLY or (run.stage is Stage.SAVING_STATE and stored):
        outcome = Outcome(Status.APPLIED, warning=f"the daemon {origin.node_id} was lost after "
                          "the state was stored")  # fmt: skip
        report.finished.append(run.id)
    else:
        outcome = Outcome.failed(ErrorKind.OWNER_LOST, owner_lost_message(rt, run, origin))
        report.owner_lost.append(run.id)
    log.warning("run %s of %s, taken over from %s: %s", run.id, run.workspace, origin.node_id,
                outcome.describe())  # fmt: skip
    await finish_run(rt, ending, outcome)


def owner_lost_message(rt: Runtime, run: Run, origin: Origin) -> str:
    return (
        f"the daemon {origin.node_id} running this apply was lost and its run directory "
        f"({origin.run_dir(run.id)}) cannot be reached from {rt.node_id}: the stored state may "
        "lack resources terraform created after the last stored state version. Check before "
        "unlocking: queue a speculative plan (operation plan) and compare it with the real "
        "infrastructure, import or remove what differs (terraform state push through the "
        f"workspace's http backend), then `tfward unlock {run.workspace} --force` (POST "
        f"/api/v1/workspaces/{run.workspace}/actions/force-unlock)"
    )


def _stored_by(conn: Connection, run: Run, ws_id: str) -> bool:
    return any(v.run_id == run.id for v in states.list_versions(conn, ws_id, limit=20))
