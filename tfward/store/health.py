"""Storage health: whether the daemon's storage takes writes now, why not, and since when.

Storage is the database and the disk of the data dir (run directories, output files, state
backups). Either may fail for a while: a full disk, a database file made read-only, another
process holding the database's write lock, an I/O error. This module is the one source of
truth about that (docs/architecture.md §10):

- `classify` tells a storage fault (an error that waiting can cure) from anything else;
- `StorageHealth` is degraded by a write that failed for such a reason (`failed`), and
  cleared by the next write that works (`succeeded`) — the store does both — or held
  degraded by the disk watcher while the disk is full (`hold`, store/reserve.py). It logs
  once per outage, not per attempt; waiters `await wait(...)` for recovery. The API, the
  actors, the services, the watchdog's status line, /healthz and /metrics all read it;
- `patient()` marks the code below it (a contextvar, so every task it starts inherits it) as
  code that must not fail because of storage: its store calls wait and try again, with
  backoff, until storage answers or `give_up` is set (the daemon stops for good).
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import errno
import logging
import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import trio
from sqlalchemy.exc import DBAPIError, OperationalError

from tfward.errors import StorageUnavailable
from tfward.ids import now

log = logging.getLogger(__name__)

T = TypeVar("T")


class Problem(enum.StrEnum):
    """What is wrong with storage (the `problem` label of /metrics)."""

    DISK_FULL = "disk_full"
    READ_ONLY = "read_only"
    LOCKED = "locked"  # another process holds the database's write lock
    IO_ERROR = "io_error"
    UNAVAILABLE = "unavailable"  # the database cannot be opened or reached


_SQLITE = {
    "SQLITE_FULL": Problem.DISK_FULL,
    "SQLITE_READONLY": Problem.READ_ONLY,
    "SQLITE_PERM": Problem.READ_ONLY,
    "SQLITE_BUSY": Problem.LOCKED,
    "SQLITE_LOCKED": Problem.LOCKED,
    "SQLITE_IOERR": Problem.IO_ERROR,
    "SQLITE_CANTOPEN": Problem.UNAVAILABLE,
}
# PostgreSQL's SQLSTATEs (or their classes) that waiting can cure; anything else is no storage
# fault (a serialization failure is retried by the store; a constraint is a bug or a refusal).
_PG = (
    ("08", Problem.UNAVAILABLE),  # connection exception: the server unreachable, dropped
    ("57P", Problem.UNAVAILABLE),  # the server shutting down, starting, or gone
    ("53100", Problem.DISK_FULL),
    ("53", Problem.UNAVAILABLE),  # out of memory, too many connections
    ("25006", Problem.READ_ONLY),  # a hot standby, or default_transaction_read_only
    ("58", Problem.IO_ERROR),
)
_ERRNO = {
    errno.ENOSPC: Problem.DISK_FULL,
    errno.EDQUOT: Problem.DISK_FULL,
    errno.EROFS: Problem.READ_ONLY,
    errno.EPERM: Problem.READ_ONLY,
    errno.EACCES: Problem.READ_ONLY,
    errno.EIO: Problem.IO_ERROR,
}


def classify(exc: BaseException, where: str = "database") -> StorageUnavailable | None:
    """The storage fault `exc` is, as a StorageUnavailable naming `where`; None when `exc` is
    not one (a bug, a refused state, a missing row: waiting cures none of those)."""
    if isinstance(exc, StorageUnavailable):
        return exc
    state = str(getattr(getattr(exc, "orig", None), "sqlstate", None) or "")
    if isinstance(exc, DBAPIError) and state:
        problem = next((p for prefix, p in _PG if state.startswith(prefix)), None)
        return None if problem is None else StorageUnavailable(problem, f"{where}: {exc.orig}")
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return StorageUnavailable(Problem.UNAVAILABLE, f"{where}: {exc.orig}")
    if isinstance(exc, OperationalError):
        name = str(getattr(exc.orig, "sqlite_errorname", ""))
        problem = next(
            (p for prefix, p in _SQLITE.items() if name.startswith(prefix)), Problem.UNAVAILABLE
        )
        return StorageUnavailable(problem, f"{where}: {exc.orig}")
    if isinstance(exc, OSError) and exc.errno in _ERRNO:
        return StorageUnavailable(_ERRNO[exc.errno], f"{where}: {exc}")
    return None


@dataclass(frozen=True, slots=True)
class Degraded:
    """Why storage does not take writes, and since when (wall clock, for people)."""

    problem: Problem
    reason: str
    since: datetime

    def describe(self) -> str:
        return f"storage degraded since {self.since:%Y-%m-%d %H:%M:%S}Z ({self.problem}): " + (
            self.reason
        )


class StorageHealth:
    """One per store. Used from trio code only (the store reports after its thread returns)."""

    def __init__(self) -> None:
        self.current: Degraded | None = None  # a write failed and none has worked since
        self.held: Degraded | None = None  # the disk watcher's: the disk is full
        self.outages: Counter[Problem] = Counter()  # since start, for /metrics
        self._recovered = trio.Event()
        self._recovered.set()
        self._started_at = 0.0
        # Set (and replaced) whenever storage degrades or recovers.
        self.changed = trio.Event()
        # Called (synchronously) when a write fails because the disk is full, so the disk
        # watcher frees its reserve at once instead of at its next look.
        self.on_disk_full: Callable[[], None] | None = None
        # The disk watcher's look at the disk, now (before terraform starts: `disk_ready`).
        self.check_disk: Callable[[], None] | None = None
        # Deadlines that do not run while storage fails: scope -> seconds left when paused.
        self._paused: dict[trio.CancelScope, float | None] = {}

    @property
    def failing(self) -> bool:
        """Writes do not work now (or must not be tried: the disk is full)."""
        return self.current is not None or self.held is not None

    @property
    def degraded(self) -> Degraded | None:
        """What an operator is told: the disk first (it blocks writes), then the database."""
        return self.held or self.current

    def failed(self, exc: StorageUnavailable) -> Degraded:
        """A write (or read) failed for `exc`. Logged once per outage."""
        problem = Problem(exc.problem)
        if self.current is None or self.current.problem is not problem:
            self.current = Degraded(problem, exc.reason, now())
            self._begin(self.current)
        if problem is Problem.DISK_FULL and self.on_disk_full is not None:
            self.on_disk_full()
        return self.current

    def succeeded(self) -> None:
        """A write worked: the database takes writes again (a held disk stays degraded)."""
        if self.current is not None:
            self.current = None
            self._end()

    def hold(self, degraded: Degraded) -> None:
        """The disk watcher's: writes must not be tried (keep the freed space for terraform)."""
        if self.held is None:
            self.held = degraded
            self._begin(degraded)

    def release(self) -> None:
        if self.held is not None:
            self.held = None
            self._end()

    def _begin(self, degraded: Degraded) -> None:
        if self._recovered.is_set():
            self._recovered = trio.Event()
            self._started_at = trio.current_time() if _in_trio() else 0.0
            self.outages[degraded.problem] += 1
            for scope in self._paused:
                self._pause(scope)
            self._changed()
            log.warning(
                "%s; writes wait and are retried, terraform is not interrupted",
                degraded.describe(),
            )

    def _end(self) -> None:
        if not self.failing and not self._recovered.is_set():
            lasted = trio.current_time() - self._started_at if _in_trio() else 0.0
            log.warning("storage recovered after %.1fs: writes go on", lasted)
            self._recovered.set()
            for scope in self._paused:
                self._resume(scope)
            self._changed()

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    @contextlib.contextmanager
    def paused_while_failing(self, scope: trio.CancelScope) -> Iterator[None]:
        """While in the block, `scope`'s deadline does not run while storage fails: a stage's
        own time limit is for its work, not for waiting on storage (docs/architecture.md §10).
        When storage returns the scope has the time it had left when storage failed."""
        self._paused[scope] = None
        if self.failing:
            self._pause(scope)
        try:
            yield
        finally:
            del self._paused[scope]

    def _pause(self, scope: trio.CancelScope) -> None:
        if self._paused.get(scope) is None and scope.deadline != math.inf:
            self._paused[scope] = max(0.0, scope.deadline - trio.current_time())
            scope.deadline = math.inf

    def _resume(self, scope: trio.CancelScope) -> None:
        left = self._paused.get(scope)
        if left is not None:
            scope.deadline = trio.current_time() + left
            self._paused[scope] = None

    async def wait(self, at_most: float, give_up: trio.Event | None = None) -> None:
        """Return once storage has recovered, `at_most` seconds have passed, or `give_up` is
        set — whichever comes first. Cancellable."""
        if not self.failing:
            return
        recovered = self._recovered
        with trio.move_on_after(at_most):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_after, recovered.wait, nursery.cancel_scope)
                if give_up is not None:
                    nursery.start_soon(_cancel_after, give_up.wait, nursery.cancel_scope)

    def status(self) -> dict[str, object]:
        """For /healthz: `ok`, or `degraded` with the problem, the reason and since when."""
        degraded = self.degraded
        if degraded is None:
            return {"status": "ok"}
        return {
            "status": "degraded",
            "problem": str(degraded.problem),
            "reason": degraded.reason,
            "since": degraded.since.isoformat().replace("+00:00", "Z"),
        }


async def _cancel_after(fn: Callable[[], Awaitable[object]], scope: trio.CancelScope) -> None:
    await fn()
    scope.cancel()


def _in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


class Backoff:
    """Waits of 0.25 s doubling up to `cap`, each times a random factor in [1, 1.25)."""

    def __init__(self, first: float = 0.25, cap: float = 5.0) -> None:
        self.first, self.cap = first, cap
        self._next = first

    def next(self) -> float:
        wait = self._next * (1 + random.random() / 4)
        self._next = min(self.cap, self._next * 2)
        return wait

    def reset(self) -> None:
        self._next = self.first


@dataclass(frozen=True, slots=True)
class Patience:
    """Store calls in this context wait for storage instead of failing, until `give_up`."""

    give_up: trio.Event | None = None

    @property
    def exhausted(self) -> bool:
        return self.give_up is not None and self.give_up.is_set()


_PATIENCE: contextvars.ContextVar[Patience | None] = contextvars.ContextVar(
    "tfward_storage_patience", default=None
)


@contextlib.contextmanager
def patient(give_up: trio.Event | None = None) -> Iterator[Patience]:
    """Make the store calls of this block (and of every task started inside it) wait for
    storage to come back rather than raise StorageUnavailable; they raise it only once
    `give_up` is set. Used by everything that runs terraform or finishes runs."""
    patience = Patience(give_up)
    token = _PATIENCE.set(patience)
    try:
        yield patience
    finally:
        _PATIENCE.reset(token)


def current_patience() -> Patience | None:
    return _PATIENCE.get()


async def patiently(
    health: StorageHealth, attempt: Callable[[], Awaitable[T]], patience: Patience | None
) -> T:
    """Run `attempt` until it does not raise StorageUnavailable. Without patience, or once it
    is exhausted, the error is raised. Between attempts: the backoff, cut short by recovery."""
    backoff = Backoff()
    while True:
        try:
            return await attempt()
        except StorageUnavailable:
            if patience is None or patience.exhausted:
                raise
        await health.wait(backoff.next(), patience.give_up)
        if patience.exhausted:
            raise StorageUnavailable(
                str(health.degraded.problem) if health.degraded else Problem.UNAVAILABLE,
                "gave up waiting for storage: the daemon is stopping",
            )


async def disk_ready(health: StorageHealth) -> None:
    """Before a terraform command starts: look at the data dir's disk now, and while it is full
    wait (as patiently as the context allows). Terraform writes to it from its first moment
    (its lock file, init's providers) and fails at once on a full disk; a command already
    running is never stopped for it."""
    if health.check_disk is not None:
        health.check_disk()
    patience = current_patience()
    backoff = Backoff()
    while health.held is not None and health.held.problem is Problem.DISK_FULL:
        if patience is None or patience.exhausted:
            raise StorageUnavailable(health.held.problem, health.held.reason)
        await health.wait(backoff.next(), patience.give_up)


async def file_op(
    health: StorageHealth, fn: Callable[..., T], *args: object, where: str
) -> T:
    """Run the file operation `fn(*args)` in a worker thread. A storage fault (disk full,
    read-only) degrades `health` and, in a patient context, is waited out like a database
    write; other errors propagate."""

    async def attempt() -> T:
        if health.held is not None:
            raise StorageUnavailable(health.held.problem, health.held.reason)
        try:
            result = await trio.to_thread.run_sync(fn, *args)
        except OSError as exc:
            fault = classify(exc, where)
            if fault is None:
                raise
            health.failed(fault)
            raise fault from exc
        return result

    return await patiently(health, attempt, current_patience())
