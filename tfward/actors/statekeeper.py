"""Keeping the state terraform wrote (DESIGN §3, the termination contract): a backup file
first, then a new state version in the database, serial and lineage checked. Used after every
apply and by the funnel for the partial state of an apply that was interrupted or failed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trio

from tfward.config import WorkspaceConfig
from tfward.daemon.store import states
from tfward.errors import StageFailed, StateRejected
from tfward.runs.model import ErrorKind

from . import workdir
from .funnel import Ending
from .runlog import RunLog
from .runtime import Runtime


@dataclass
class RunStateKeeper:
    """The funnel's StateKeeper for one run."""

    rt: Runtime
    ws: WorkspaceConfig
    ws_id: str
    run_id: str
    run_dir: Path
    log: RunLog

    async def keep_state(self, ending: Ending, kind: str) -> None:
        """Store the state in the run directory: a backup file first, then the database, with
        serial and lineage checked. Nothing to do when terraform wrote no state."""
        path = self.run_dir / workdir.STATE_FILE
        raw = await trio.to_thread.run_sync(_read_if_exists, path)
        if not raw:
            # No file, or the empty file terraform creates before its first resource finishes:
            # nothing was applied.
            ending.state_saved = True
            return
        try:
            parsed = states.parse_state(raw)
        except StateRejected as exc:
            raise StageFailed(ErrorKind.STATE, str(exc)) from exc
        backup = (
            self.rt.state_backups(self.ws.name)
            / f"{parsed.serial:06d}-{parsed.sha256[:12]}.tfstate"
        )
        await trio.to_thread.run_sync(_write_backup, backup, raw)
        try:
            version = await self.rt.store.write(
                lambda c: states.store(c, self.ws_id, parsed, kind=kind, run_id=self.run_id)
            )
        except StateRejected as exc:
            raise StageFailed(ErrorKind.STATE, f"{exc}; the file is kept at {backup}") from exc
        ending.state_saved = True
        if version is not None:
            self.log.note(
                f"state version {version.id} (serial {version.serial}, {kind}, "
                f"{version.resource_count} resources)"
            )


def _read_if_exists(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _write_backup(path: Path, raw: bytes) -> None:
    # Plain, so an operator can `terraform state push` it when the database cannot take it;
    # readable by the daemon's user alone, since state holds secrets.
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    workdir.write_file_atomic(path, raw)
    path.chmod(0o600)
