"""Keeping the state terraform wrote (the termination contract, docs/architecture.md §4): a
backup file first, then a new state version in the database, serial and lineage checked. Used
after every apply, by the funnel for the partial state of an apply that was interrupted or
failed, by recovery, and by terraform's http backend for a state posted to it (`keep`).

Every copy counts (docs/architecture.md §5, §10): `terraform.tfstate` in the run directory,
the `errored.tfstate` terraform writes when it cannot write that, the state it prints into its
output when it can write neither (a full disk), and, in recovery, this run's backup files.
They are compared by lineage and serial and the newest valid one that continues the stored
lineage is stored. The two last-resort copies (`errored.tfstate`, the printed state) carry the
serial terraform's state manager holds, not a new one (terraform 1.0 exports the manager's file
"to preserve the existing serial and lineage"), and the manager moves it only in a write that
got past the backup of the old state. When the first write of an apply fails there (a full
disk), such a copy holds the resources created so far under the serial of the state the run
started from, the stored one: it is newer than any copy of that serial, and is stored with the
next serial, as terraform would have written it.

A storage fault (the backup or the database write) is waited out in a patient context (the
pipeline and the funnel are); a state that cannot be stored because of what it is — another
lineage, an older serial, not a state at all — raises StageFailed(state): no retry cures that.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio
from sqlalchemy import Connection

from tfward.errors import StageFailed, StateRejected, StorageUnavailable
from tfward.runs.masking import SecretMask
from tfward.runs.model import ErrorKind
from tfward.store import states
from tfward.store.health import file_op
from tfward.store.sealing import SealError
from tfward.store.states import ParsedState, StateVersion

from . import backups, workdir
from .context import RunContext
from .funnel import Ending
from .runtime import Runtime

log = logging.getLogger(__name__)

ERRORED_STATE = "errored.tfstate"
OUTPUT_DIR = ".tfward"
_PRINTED_MARK = b"Failed to persist state to backend"


async def keep(
    rt: Runtime,
    workspace: str,
    ws_id: str,
    parsed: ParsedState,
    *,
    kind: str,
    run_id: str | None = None,
    created_by: str | None = None,
    guard: Callable[[Connection], None] | None = None,
    prune: bool = True,
) -> StateVersion | None:
    """Write the backup file (sealed), then store the state version (serial and lineage
    checked, and `guard` in the same transaction, as is the inventory's sync with it); old
    backups of stored states are pruned after (`prune`; else the caller does it: `prune_backups`).
    None when the state is the current one already. Raises StateRejected naming the backup
    file. A storage fault is waited out in a patient context; cancellation: the database
    write commits or rolls back before this returns (Store.write)."""
    write = functools.partial(
        backups.write,
        rt.state_backups(workspace),
        backups.name(parsed.serial, parsed.sha256, run_id or "http-backend"),
        parsed.raw,
        rt.store.sealer,
    )
    backup = await file_op(rt.store.health, write, where="state backup")
    try:
        secrets: list[str] | None = rt.config.workspace(workspace).sensitive_values()
    except KeyError:
        secrets = None  # it left the config: the inventory_sync job syncs it, as for others

    def tx(conn: Connection) -> StateVersion | None:
        if guard is not None:
            guard(conn)
        return states.store(
            conn, ws_id, parsed, kind=kind, run_id=run_id, created_by=created_by, secrets=secrets
        )

    try:
        version = await rt.store.write(tx)
    except StateRejected as exc:
        raise StateRejected(f"{exc}; the file is kept at {backup}") from exc
    if version is not None and prune:
        await prune_backups(rt, workspace, ws_id)
    return version


async def prune_backups(rt: Runtime, workspace: str, ws_id: str) -> None:
    """Old backups of stored states go. Best effort: storage failing now only postpones it to
    the next stored state (a failure is logged and changes nothing else)."""
    directory = rt.state_backups(workspace)
    try:
        stored = await rt.store.read(lambda c: states.stored_sha256(c, ws_id), patient=False)
        await trio.to_thread.run_sync(
            backups.prune, directory, stored, rt.config.daemon.state_backups_keep
        )
    except (OSError, StorageUnavailable) as exc:
        log.warning("workspace %s: could not prune the state backups: %s", workspace, exc)


@dataclass(frozen=True, slots=True)
class Copy:
    """One copy of a state: where it was found and its bytes. `last_resort`: terraform wrote it
    because it could not persist the state (`errored.tfstate`, the printed state), with the
    serial of the last state it did persist."""

    where: str
    raw: bytes
    last_resort: bool = False


@dataclass(frozen=True)
class RunStateKeeper:
    """The funnel's StateKeeper for one run. `with_backups`: also consider this run's backup
    files (recovery: the database may have refused or missed what they hold)."""

    ctx: RunContext
    with_backups: bool = False

    async def keep_state(self, ending: Ending, kind: str) -> None:
        """Store the newest copy of the state terraform wrote, backup first. Nothing to do
        when terraform wrote none, or nothing newer than the stored state. The state backups
        are pruned once the run's outcome is recorded (`Ending.after_record`): nothing waits
        for that."""
        ctx = self.ctx
        health = ctx.rt.store.health
        copies = await file_op(
            health, self.copies, where=f"run directory {ctx.run_dir}"
        )
        if not copies:
            ending.state_saved = True  # no state, or only the empty file: nothing was applied
            return
        current = await ctx.rt.store.read(lambda c: states.current(c, ctx.ws_id))
        # The outputs shown beside the version: the workspace's secrets masked in them.
        mask = SecretMask(ctx.ws.sensitive_values())
        try:
            chosen = choose(copies, current, mask)
        except StateRejected as exc:
            kept = await self._backup_unusable(copies)
            raise StageFailed(ErrorKind.STATE, f"{exc}; a copy is kept at {kept}") from exc
        if chosen is None:
            ending.state_saved = True
            return
        try:
            version = await keep(
                ctx.rt, ctx.ws.name, ctx.ws_id, chosen, kind=kind, run_id=ctx.run_id, prune=False
            )
        except StateRejected as exc:
            raise StageFailed(ErrorKind.STATE, str(exc)) from exc
        ending.state_saved = True
        if version is not None:
            ending.after_record.append(
                functools.partial(prune_backups, ctx.rt, ctx.ws.name, ctx.ws_id)
            )
            ctx.log.note(
                f"state version {version.id} (serial {version.serial}, {kind}, "
                f"{version.resource_count} resources)"
            )

    def copies(self) -> list[Copy]:
        run_dir = self.ctx.run_dir
        found = [
            Copy(name, raw, last_resort=name == ERRORED_STATE)
            for name in (workdir.STATE_FILE, ERRORED_STATE)
            if (raw := _read_if_exists(run_dir / name))
        ]
        printed = printed_state(run_dir / OUTPUT_DIR)
        if printed is not None:
            found.append(printed)
        if self.with_backups:
            sealer = self.ctx.rt.store.sealer
            directory = self.ctx.rt.state_backups(self.ctx.ws.name)
            for backup in backups.of_run(directory, self.ctx.run_id):
                try:
                    raw = backups.read(backup.path, sealer)
                except (OSError, ValueError, SealError):
                    continue  # unreadable with this key: the other copies decide
                found.append(Copy(f"backup {backup.path.name}", raw))
        return found

    async def _backup_unusable(self, copies: list[Copy]) -> Path:
        """Keep what terraform left when none of it can be stored (the operator's copy)."""
        ctx = self.ctx
        write = functools.partial(
            backups.write,
            ctx.rt.state_backups(ctx.ws.name),
            f"unstored-{ctx.run_id}-{hashlib.sha256(copies[0].raw).hexdigest()[:12]}"
            f"{backups.SUFFIX}",
            copies[0].raw,
            ctx.rt.store.sealer,
        )
        return await file_op(ctx.rt.store.health, write, where="state backup")


def choose(
    copies: list[Copy], current: StateVersion | None, mask: SecretMask | None = None
) -> ParsedState | None:
    """The copy to store: valid, of the stored lineage (any lineage if none is stored), the
    highest serial, a last-resort copy before a persisted one of the same serial; its shown
    outputs masked with `mask`. A last-resort copy with the stored serial but other content is
    returned with the next serial (module docstring). None when no copy is newer than the
    stored state. Raises StateRejected when there are copies but none can be stored, saying
    why."""
    valid: list[tuple[ParsedState, bool]] = []
    problems: list[str] = []
    for copy in copies:
        try:
            valid.append((states.parse_state(copy.raw, mask), copy.last_resort))
        except StateRejected as exc:
            problems.append(f"{copy.where}: {exc}")
    if not valid:
        raise StateRejected("; ".join(problems))
    if current is not None:
        same = [v for v in valid if v[0].lineage == current.lineage]
        if not same:
            raise StateRejected(
                f"state lineage {valid[0][0].lineage} differs from the workspace's "
                f"{current.lineage}"
            )
        valid = same
    best, last_resort = max(valid, key=lambda v: (v[0].serial, v[1]))
    if current is None:
        return best
    if best.sha256 == current.sha256:
        return None  # terraform wrote nothing newer than what is stored
    if last_resort and best.serial == current.serial:
        return states.with_serial(best.raw, current.serial + 1, mask)
    if best.serial <= current.serial:
        raise StateRejected(
            f"state serial {best.serial} is not newer than the current serial {current.serial}"
        )
    return best


def printed_state(output_dir: Path) -> Copy | None:
    """The state terraform printed into its output because it could write it nowhere ("Failed
    to persist state to backend": a full disk), from the newest apply's output file."""
    try:
        newest = max(output_dir.glob("*-apply.log"), default=None)
        text = newest.read_bytes() if newest is not None else b""
    except OSError:
        return None
    if newest is None or _PRINTED_MARK not in text:
        return None
    end = text.rfind(b"\n}\n", 0, text.rfind(_PRINTED_MARK))
    start = text.rfind(b"\n{\n", 0, end)
    if start < 0 or end < 0:
        return None
    raw = text[start + 1 : end + 2]
    try:
        json.loads(raw)
    except ValueError:
        return None
    return Copy(f"the state terraform printed in {newest.name}", raw, last_resort=True)


def _read_if_exists(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
