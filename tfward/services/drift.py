"""The drift scheduler: every `drift_check` interval, a speculative refresh-only plan per workspace.

A check is due `drift_check` after the workspace's previous check was created (or after the
daemon started, for a workspace never checked), so a restart neither skips nor doubles checks.
No check is queued while the previous one is still running, while a run that may change the
state is planning, waiting for confirmation or applying, or before the workspace has any state. The
check is an ordinary run (`operation = plan`, `refresh_only`), created in the database and then
submitted to the workspace actor; it starts at once and takes no lock.
"""

from __future__ import annotations

import logging
from datetime import datetime

import trio
from sqlalchemy import Connection

from tfward.actors.runtime import Runtime
from tfward.actors.workspace import Submitted
from tfward.config import WorkspaceConfig
from tfward.errors import NotFound, StorageUnavailable
from tfward.ids import now
from tfward.outbox.jobs import Teller
from tfward.runs.model import Operation, Run
from tfward.store import drift as drift_store
from tfward.store import runs as run_store
from tfward.store import states

log = logging.getLogger(__name__)

# When a check cannot be queued yet (one still running, an apply in flight), look again after.
RECHECK = 5.0
# Without checks due sooner, look again after this (picks up a reloaded config).
IDLE = 60.0


class DriftScheduler:
    def __init__(self, rt: Runtime, teller: Teller) -> None:
        self.rt = rt
        self.teller = teller
        self.started_at = now()
        self.scope = trio.CancelScope()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Queue checks as they come due until `stop`. A failed tick is logged and retried
        after RECHECK seconds; cancellation just ends the loop (checks are ordinary runs)."""
        with self.scope:
            task_status.started()
            while True:
                try:
                    wait = await self.tick()
                except StorageUnavailable:  # logged once by the store's health
                    wait = RECHECK
                except Exception:  # one bad tick must not end drift checks
                    log.exception("drift scheduler: tick failed")
                    wait = RECHECK
                await trio.sleep(wait)

    def stop(self) -> None:
        self.scope.cancel()

    async def tick(self) -> float:
        """Queue every due check; return the seconds until the next one may be due."""
        wait = IDLE
        for ws in self.rt.config.workspaces:
            if ws.drift_check is None or ws.name not in self.rt.workspace_ids:
                continue
            if not self.teller.owns(ws.name):
                continue  # the daemon that owns the workspace checks it (§15)
            wait = min(wait, await self._consider(ws, ws.drift_check))
        return max(wait, 0.05)

    async def _consider(self, ws: WorkspaceConfig, interval: float) -> float:
        ws_id = self.rt.workspace_ids[ws.name]
        started_at = self.started_at

        def load(conn: Connection) -> tuple[tuple[datetime, bool] | None, bool, bool]:
            return (
                drift_store.last_check(conn, ws_id),
                drift_store.apply_in_flight(conn, ws_id),
                states.current(conn, ws_id) is not None,
            )

        last, busy, has_state = await self.rt.store.read(load)
        due = (last[0] if last else started_at).timestamp() + interval
        left = due - now().timestamp()
        if left > 0:
            return left
        if (last and last[1]) or busy:
            return min(RECHECK, interval)
        if not has_state:
            return interval
        run = await self.rt.store.write(lambda c: _create_check(c, ws_id, ws.name))
        log.info("drift check of %s: run %s", ws.name, run.id)
        try:
            self.teller.tell(ws.name, Submitted(run.id, True))
        except NotFound:
            log.warning("drift check of %s: no actor; run %s waits in pending", ws.name, run.id)
        return interval


def _create_check(conn: Connection, ws_id: str, name: str) -> Run:
    return run_store.create_run(
        conn,
        workspace_id=ws_id,
        workspace_name=name,
        operation=Operation.PLAN,
        auto_apply=False,
        message="drift check",
        created_by="drift-check",
        refresh_only=True,
    )
