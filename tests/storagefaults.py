"""Real storage faults for tests (docs/architecture.md §10): nothing here is a mock. And a run
through an outage with every check of the contract after it (`run_through_outage`), shared by
the fault matrix's storage column and the long outages.

- `ReadOnlyDatabase`: `chattr +i` on the SQLite file and its `-wal` (the kernel refuses every
  write to them, root included). The `-shm` is left alone: SQLite maps it into memory, and a
  write to a mapped immutable file is SIGBUS, which no process survives (README, "Storage
  faults"). Needs root and a filesystem with the immutable flag (ext4 `/tmp` here; not tmpfs).
- `HeldWriteLock`: another process holds `BEGIN EXCLUSIVE` on the database.
- `UnreadableDatabase`: another process holds the database in SQLite's exclusive locking
  mode: nobody else reads it either (WAL mode included); reads fail after the busy timeout.
- `FullDisk`: a file fills the filesystem (a small tmpfs, `tmpfs()`) to the last byte.
- `tmpfs(path, size)`: mounts one (root only).

Each fault has `start()` / `stop()` (a held-for helper runs it for a while in the background)
and is a context manager. Tests that need root say so: without root they fail with one line
saying so when `$CI` is set, and are skipped otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
import trio
from harness import (
    Api,
    demo_workspace,
    facts,
    running_daemon,
    state_addresses,
    stray_processes,
    write_config,
)

from tfward.runs.model import Stage


def require_root(what: str) -> None:
    """Fail (under CI, which runs as root) or skip (elsewhere) when not root."""
    if os.geteuid() == 0:
        return
    message = f"needs root: {what}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class Fault(Protocol):
    name: str

    @property
    def active(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


def _chattr(flag: str, paths: list[Path]) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


class ReadOnlyDatabase:
    """`chattr +i` on the database file and its `-wal`."""

    name = "read_only"

    def __init__(self, db: Path) -> None:
        require_root("chattr +i makes the database read-only")
        self.paths = [db, db.with_name(db.name + "-wal")]
        self.active = False

    def start(self) -> None:
        for path in self.paths:
            path.touch(exist_ok=True)
        _chattr("+i", self.paths)
        self.active = True

    def stop(self) -> None:
        if self.active:
            _chattr("-i", self.paths)
            self.active = False

    def __enter__(self) -> ReadOnlyDatabase:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()  # until the test closes our stdin
conn.execute("ROLLBACK")
"""


class HeldWriteLock:
    """Another process holding the database's write lock (`BEGIN EXCLUSIVE`)."""

    name = "locked"

    def __init__(self, db: Path) -> None:
        self.db = db
        self.proc: subprocess.Popen[bytes] | None = None
        self.active = False  # the lock is held

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(self.db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # a test helper: blocks until the lock is held
        assert line == b"locked\n", line
        self.active = True

    def stop(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.close()
            self.proc.wait(30)
            self.proc.stdout.close()
            self.proc = None
            self.active = False

    def __enter__(self) -> HeldWriteLock:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_EXCLUSIVE_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0.2)
try:
    conn.execute("PRAGMA locking_mode=EXCLUSIVE")
    conn.execute("BEGIN EXCLUSIVE")
    conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
except sqlite3.OperationalError as exc:
    print("busy:", exc, flush=True)
    sys.exit(1)
print("locked", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


class UnreadableDatabase:
    """Another process holding the database in SQLite's exclusive locking mode, so the
    daemon cannot even read it. A connection the daemon keeps open would keep that process
    out, so `start` closes the store's idle connections first and tries again until it holds
    the database (it blocks the caller meanwhile: call it from the test's own task, so the
    daemon in the same loop opens none in between)."""

    name = "locked"

    def __init__(self, db: Path, store: Any) -> None:
        self.db, self.store = db, store
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        for _ in range(50):
            self.store.engine.dispose()
            proc = subprocess.Popen(
                [sys.executable, "-c", _EXCLUSIVE_HOLDER, str(self.db)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            assert proc.stdout is not None
            if proc.stdout.readline() == b"locked\n":  # a test helper: blocks until it knows
                self.proc = proc
                return
            proc.wait(10)
            proc.stdout.close()
            assert proc.stdin is not None
            proc.stdin.close()
        raise AssertionError("could not take the database in exclusive mode")

    def stop(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.close()
            self.proc.wait(30)
            self.proc.stdout.close()
            self.proc = None

    def __enter__(self) -> UnreadableDatabase:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FullDisk:
    """A file that takes every free byte of the filesystem holding `directory`."""

    name = "disk_full"

    def __init__(self, directory: Path) -> None:
        self.path = directory / "disk-filler"
        self.active = False

    def start(self) -> None:
        block = b"\0" * (1 << 20)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            size = len(block)
            while size:
                try:
                    os.write(fd, block[:size])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    size //= 2  # the last pieces, down to one byte
        finally:
            os.close(fd)
        self.active = True

    def stop(self) -> None:
        self.path.unlink(missing_ok=True)
        self.active = False

    def __enter__(self) -> FullDisk:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of `size_mb` MB mounted at `path` for the block (root only)."""
    require_root("mount -t tmpfs gives a disk that can fill up")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


async def hold(fault: Fault, seconds: float) -> None:
    """Start `fault` (in a worker thread: some block briefly), keep it `seconds`, stop it.
    Stopped on every path, cancellation included."""
    await trio.to_thread.run_sync(fault.start)
    try:
        await trio.sleep(seconds)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(fault.stop)


# ---- a run through an outage (the fault matrix's storage column, the long outages) -----------

STORAGE_FAULTS = ["read_only", "disk_full", "locked"]
THINGS = 3  # demo_things each run creates
COMPLETED = "run:completed"


def make_fault(name: str, data_dir: Path) -> Fault:
    if name == "read_only":
        return ReadOnlyDatabase(data_dir / "tfward.db")
    if name == "locked":
        return HeldWriteLock(data_dir / "tfward.db")
    return FullDisk(data_dir)


class StorageOutage:
    """Storage fails as the run enters `stage` (the fault is in place when the stage's work
    begins) and comes back `seconds` later (in `nursery`); the stage itself goes on."""

    def __init__(self, stage: str, fault: Fault, seconds: float, nursery: trio.Nursery) -> None:
        self.stage, self.fault, self.seconds, self.nursery = Stage(stage), fault, seconds, nursery
        self.reached = trio.Event()
        self.over = trio.Event()

    async def at(self, run_id: str, stage: Stage) -> None:
        if stage is self.stage and not self.reached.is_set():
            self.reached.set()
            await trio.to_thread.run_sync(self.fault.start)
            self.nursery.start_soon(self._end)

    async def _end(self) -> None:
        try:
            await trio.sleep(self.seconds)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.fault.stop)
            self.over.set()


async def run_through_outage(root: Path, stage: str, fault: str, seconds: float) -> None:
    """A real daemon runs a real `plan_and_apply` of THINGS demo_things in `root`; storage
    fails (`fault`) when the run reaches `stage` (`apply_pending`: while it waits, and a person
    confirms through the outage) for `seconds`. Then every point of the contract is checked:
    the run `applied`, every resource the provider created in the latest stored state and none
    twice, every line terraform printed about them in the log once, the lock released with the
    outcome, the daemon up all along."""
    with contextlib.ExitStack() as stack:
        if fault == "disk_full":
            stack.enter_context(tmpfs(root / "data", 40))
        waiting = stage == "apply_pending"
        ws = demo_workspace(root, things=THINGS, delay=1, auto_apply=not waiting)
        # The faults are those of the SQLite file and its data dir: SQLite whatever
        # TFWARD_TEST_DATABASE says (PostgreSQL's own outage: tests/store/test_dialect.py).
        db = root / "data" / "tfward.db"
        config = write_config(
            root,
            [ws],
            daemon={"disk_reserve_mb": 4, "database_url": f"sqlite:///{db}"},
            terraform={"cancel_grace": "5s"},
        )
        the_fault = make_fault(fault, config.daemon.data_dir)
        async with trio.open_nursery() as outages:
            injector = None if waiting else StorageOutage(stage, the_fault, seconds, outages)
            async with running_daemon(config, faults=injector) as (daemon, api):
                run_id = (await api.create_run("demo"))["id"]
                if injector is None:
                    await api.wait(run_id, "apply_pending")
                    await _confirm_through_an_outage(api, run_id, the_fault, seconds, outages)
                    assert daemon.store.health.outages  # the daemon saw the outage
                else:
                    with trio.fail_after(120):
                        await injector.reached.wait()
                        await injector.over.wait()
                await api.wait(run_id, "applied", timeout=120)
                assert (await api.http.get("/healthz")).status_code == 200  # up all along
                found = await facts(daemon, run_id)
        check_after_outage(root, daemon, run_id, found)


async def _confirm_through_an_outage(
    api: Api, run_id: str, fault: Fault, seconds: float, nursery: trio.Nursery
) -> None:
    """A person confirms while storage fails: 503 with the reason; after it: 202."""
    over = trio.Event()

    async def outage() -> None:
        await hold(fault, seconds)
        over.set()

    nursery.start_soon(outage)
    with trio.fail_after(seconds + 60):
        while not fault.active:
            await trio.sleep(0.02)
        if fault.name == "disk_full":  # the database may still take a write on a full disk
            while (await api.http.get("/healthz")).json()["data"]["status"] != "degraded":
                await trio.sleep(0.02)
        refused = await api.action(run_id, "confirm")
        assert refused.status_code == 503, refused.text
        assert "storage degraded" in refused.json()["error"]["message"]
        await over.wait()
        while (response := await api.action(run_id, "confirm")).status_code == 503:
            await trio.sleep(0.2)
        assert response.status_code == 202, response.text


def check_after_outage(root: Path, daemon: Any, run_id: str, found: dict[str, Any]) -> None:
    run = found["run"]
    assert str(run.status) == "applied", (run.status, run.error_kind, run.error_message)
    assert "[tfward] run finished: applied" in found["log"]
    assert not found["dir_exists"], "the run directory was left behind"
    assert found["lock"] is None, f"the lock is still held: {found['lock']}"
    finals = ("run:errored", "run:cancelled", COMPLETED)
    assert [t for t in found["triggers"] if t in finals] == [COMPLETED]
    latest = found["states"][0]
    assert (latest.run_id, latest.kind) == (run_id, "apply")
    # The lock went with the outcome, after the state was stored (one transaction).
    assert latest.created_at <= run.finished_at
    # No orphan: what the provider created is exactly what the latest state holds.
    created = sorted(
        json.loads(p.read_text())["name"] for p in (root / "demo-store").glob("*.json")
    )
    assert created == [f"demo-{i}" for i in range(THINGS)]
    assert state_addresses(daemon, latest.id) == [f"demo_thing.this[{i}]" for i in range(THINGS)]
    # Every line terraform printed about them reached the log, once.
    for i in range(THINGS):
        assert found["log"].count(f"demo_thing.this[{i}]: Creation complete") == 1, found["log"]
    assert found["log"].count(f"Apply complete! Resources: {THINGS} added") == 1
    assert daemon.rt.critical.count() == 0
    assert not daemon.store.health.failing
    assert stray_processes(str(root)) == []
