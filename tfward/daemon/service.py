"""The daemon: start-up, recovery, the supervision tree, the API server, and shutdown.

    trio.run(main)
    └─ Daemon.serve nursery
       ├─ recovery (to completion, before anything else starts)
       ├─ Supervisor -> one WorkspaceActor per workspace -> run tasks
       ├─ ReleaseExecutor (only with `[releases] enabled`; stopped first at shutdown)
       ├─ OutboxWorker (follow-ups; runs while runs drain, stopped after them)
       ├─ DriftScheduler (drift checks; stopped first at shutdown)
       └─ API server (hypercorn.trio.serve; shut down last, so status stays readable)

Shutdown (`request_shutdown`, e.g. SIGTERM): stop accepting runs (the API answers 503), runs
that are only planning go back to `pending`, runs inside the apply are left to finish for up to
`[daemon] shutdown_grace`, then are interrupted like a cancel. `hard_stop` (a second signal)
cancels everything; every run task still goes through the termination funnel, shielded.

Storage faults (docs/architecture.md §10) never end the daemon: the storage watcher (disk
reserve, probe) runs from the first moment, start-up steps that need storage wait for it
(systemd hears why on STATUS= and gets EXTEND_TIMEOUT_USEC), every service waits out or skips
what storage refuses, and the watchdog is fed while the loop is healthy, whatever storage does.
Runs still waiting for storage when the shutdown is over (or at a hard stop) are left to
recovery at the next start (`give_up`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from sqlalchemy import Connection

from tfward.actors import backups, workdir
from tfward.actors.leases import LeaseKeeper
from tfward.actors.recovery import recover
from tfward.actors.runtime import FaultInjector, NoFaults, Runtime
from tfward.actors.supervisor import Supervisor
from tfward.actors.takeover import RecoveryReport
from tfward.config import Config, load_config
from tfward.errors import ConfigError, StorageUnavailable
from tfward.outbox.worker import OutboxWorker
from tfward.runtasks.coordinator import RunTaskCoordinator
from tfward.runtasks.keys import load_keys
from tfward.runtasks.tokens import TokenService
from tfward.services.drift import DriftScheduler
from tfward.services.releases import ReleaseExecutor
from tfward.store import audit
from tfward.store import cluster as cluster_store
from tfward.store import workspaces as ws_store
from tfward.store.audit import Attempt, AuditAction, AuditOutcome
from tfward.store.db import Store
from tfward.store.health import Backoff, classify, patient
from tfward.store.reserve import StorageWatcher
from tfward.store.sealing import Sealer, seal_plain_rows

from . import datadir
from .api.app import MAX_BODY, create_app
from .api.asgi import wrap
from .api.auth import TokenBook, local_admin_token
from .api.fastpath import FastPath
from .api.runviews import RunViews
from .sdnotify import Notifier
from .web.sessions import SessionBook

log = logging.getLogger(__name__)

T = TypeVar("T")

# After the drain, runs that were interrupted still need their cancel grace to stop terraform.
_HARD_STOP_MARGIN = 30.0
_RESTART_ONLY = ("listen_host", "listen_port", "data_dir", "database_url")


class Daemon:
    def __init__(self, config: Config, *, faults: FaultInjector | None = None) -> None:
        self.config = config
        self.faults = faults or NoFaults()
        self.store = Store(config.daemon.database_url)
        # Run views built once per change, for the API's reads and streams (api/runviews.py).
        self.run_views = RunViews(self.store)
        self.stopping = False
        self.stop_reason = "the daemon is shutting down"
        self.addresses: list[str] = []
        self.recovery: RecoveryReport | None = None
        self._shutdown = trio.Event()
        self.notifier = Notifier()
        # Set when waiting for storage is over (hard stop, end of the shutdown): runs still
        # waiting are left to recovery at the next start.
        self.give_up = trio.Event()
        self._api_stop = trio.Event()
        self._cancel: trio.CancelScope | None = None
        self.rt: Runtime
        self.supervisor: Supervisor
        self.releases: ReleaseExecutor | None = None
        self.outbox: OutboxWorker
        self.drift: DriftScheduler
        self.leases: LeaseKeeper
        self.fast_path: FastPath
        self.tokens = TokenBook({})  # nobody until the start has read the tokens
        self.sessions = SessionBook(self)  # the web page's sign-ins (web/sessions.py)

    async def serve(
        self, *, task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until shut down. Reports itself started once recovery is done, every workspace
        actor runs and the API listens; logs a last line once everything has stopped.

        First of all it claims the data dir (datadir.py): AlreadyRunning, before anything is
        touched, while another daemon holds it. The claim is dropped after the database is
        closed, on every way out."""
        with trio.CancelScope() as scope:
            self._cancel = scope
            with _naming("daemon.data_dir", self.config):
                claimed = datadir.claim(self.config.daemon)
            try:
                await self._serve(task_status)
            except* StorageUnavailable as group:
                # Only when told to stop while the start still waited for storage.
                log.error("stopped while waiting for storage: %s", group.exceptions[0])
            finally:
                self.store.close()
                claimed.release()
                self.notifier.close()
        log.info("tfward stopped (%s)", "hard stop" if scope.cancelled_caught else self.stop_reason)

    async def _serve(self, task_status: trio.TaskStatus[Daemon]) -> None:
        async with trio.open_nursery() as storage:
            await self._at_start("create the data directories", self._make_dirs)
            watcher = StorageWatcher(
                self.store, self.config.daemon.data_dir, self.config.daemon.disk_reserve_mb << 20
            )
            await storage.start(watcher.run)
            storage.start_soon(self._report_storage, name="storage-status")
            storage.start_soon(self._give_up_when_cancelled, name="storage-give-up")
            # Only the start-up is patient as a whole; the services below choose for
            # themselves (the API must answer 503 rather than wait).
            with patient(self.give_up):
                await self._prepare()
            await self._run_services(task_status)
            storage.cancel_scope.cancel()

    async def _prepare(self) -> None:
        """Migrations, workspace rows, keys, sealing, tokens, recovery: each waits for
        storage if it must."""
        await self._at_start("migrate the database", self.store.migrate)
        names = [ws.name for ws in self.config.workspaces]
        ws_ids = await self.store.write(lambda c: ws_store.sync_configured(c, names))
        self.rt = Runtime(self.config, self.store, ws_ids, faults=self.faults, give_up=self.give_up)
        keys = await self._at_start("load the secret key", lambda: load_keys(self.config.daemon))
        log.info("encryption and run-task keys derived from the secret in %s", keys.source)
        sealer = self.store.sealer = Sealer(keys.encryption)
        if sealed := await self.store.write(seal_plain_rows):
            log.info("sealed %d state or plan rows written before encryption at rest", sealed)
        root = self.config.daemon.data_dir / "state-backups"
        if sealed := await self._at_start(
            "seal the state backups", lambda: backups.seal_plain(root, sealer)
        ):
            log.info("sealed %d plain state backups written by an earlier version", sealed)
        self.rt.run_tasks = RunTaskCoordinator(self.store, TokenService(keys))
        await self._at_start("create the local admin token", self._read_api_tokens)
        await self.sessions.end_unaccepted()  # the config may have changed while stopped
        # Membership first: recovery finishes the runs of the workspaces this daemon owns,
        # renewing their leases meanwhile (docs/architecture.md §15).
        self.leases = LeaseKeeper(self.rt)
        origins = await self.leases.join()
        self.recovery = await self.leases.hold_while(lambda: recover(self.rt, origins))

    async def _run_services(self, task_status: trio.TaskStatus[Daemon]) -> None:
        self.supervisor = Supervisor(self.rt)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.supervisor.run, dict(self.leases.owned))
            leases = trio.CancelScope()
            nursery.start_soon(self._lease_loop, leases, name="leases")
            if self.config.releases.enabled:
                self.releases = ReleaseExecutor(self.rt, self.supervisor)
                await nursery.start(self.releases.run)
            # Rows a previous process left `running` are re-queued at once: none is held now.
            self.outbox = OutboxWorker(self.rt, self.supervisor, reclaim_at_start=True)
            await nursery.start(self.outbox.run)
            self.drift = DriftScheduler(self.rt, self.supervisor)
            await nursery.start(self.drift.run)
            self.addresses = await nursery.start(self._serve_api)
            log.info("tfward listening on %s", ", ".join(self.addresses))
            # Terraform of a run reaches the API here (terraform_remote_state of another
            # workspace): the daemon's own listener, on the same host.
            self.rt.api_url = _local_url(self.addresses[0])
            self.rt.api_listening.set()
            await self.store.write(
                lambda c: cluster_store.set_api_url(c, self.rt.node_id, self.rt.api_url)
            )
            self.notifier.ready(self.status_line())
            # Pings go on while draining (systemd's watchdog still runs during a stop).
            watchdog = trio.CancelScope()
            nursery.start_soon(self._watchdog, watchdog, name="watchdog")
            task_status.started(self)
            await self._shutdown.wait()
            self.notifier.stopping(f"stopping: {self.stop_reason}")
            if self.releases is not None:
                self.releases.stop()  # no new item starts; a new daemon resumes the release
            self.drift.stop()
            await self._drain()
            # Every run has ended: the leases go back at once for other daemons to take.
            leases.cancel()
            if self.supervisor.stopped.is_set():
                await self.leases.leave()
            # Runs ended (their notifications are queued): jobs in flight get a short grace,
            # then are abandoned with their lease and re-queued by the next start.
            self.outbox.stop()
            await self.outbox.stopped.wait()
            watchdog.cancel()
            # Event streams and long-polls end now (runs have drained), so the API's graceful
            # stop does not wait for them (docs/architecture.md §16, trap 3).
            self.store.changes.close()
            self._api_stop.set()

    async def _lease_loop(self, scope: trio.CancelScope) -> None:
        with scope:
            await self.leases.run(self.supervisor)

    async def _at_start(self, what: str, step: Callable[[], T]) -> T:
        """Run a synchronous start-up step that needs storage, in a worker thread. While storage
        refuses it (read-only, full, locked), wait — degraded, STATUS= saying why, the start
        timeout extended — and try again. Other errors end the start. Cancellable."""
        backoff = Backoff(first=0.5)
        while True:
            try:
                return await trio.to_thread.run_sync(step)
            except Exception as exc:  # only storage faults are waited out; the rest re-raised
                fault = classify(exc, what)
                if fault is None:
                    raise
                self.store.health.failed(fault)
            status = f"starting: waiting for storage to {what}: {fault}"
            wait = backoff.next()
            self.notifier.status(status)
            self.notifier.extend_timeout(wait + 30)
            await self.store.health.wait(wait, self.give_up)
            if self.give_up.is_set():
                raise StorageUnavailable(fault.problem, f"gave up waiting to {what}")

    async def _give_up_when_cancelled(self) -> None:
        """However the daemon is cancelled (a hard stop, or its caller's scope), nothing may
        go on waiting for storage after it: the storage watcher is gone with it."""
        try:
            await trio.sleep_forever()
        finally:
            self.give_up.set()

    async def _report_storage(self) -> None:
        """Tell systemd at once when storage degrades or recovers (STATUS=)."""
        while True:
            await self.store.health.changed.wait()
            self.notifier.status(self.status_line())

    async def _load_api_tokens(self, config: Config) -> None:
        local = await trio.to_thread.run_sync(local_admin_token, config)
        self._use_api_tokens(config, local)

    def _read_api_tokens(self) -> None:
        self._use_api_tokens(self.config, local_admin_token(self.config))

    def _use_api_tokens(self, config: Config, local: str | None) -> None:
        self.tokens = TokenBook.build(config, local)
        names = [f"{t.name} ({t.role})" for t in config.api_tokens] or ["the local admin token"]
        log.info("API tokens accepted: %s", ", ".join(names))

    async def _end_unaccepted_sessions(self) -> None:
        """After a reload: web sessions of tokens removed from the config (or given another
        role) end now. Should storage refuse, each such session still ends at its next use
        (the page checks its token every time)."""
        try:
            await self.sessions.end_unaccepted()
        except StorageUnavailable as exc:
            log.warning("could not end the web sessions of removed tokens now: %s", exc)

    def status_line(self) -> str:
        """systemd's STATUS=: what the daemon is doing, in one line (storage first if it is
        degraded: that is what an operator must act on)."""
        degraded = self.store.health.degraded
        storage = f"{degraded.describe()}; " if degraded is not None else ""
        if not hasattr(self, "rt"):
            return storage + "starting"
        live = len(self.rt.live_logs)
        critical = self.rt.critical.count()
        state = "stopping" if self.stopping else "serving"
        return (
            storage
            + f"{state} {len(self.config.workspaces)} workspaces; {live} runs active"
            + (f", {critical} in a critical section" if critical else "")
        )

    async def _watchdog(self, scope: trio.CancelScope) -> None:
        with scope:
            await self.notifier.watchdog(self._responsive, self.status_line)

    async def _responsive(self, within: float) -> bool:
        """For the watchdog: the trio loop runs this (so it is not blocked) and the supervisor
        runs. Storage is not asked: a daemon waiting out a storage fault is healthy, and
        systemd must not kill it while terraform applies (docs/architecture.md §10)."""
        return not (self.supervisor.stopped.is_set() and not self.stopping)

    def _make_dirs(self) -> None:
        """The data directories, private (tfvars, states, plans and the database hold
        secrets: 0700 directories, 0600 files), and the dev-provider mirror. A directory that
        cannot be made for another reason than a storage fault is a ConfigError naming its key
        (preflight.py checks the same before the start; this catches what changed since)."""
        with _naming("daemon.data_dir", self.config):
            datadir.make_private(self.config)
            workdir.build_dev_mirror(self.config.terraform, Runtime.dev_mirror_of(self.config))

    async def _serve_api(self, *, task_status: trio.TaskStatus[list[str]]) -> None:
        hc = HypercornConfig()
        hc.bind = [f"{_bracket(self.config.daemon.listen_host)}:{self.config.daemon.listen_port}"]
        hc.accesslog = None
        # Hypercorn's own logger, not its default stderr handler: records go through the
        # daemon's log (JSON lines), once (obs/logs.py).
        hc.errorlog = logging.getLogger("hypercorn.error")
        hc.graceful_timeout = 5.0
        # The plain GET of a run is answered in front of the app (api/fastpath.py).
        self.fast_path = FastPath(wrap(create_app(self), max_body=MAX_BODY), self)
        app = self.fast_path
        await hypercorn_serve(
            app,
            hc,
            shutdown_trigger=self._api_stop.wait,
            task_status=task_status,
        )

    async def _drain(self) -> None:
        self.stopping = True
        log.info(
            "shutting down: draining runs (up to %.0fs for applies)",
            self.config.daemon.shutdown_grace,
        )
        self.supervisor.stop(drain=True)
        with trio.move_on_after(self.config.daemon.shutdown_grace):
            await self.supervisor.stopped.wait()
        if not self.supervisor.stopped.is_set():
            log.warning("shutdown grace over: interrupting the runs still applying")
            self.supervisor.stop(drain=False)
            with trio.move_on_after(self.config.terraform.cancel_grace + _HARD_STOP_MARGIN):
                await self.supervisor.stopped.wait()
        if not self.supervisor.stopped.is_set():
            log.warning(
                "runs still wait for storage: leaving them (directories, locks) to recovery at "
                "the next start"
            )
            self.give_up.set()
            with trio.move_on_after(_HARD_STOP_MARGIN):
                await self.supervisor.stopped.wait()

    async def reload(self, by: str = "signal") -> bool:
        """Re-read the config file (SIGHUP). An invalid file keeps the running config (and says
        why in the log); returns whether the new config was applied. Settings of `[daemon]`
        that need a new socket or database (listen, data_dir, database_url) take effect at the
        next start. The audit trail records it (`by`: who asked), applied or refused."""
        tried = Attempt(by, AuditAction.CONFIG_RELOAD, f"config {self.config.path}")
        try:
            new = await trio.to_thread.run_sync(load_config, self.config.path)
        except ConfigError as exc:
            problems = "; ".join(problem.line() for problem in exc.problems)
            log.error("config reload refused, keeping the running config: %s", problems)
            await self.store.write(
                lambda c: audit.record(c, tried, AuditOutcome.REFUSED, reason=problems)
            )
            return False
        old = self.config
        kept = {k: getattr(old.daemon, k) for k in _RESTART_ONLY}
        if any(getattr(new.daemon, k) != v for k, v in kept.items()):
            log.warning("config reload: %s change only at the next start", ", ".join(_RESTART_ONLY))
        new = dataclasses.replace(new, daemon=dataclasses.replace(new.daemon, **kept))
        names = [ws.name for ws in new.workspaces]
        before = {ws.name for ws in old.workspaces}
        added, removed = [n for n in names if n not in before], sorted(before - set(names))
        detail = {"workspaces": len(names), "added": added, "removed": removed}

        def tx(conn: Connection) -> dict[str, str]:
            ws_ids = ws_store.sync_configured(conn, names)
            audit.record(conn, tried, detail=detail)
            return ws_ids

        try:
            ws_ids = await self.store.write(tx, patient=False)
        except StorageUnavailable as exc:
            log.error("config reload refused, keeping the running config: %s", exc)
            return False
        self.rt.workspace_ids.update(ws_ids)
        self.rt.config = self.config = new
        await self._load_api_tokens(new)
        await self._end_unaccepted_sessions()
        self.rt.process_limiter.total_tokens = new.daemon.max_concurrent_runs
        await trio.to_thread.run_sync(workdir.build_dev_mirror, new.terraform, self.rt.dev_mirror)
        await self.supervisor.reconfigure(added=added, removed=removed)
        log.info("config reloaded from %s (%d workspaces)", new.path, len(names))
        return True

    def request_shutdown(self, reason: str = "the daemon is shutting down") -> None:
        self.stop_reason = reason
        self.stopping = True
        self._shutdown.set()

    def hard_stop(self) -> None:
        """Cancel everything now. Run tasks still finish through the funnel (shielded); one
        still waiting for storage is left to recovery at the next start."""
        self.give_up.set()
        if self._cancel is not None:
            self._cancel.cancel()


@contextmanager
def _naming(key: str, config: Config) -> Iterator[None]:
    """An OSError inside becomes a one-line ConfigError on `key` of the config, unless it is a
    storage fault (a full disk, a read-only file system), which the start waits out."""
    try:
        yield
    except OSError as exc:
        if classify(exc) is not None:
            raise
        where = exc.filename or key
        raise ConfigError(
            config.path, key, f"{where} is not writable: {exc.strerror or exc}"
        ) from None


def _local_url(address: str) -> str:
    """A listening address as a URL a local client can connect to (not 0.0.0.0 or [::])."""
    return address.replace("//0.0.0.0:", "//127.0.0.1:").replace("//[::]:", "//[::1]:")


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
