"""Keeping the state terraform wrote (the termination contract, docs/architecture.md §4): a
backup file first, then a new state version in the database, serial and lineage checked. Used
after every apply, by the funnel for the partial state of an apply that was interrupted or
failed, and by terraform's http backend for a state posted to it (`keep`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio
from sqlalchemy import Connection

from tfward.errors import StageFailed, StateRejected
from tfward.runs.masking import SecretMask
from tfward.runs.model import ErrorKind
from tfward.store import states

from . import workdir
from .context import RunContext
from .funnel import Ending
from .runtime import Runtime


async def keep(
    rt: Runtime,
    workspace: str,
    ws_id: str,
    parsed: states.ParsedState,
    *,
    kind: str,
    run_id: str | None = None,
    created_by: str | None = None,
    guard: Callable[[Connection], None] | None = None,
) -> states.StateVersion | None:
    """Write the backup file, then store the state version (serial and lineage checked, and
    `guard` in the same transaction). None when the state is the current one already. Raises
    StateRejected naming the backup file, so the state can be pushed by hand. Cancellation:
    the database write commits or rolls back before this returns (Store.write)."""
    backup = rt.state_backups(workspace) / f"{parsed.serial:06d}-{parsed.sha256[:12]}.tfstate"
    await trio.to_thread.run_sync(_write_backup, backup, parsed.raw)

    def tx(conn: Connection) -> states.StateVersion | None:
        if guard is not None:
            guard(conn)
        return states.store(
            conn, ws_id, parsed, kind=kind, run_id=run_id, created_by=created_by
        )

    try:
        return await rt.store.write(tx)
    except StateRejected as exc:
        raise StateRejected(f"{exc}; the file is kept at {backup}") from exc


@dataclass(frozen=True)
class RunStateKeeper:
    """The funnel's StateKeeper for one run."""

    ctx: RunContext

    async def keep_state(self, ending: Ending, kind: str) -> None:
        """Store the state in the run directory: a backup file first, then the database, with
        serial and lineage checked. Nothing to do when terraform wrote no state."""
        ctx = self.ctx
        path = ctx.run_dir / workdir.STATE_FILE
        raw = await trio.to_thread.run_sync(_read_if_exists, path)
        if not raw:
            # No file, or the empty file terraform creates before its first resource finishes:
            # nothing was applied.
            ending.state_saved = True
            return
        try:
            # The outputs shown beside the version: the workspace's secrets masked in them.
            parsed = states.parse_state(raw, SecretMask(ctx.ws.sensitive_values()))
            version = await keep(
                ctx.rt, ctx.ws.name, ctx.ws_id, parsed, kind=kind, run_id=ctx.run_id
            )
        except StateRejected as exc:
            raise StageFailed(ErrorKind.STATE, str(exc)) from exc
        ending.state_saved = True
        if version is not None:
            ctx.log.note(
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
