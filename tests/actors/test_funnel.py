"""The termination funnel (tfward/actors/funnel.py) on its own, with a real SQLite store and no
terraform: its steps happen in the contract's order — state, then log, then directory, then
the one transaction — and a failing step does not stop the later ones. With the database
really read-only (`chattr +i`), the funnel waits: directory, lock and status stay until storage
returns (docs/architecture.md §10). A change there fails here in seconds, before the fault
matrix runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
from harness import write_config
from sqlalchemy import Connection, insert
from storagefaults import ReadOnlyDatabase

from tfward.actors.funnel import Ending, Outcome, finish_run
from tfward.actors.runlog import RunLog
from tfward.actors.runtime import Runtime
from tfward.config import Config
from tfward.errors import StageFailed
from tfward.ids import now
from tfward.runs import model
from tfward.runs.model import ErrorKind, Operation, ResourceChanges, Run, Status
from tfward.store import artifacts, tasks
from tfward.store import outbox as outbox_store
from tfward.store import runs as run_store
from tfward.store import workspaces as ws_store
from tfward.store.db import Store, sqlite_url
from tfward.store.fencing import Fence, fenced
from tfward.store.tables import workspace_leases

T = TypeVar("T")
Event = tuple[str, dict[str, Any]]


class WatchedStore(Store):
    """A real store that notes when a transaction makes a run terminal, and what was true of
    the world at that moment."""

    def __init__(self, url: str, events: list[Event], run_dir: Path) -> None:
        super().__init__(url)
        self.events = events
        self.run_dir = run_dir

    async def write(
        self, fn: Callable[[Connection], T], *, patient: bool | None = None, lease: bool = False
    ) -> T:
        result = await super().write(fn, patient=patient, lease=lease)
        if isinstance(result, Run) and result.status.is_terminal:
            self.events.append(("record", {"dir": self.run_dir.exists()}))
        return result


class WatchedLog(RunLog):
    """A real run log that notes when it was stored."""

    events: list[Event]
    run_dir: Path

    async def close(self) -> None:
        await super().close()
        self.events.append(("log", {"dir": self.run_dir.exists()}))


class Keeper:
    """The funnel's StateKeeper, as a fake: notes the call, or refuses the state the way the
    real one does when the state cannot be stored for what it is (another lineage)."""

    def __init__(self, events: list[Event], store: Store, fail: bool = False) -> None:
        self.events, self.store, self.fail = events, store, fail

    async def keep_state(self, ending: Ending, kind: str) -> None:
        run = await self.store.read(lambda c: run_store.get_run(c, ending.run_id))
        stored = await self.store.read(lambda c: artifacts.read_log(c, ending.run_id))
        self.events.append(
            (
                "state",
                {
                    "dir": ending.run_dir.exists(),
                    "terminal": run.status.is_terminal,
                    "log_stored": bool(stored),
                    "kind": kind,
                },
            )
        )
        if self.fail:
            raise StageFailed(ErrorKind.STATE, "state lineage b differs from the workspace's a")
        ending.state_saved = True


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return write_config(tmp_path, [{"name": "demo", "source": str(tmp_path)}])


@pytest.fixture
def events() -> list[Event]:
    return []


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "runs" / "run-x"
    path.mkdir(parents=True)
    (path / "terraform.tfstate").write_text("{}")
    return path


@pytest.fixture
def store(config: Config, events: list[Event], run_dir: Path) -> Iterator[WatchedStore]:
    store = WatchedStore(sqlite_url(config.daemon.data_dir / "tfward.db"), events, run_dir)
    store.migrate()
    yield store
    store.close()


def _applying_run(conn: Connection) -> tuple[str, str]:
    """A run of workspace `demo` in `applying`, holding the workspace lock."""
    ws_id = ws_store.sync_configured(conn, ["demo"])["demo"]
    run = run_store.create_run(
        conn,
        workspace_id=ws_id,
        workspace_name="demo",
        operation=Operation.PLAN_AND_APPLY,
        auto_apply=True,
    )
    for step in (
        lambda r: model.start_planning(r, now()),
        lambda r: model.plan_finished(
            r,
            now(),
            changes=ResourceChanges(add=1),
            has_changes=True,
            plan_hash="0" * 64,
            expires_at=now(),
        ),
    ):
        run_store.transition(conn, run.id, step)
    ws_store.acquire_lock(conn, ws_id, run_id=run.id, by=f"run {run.id}", reason="apply")
    return run.id, ws_id


def _ending(
    store: Store, events: list[Event], run_dir: Path, run_id: str, ws_id: str
) -> Ending:
    log = WatchedLog(run_id, store)
    log.events, log.run_dir = events, run_dir
    return Ending(run_id, "demo", ws_id, log, run_dir, apply_started=True)


def _facts(store: Store, run_id: str, ws_id: str) -> dict[str, Any]:
    def load(conn: Connection) -> dict[str, Any]:
        return {
            "run": run_store.get_run(conn, run_id),
            "lock": ws_store.get_lock(conn, ws_id),
            "log": b"".join(d for _, d in artifacts.read_log(conn, run_id)).decode(),
            "outbox": [
                r["payload"]["trigger"] for r in outbox_store.list_rows(conn, run_id=run_id)
            ],
            "tokens": tasks.list_for_run(conn, run_id),
        }

    return store.run_sync(load)


async def test_the_funnel_stores_the_state_then_the_log_then_removes_the_directory_then_records(
    config: Config, store: WatchedStore, events: list[Event], run_dir: Path
) -> None:
    run_id, ws_id = store.run_sync(_applying_run)
    rt = Runtime(config, store, {"demo": ws_id})
    ending = _ending(store, events, run_dir, run_id, ws_id)
    ending.log.write(b"Apply complete! Resources: 1 added, 0 changed, 0 destroyed.\n")

    final = await finish_run(rt, ending, Outcome(Status.APPLIED), Keeper(events, store))

    assert [name for name, _ in events] == ["state", "log", "record"]
    state, log, record = (facts for _, facts in events)
    assert state == {"dir": True, "terminal": False, "log_stored": False, "kind": "apply"}
    assert log == {"dir": True}
    assert record == {"dir": False}
    assert final is not None and final.status is Status.APPLIED
    found = _facts(store, run_id, ws_id)
    assert found["lock"] is None
    assert "Apply complete!" in found["log"] and "run finished: applied" in found["log"]
    assert found["outbox"][-1] == "run:completed"


async def test_a_state_the_store_refuses_keeps_the_lock_and_ends_applied_state_error(
    config: Config, store: WatchedStore, events: list[Event], run_dir: Path
) -> None:
    run_id, ws_id = store.run_sync(_applying_run)
    rt = Runtime(config, store, {"demo": ws_id})
    ending = _ending(store, events, run_dir, run_id, ws_id)

    final = await finish_run(
        rt, ending, Outcome(Status.APPLIED), Keeper(events, store, fail=True)
    )

    assert [name for name, _ in events] == ["state", "log", "record"]
    assert final is not None
    assert (final.status, final.error_kind) == (Status.APPLIED_STATE_ERROR, ErrorKind.STATE)
    found = _facts(store, run_id, ws_id)
    assert found["lock"] is not None and found["lock"].run_id == run_id  # seed O5
    assert "could not store the state terraform wrote" in found["log"]
    assert found["outbox"][-1] == "run:errored"


async def test_an_interrupted_apply_keeps_its_partial_state_before_anything_else(
    config: Config, store: WatchedStore, events: list[Event], run_dir: Path
) -> None:
    run_id, ws_id = store.run_sync(_applying_run)
    rt = Runtime(config, store, {"demo": ws_id})
    ending = _ending(store, events, run_dir, run_id, ws_id)

    outcome = Outcome.failed(ErrorKind.INTERRUPTED, "the daemon stopped during stage applying")
    final = await finish_run(rt, ending, outcome, Keeper(events, store))

    assert events[0] == (
        "state",
        {"dir": True, "terminal": False, "log_stored": False, "kind": "partial"},
    )
    assert final is not None and final.status is Status.FAILED
    assert _facts(store, run_id, ws_id)["lock"] is None


async def test_a_run_that_never_applied_skips_the_state_and_still_does_every_other_step(
    config: Config, store: WatchedStore, events: list[Event], run_dir: Path
) -> None:
    run_id, ws_id = store.run_sync(_applying_run)
    rt = Runtime(config, store, {"demo": ws_id})
    ending = _ending(store, events, run_dir, run_id, ws_id)
    ending.apply_started = False

    outcome = Outcome(Status.CANCELLED, error_message="cancelled in stage restoring_plan")
    final = await finish_run(rt, ending, outcome, Keeper(events, store))

    assert [name for name, _ in events] == ["log", "record"]
    assert final is not None and final.status is Status.CANCELLED
    found = _facts(store, run_id, ws_id)
    assert found["lock"] is None and found["outbox"][-1] == "run:cancelled"


# ---- storage faults (docs/architecture.md §10) -----------------------------------------------


async def _until(condition: Callable[[], bool], within: float = 30) -> None:
    with trio.fail_after(within):
        while not condition():
            await trio.sleep(0.05)


async def test_storage_down_keeps_the_run_unfinished_with_its_directory_and_lock_until_it_returns(
    config: Config, store: WatchedStore, events: list[Event], run_dir: Path
) -> None:
    run_id, ws_id = store.run_sync(_applying_run)
    rt = Runtime(config, store, {"demo": ws_id})
    ending = _ending(store, events, run_dir, run_id, ws_id)
    ending.log.write(b"Apply complete! Resources: 1 added, 0 changed, 0 destroyed.\n")
    finals: list[Run | None] = []
    fault = ReadOnlyDatabase(config.daemon.data_dir / "tfward.db")

    async def finish() -> None:
        finals.append(await finish_run(rt, ending, Outcome(Status.APPLIED), Keeper(events, store)))

    async with trio.open_nursery() as nursery:
        with fault:
            nursery.start_soon(finish)
            await _until(lambda: store.health.failing)
            await trio.sleep(1.0)  # several attempts, all refused
            assert not finals and run_dir.exists()
            found = _facts(store, run_id, ws_id)  # reads still answer
            assert not found["run"].status.is_terminal
            assert found["lock"] is not None and found["lock"].run_id == run_id
            assert [name for name, _ in events] == ["state"]
    assert finals and finals[0] is not None and finals[0].status is Status.APPLIED
    assert [name for name, _ in events] == ["state", "log", "record"]
    assert not run_dir.exists() and not store.health.failing
    found = _facts(store, run_id, ws_id)
    assert found["lock"] is None and found["outbox"][-1] == "run:completed"
    assert "Apply complete!" in found["log"] and "run finished: applied" in found["log"]


async def test_a_daemon_that_gives_up_waiting_leaves_the_run_to_recovery_with_directory_and_lock(
    config: Config, store: WatchedStore, events: list[Event], run_dir: Path
) -> None:
    run_id, ws_id = store.run_sync(_applying_run)
    rt = Runtime(config, store, {"demo": ws_id})
    ending = _ending(store, events, run_dir, run_id, ws_id)
    outcome = Outcome.failed(ErrorKind.INTERRUPTED, "the daemon stopped during stage applying")
    finals: list[Run | None] = []

    async def finish() -> None:
        finals.append(await finish_run(rt, ending, outcome, Keeper(events, store)))

    with ReadOnlyDatabase(config.daemon.data_dir / "tfward.db"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(finish)
            await _until(lambda: store.health.failing)
            rt.give_up.set()  # a hard stop, or the end of the shutdown's grace
    assert finals == [None]
    assert run_dir.exists()
    found = _facts(store, run_id, ws_id)
    assert not found["run"].status.is_terminal
    assert found["lock"] is not None and found["lock"].run_id == run_id


async def test_a_daemon_that_lost_the_workspace_writes_nothing_and_keeps_the_directory(
    config: Config, store: WatchedStore, events: list[Event], run_dir: Path
) -> None:
    """Fencing (docs/architecture.md §15): another daemon took the workspace over (epoch 2);
    the funnel of the old owner's run (fenced at epoch 1) stops at its first write."""
    run_id, ws_id = store.run_sync(_applying_run)

    def taken_over(conn: Connection) -> None:
        conn.execute(
            insert(workspace_leases).values(
                workspace_id=ws_id, owner="other", epoch=2, expires_at=now(), acquired_at=now()
            )
        )

    store.run_sync(taken_over)
    before = _facts(store, run_id, ws_id)
    rt = Runtime(config, store, {"demo": ws_id})
    ending = _ending(store, events, run_dir, run_id, ws_id)
    ending.log.write(b"Apply complete! Resources: 1 added, 0 changed, 0 destroyed.\n")

    with fenced(Fence(ws_id, "me", 1)):
        final = await finish_run(rt, ending, Outcome(Status.APPLIED), Keeper(events, store))

    assert final is None and run_dir.is_dir()  # the new owner's recovery reads it
    assert _facts(store, run_id, ws_id) == before
    assert [name for name, _ in events if name == "record"] == []
