"""The lease loop: this daemon's membership and workspace ownership (docs/architecture.md §15).

A thin loop around a pure decision (`cluster/model.py::decide`, table-tested): every
`[daemon] lease_renew` (5 s), one short transaction heartbeats, renews this daemon's leases,
takes free or expired ones up to its fair share and names idle ones to give back. Then the
effects, outside the transaction:

- a workspace taken: recovery for its runs in flight (from the daemon it was taken from, or
  this daemon's earlier life), then its actor starts under the new epoch's fence — in a task
  of its own, so renewals go on while recovery stops terraform;
- a workspace lost (another daemon owns it now): its actor and runs stop at once;
- a workspace to give back: its actor stops if idle (drain), then the lease is released;
- with PostgreSQL: every local actor re-checks its runs in the database (a lost nudge is
  found within one tick); nudges for workspaces owned elsewhere are sent (NOTIFY), and nudges
  for ours received (LISTEN).

**Self-fencing.** A lease is valid until `lease_ttl` after the tick that wrote it began. If no
tick has worked `lease_ttl - self_fence_margin` after the last good one (the database
unreachable, the daemon starved), the daemon stops every actor at once — no terraform starts,
running terraform gets SIGINT and its runs keep their partial state in their directories,
waiting for storage — before any other daemon can take a lease over. A later good tick adopts
again whatever is still ours (recovery finishes the interrupted runs). Ticks have a write
lane of their own (`Store.write(lease=True)`, READ COMMITTED on PostgreSQL): they never queue
behind the runs' writes, nor abort one another.

With SQLite the same loop runs, alone: it owns every workspace, and does not self-fence
(nobody could take a workspace over; storage faults are waited out as §10 says).
"""

from __future__ import annotations

import enum
import functools
import logging
import math
import os
import socket
from collections.abc import Callable
from typing import Any

import trio

from tfward.cluster import model as cluster
from tfward.errors import FencedOut, StorageUnavailable
from tfward.ids import now
from tfward.store import cluster as cluster_store
from tfward.store import fencing
from tfward.store.health import Backoff

from .handle import Decision
from .recovery import recover
from .runtime import Runtime
from .supervisor import Supervisor
from .takeover import Origin, RecoveryReport, origin_of
from .workspace import Cancel, Decide, LockChanged, Message, Recheck, Submitted

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        d = rt.config.daemon
        self.ttl, self.renew, self.margin = d.lease_ttl, d.lease_renew, d.self_fence_margin
        self.me = cluster.Node(
            node_id=rt.node_id, host=socket.gethostname(), data_dir=str(rt.data_dir),
            heartbeat_at=now(), started_at=now(), pid=os.getpid(),
        )  # fmt: skip
        self.supervisor: Supervisor | None = None
        self.owned: dict[str, int] = {}  # workspace name -> epoch, as the last tick wrote
        self.live: tuple[str, ...] = ()
        self.fenced = False  # stopped its actors for want of renewals, since the last good tick
        self._valid_until = -math.inf  # trio clock: self-fence before this passes
        self._adopting: set[str] = set()
        self._names: dict[str, str] = {}
        rt.metrics.leases.identify(rt.node_id)

    # ---- start -------------------------------------------------------------------------------

    async def join(self) -> dict[str, Origin]:
        """Register this daemon and take its first leases (patient, at start). Returns the
        workspaces it owns now, each with where its runs in flight ran (for recovery)."""
        await self.rt.store.write(lambda c: cluster_store.join(c, self.me))
        tick = await self._tick(lambda view: self._decide(view, frozenset()))
        origins = {}
        for ws_id, source in tick.taken.items():
            origins[self._name(ws_id)] = await origin_of(self.rt, source)
        for name in self.owned:  # renewed: ours already (this daemon's earlier life)
            origins.setdefault(name, Origin.of_self(self.rt))
        return origins

    async def hold_while(self, work: Callable[[], Any]) -> Any:
        """Run `await work()` (start-up recovery) while renewing what this daemon owns, taking
        nothing. Cancellation and errors of `work` propagate."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._hold, name="leases-hold")
            result = await work()
            nursery.cancel_scope.cancel()
        return result

    async def _hold(self) -> None:
        while True:
            await trio.sleep(self.renew)
            try:
                await self._tick(lambda view: cluster.hold(view, self.rt.node_id))
            except (StorageUnavailable, cluster_store.LeaseConflict) as exc:
                log.warning("lease renewal during start-up failed: %s", exc)

    # ---- the loop ----------------------------------------------------------------------------

    async def run(
        self,
        supervisor: Supervisor,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Tick until cancelled (the daemon stops it after the supervisor has stopped, then
        calls `leave`). Storage faults and lost races are logged and tried at the next tick;
        self-fencing (above) takes over when ticks keep failing."""
        self.supervisor = supervisor
        async with trio.open_nursery() as nursery:
            if self.rt.store.dialect == "postgresql":
                # Alone on SQLite nobody can take a lease over: a storage fault is waited out
                # with the runs going on (docs/architecture.md §10), not self-fenced.
                nursery.start_soon(self._fence_watch, name="leases-self-fence")
                nursery.start_soon(self._send_nudges, name="leases-nudge-out")
                nursery.start_soon(self._receive_nudges, name="leases-nudge-in")
            task_status.started()
            while True:
                with trio.move_on_after(self.renew):
                    await supervisor.changed.wait()
                await self._step(nursery, supervisor)

    async def _step(self, nursery: trio.Nursery, sup: Supervisor) -> None:
        busy = frozenset(self.rt.workspace_ids[n] for n in sup.actors if not sup.idle(n))
        try:
            tick = await self._tick(lambda view: self._decide(view, busy))
        except (StorageUnavailable, cluster_store.LeaseConflict) as exc:
            self.rt.metrics.leases.renewal_failures.inc()
            log.warning("lease tick failed (tried again in %.0fs): %s", self.renew, exc)
            return
        if self.fenced:
            log.warning("leases renewed again after self-fencing: resuming what is still ours")
            self.fenced = False
        configured = {ws.name for ws in self.rt.config.workspaces}
        for name in list(sup.actors):
            # A workspace removed from the config is not renewed, but its actor retires on
            # its own (its active run finishes first): nobody else may take it.
            if name not in self.owned and name not in self._adopting and name in configured:
                sup.drop(name)
        for ws_id in tick.release:
            nursery.start_soon(self._give_back, self._name(ws_id), tick.owned[ws_id])
        for name, epoch in self.owned.items():
            if name not in sup.actors and name not in self._adopting and sup.idle(name):
                ws_id = self.rt.workspace_ids[name]
                if self._name(ws_id) in (self._name(w) for w in tick.release):
                    continue
                self._adopting.add(name)
                nursery.start_soon(self._take_over, name, epoch, tick.taken.get(ws_id))
        if self.rt.store.dialect == "postgresql":
            for actor in list(sup.actors.values()):
                actor.tell(Recheck())

    async def _tick(self, decide: Callable[[cluster.View], cluster.Plan]) -> cluster_store.Tick:
        began = trio.current_time()
        tick = await self.rt.store.write(
            lambda c: cluster_store.tick(c, self.rt.node_id, self.ttl, decide),
            patient=False,
            lease=True,
        )
        self._valid_until = began + self.ttl - self.margin
        self.owned = {self._name(ws): epoch for ws, epoch in tick.owned.items()}
        if tick.view is not None:
            self.live = cluster.live_nodes(tick.view, self.rt.node_id, self.ttl)
        self.rt.metrics.leases.owned.set(len(self.owned))
        self.rt.metrics.leases.live.set(len(self.live))
        taken_over = sum(1 for source in tick.taken.values() if source is not None)
        self.rt.metrics.leases.takeovers.inc(taken_over)
        return tick

    def _decide(self, view: cluster.View, busy: frozenset[str]) -> cluster.Plan:
        return cluster.decide(view, self.rt.node_id, self.ttl, busy)

    def _name(self, ws_id: str) -> str:
        if not self._names or ws_id not in self._names:
            self._names = {v: k for k, v in self.rt.workspace_ids.items()}
        return self._names.get(ws_id, ws_id)

    async def _take_over(self, name: str, epoch: int, source: str | None) -> None:
        """Recover the workspace's runs in flight, then start its actor: under its fence."""
        try:
            origin = await origin_of(self.rt, source)
            if source is not None:
                log.warning("workspace %s taken over from %s (epoch %d)", name, source, epoch)
            fence = fencing.Fence(self.rt.workspace_ids[name], self.rt.node_id, epoch)
            with fencing.fenced(fence):
                await recover(self.rt, {name: origin}, at_start=False)
            if self.owned.get(name) == epoch and self.supervisor is not None:
                await self.supervisor.adopt(name, epoch)
        except (FencedOut, StorageUnavailable) as exc:
            log.warning("workspace %s: taking it over stopped: %s", name, exc)
        finally:
            self._adopting.discard(name)

    async def _give_back(self, name: str, epoch: int) -> None:
        """Stop the idle actor, then release the lease (drain: a busy one stays)."""
        assert self.supervisor is not None
        if not await self.supervisor.hand_over(name):
            return
        try:
            ws_id = self.rt.workspace_ids[name]
            if await self.rt.store.write(
                lambda c: cluster_store.release(c, self.rt.node_id, ws_id, epoch), patient=False
            ):
                self.owned.pop(name, None)
                log.info("workspace %s handed back for another daemon to take", name)
        except StorageUnavailable as exc:
            log.warning("workspace %s: releasing the lease failed: %s", name, exc)

    async def _fence_watch(self) -> None:
        """Stop every actor before a lease could expire when ticks keep failing."""
        while True:
            await trio.sleep_until(max(self._valid_until, trio.current_time() + 0.05))
            if trio.current_time() < self._valid_until or self.fenced:
                continue
            assert self.supervisor is not None
            self.fenced = True
            self.rt.metrics.leases.self_fenced.inc()
            log.error(
                "self-fencing: no lease renewal for %.0fs; stopping every run of this daemon "
                "before its leases expire (terraform gets SIGINT)", self.ttl - self.margin,
            )  # fmt: skip
            for name in list(self.supervisor.actors):
                self.supervisor.drop(name)
            await trio.sleep(self.renew)

    # ---- nudges --------------------------------------------------------------------------------

    async def _send_nudges(self) -> None:
        """Messages for workspaces other daemons own, one NOTIFY each; one that cannot be
        sent is dropped (the owner's re-check finds what it said)."""
        assert self.supervisor is not None
        async for nudge in self.supervisor.nudges:
            payload = encode(nudge.message)
            if payload is None:
                continue
            send = functools.partial(cluster_store.nudge, workspace=nudge.workspace,
                                     message=payload)  # fmt: skip
            try:
                await self.rt.store.write(send, patient=False)
            except StorageUnavailable as exc:
                log.warning("a nudge for %s was not sent: %s", nudge.workspace, exc)

    async def _receive_nudges(self) -> None:
        """LISTEN for nudges, handed to our actors (those of others are ignored), and for
        what other daemons' writes changed, published to this daemon's ChangeHub."""
        assert self.supervisor is not None
        listener = cluster_store.Listener(self.rt.store.engine, self.rt.store.origin)
        backoff = Backoff(first=0.5)
        try:
            while True:
                try:
                    heard = await trio.to_thread.run_sync(listener.receive, 1.0)
                except Exception as exc:  # noqa: BLE001 — a lost connection (psycopg's or
                    # SQLAlchemy's error): LISTEN again after a wait; the re-check covers it
                    log.warning("listening for nudges failed: %s", exc)
                    await trio.sleep(backoff.next())
                    continue
                backoff.reset()
                if heard.changes:  # another daemon's write: its waiters here look again
                    self.rt.store.changes.publish(heard.changes)
                for payload in heard.nudges:
                    actor = self.supervisor.actors.get(str(payload.get("workspace")))
                    if actor is not None and (msg := decode(payload)) is not None:
                        actor.tell(msg)
        finally:
            listener.close()

    async def leave(self) -> None:
        """A clean stop, after the supervisor stopped: release every lease at once."""
        try:
            released = await self.rt.store.write(
                lambda c: cluster_store.leave(c, self.rt.node_id), patient=False
            )
            log.info("left the cluster; %d workspace leases released", released)
        except StorageUnavailable as exc:
            log.warning("could not release the leases (they expire in %.0fs): %s", self.ttl, exc)


class NudgeKind(enum.StrEnum):
    SUBMITTED = "submitted"
    CANCEL = "cancel"
    DECIDE = "decide"
    LOCK = "lock"


def encode(msg: Message) -> dict[str, Any] | None:
    """A message another daemon's actor can act on, as JSON (None: not one to send)."""
    match msg:
        case Submitted(run_id, speculative):
            return {"kind": NudgeKind.SUBMITTED, "run_id": run_id, "speculative": speculative}
        case Cancel(run_id, force, _):
            return {"kind": NudgeKind.CANCEL, "run_id": run_id, "force": force}
        case Decide(run_id, decision, reason):
            return {"kind": NudgeKind.DECIDE, "run_id": run_id, "decision": str(decision),
                    "reason": reason}  # fmt: skip
        case LockChanged(user_locked):
            return {"kind": NudgeKind.LOCK, "user_locked": user_locked}
    return None


def decode(payload: dict[str, Any]) -> Message | None:
    """The message a nudge carries; None for one this version does not know."""
    try:
        match NudgeKind(str(payload.get("kind"))):
            case NudgeKind.SUBMITTED:
                return Submitted(str(payload["run_id"]), bool(payload["speculative"]))
            case NudgeKind.CANCEL:
                return Cancel(str(payload["run_id"]), bool(payload["force"]))
            case NudgeKind.DECIDE:
                return Decide(
                    str(payload["run_id"]), Decision(payload["decision"]), payload.get("reason")
                )
            case NudgeKind.LOCK:
                return LockChanged(bool(payload["user_locked"]))
    except (KeyError, ValueError):
        log.warning("ignored a nudge this daemon does not understand: %r", payload)
    return None


__all__ = ["LeaseKeeper", "RecoveryReport", "decode", "encode"]
