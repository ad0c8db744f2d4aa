"""Several daemons on one PostgreSQL database (docs/architecture.md §15; issue 18), as real
`tfward serve` processes with real terraform: every workspace has exactly one owner and runs
submitted to any daemon reach `applied`; `kill -9` of an owner mid-apply moves its workspaces
to the survivors within 30 s, its runs end as recovery or `owner_lost` says, and new runs
succeed; a daemon paused (SIGSTOP) for longer than its lease writes nothing once it runs again,
and its terraform is gone."""

from __future__ import annotations

import signal
from collections import Counter
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import trio
from fleet import Fleet, created, kill_processes_of, wait_run
from harness import Api, chained_things, demo_workspace, stray_processes
from sqlalchemy import create_engine, func, select

from tfward.store.tables import outbox, run_log_chunks, runs, state_versions, workspace_locks


def stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# Short leases, so the tests that do not measure takeover do not wait for the defaults.
FAST = {"lease_ttl": "10s", "lease_renew": "1s", "self_fence_margin": "3s"}


async def balanced(fleet: Fleet, i: int, nodes: set[str], within: float = 90) -> dict[str, str]:
    """Until the workspaces are spread evenly over `nodes` (each owned once); the owners."""
    share = -(-len(fleet.names) // len(nodes))
    with trio.fail_after(within):
        while True:
            owners = await fleet.until_owned(i, nodes, within)
            counts = Counter(owners.values())
            if set(counts) == nodes and max(counts.values()) <= share:
                return owners
            await trio.sleep(0.2)


async def test_three_daemons_share_twenty_workspaces_and_run_what_any_of_them_is_given(
    tmp_path: Path,
) -> None:
    wss = [demo_workspace(tmp_path, f"w{i:02d}", things=1, auto_apply=True) for i in range(20)]
    fleet = Fleet(tmp_path, wss, 3, daemon=FAST)
    nodes = {"node0", "node1", "node2"}
    async with fleet.running() as nursery, AsyncExitStack() as stack:
        await fleet.start(nursery)
        apis = [Api(await stack.enter_async_context(p.client())) for p in fleet.procs]
        owners = await balanced(fleet, 0, nodes)
        assert await fleet.owners(2) == owners  # any daemon answers alike
        submitted = {
            name: (await apis[i % 3].create_run(name))["id"] for i, name in enumerate(fleet.names)
        }
        for i, (name, run_id) in enumerate(submitted.items()):
            done = await wait_run(apis[(i + 1) % 3], run_id, "applied", timeout=240)
            assert done["error_kind"] is None, done
            view = await apis[(i + 2) % 3].workspace(name)
            assert view["owner"] == owners[name] and view["lock"] is None
            assert created(tmp_path / f"{name}-calls.jsonl") == [f"{name}-0"]  # once
        seen = await fleet.cluster(1)
        assert seen["node_id"] == "node1" and seen["unowned_workspaces"] == []
        assert {d["node_id"] for d in seen["daemons"] if d["live"]} == nodes
        await fleet.stop_all()


async def test_kill_9_of_an_owner_mid_apply_moves_its_workspaces_and_ends_its_runs(
    tmp_path: Path,
) -> None:
    """Default lease timings (15 s / 5 s): the survivors own everything within 30 s. Of the
    dead daemon's two applies, one's directory stays reachable (same host): recovery stores
    its partial state; the other's host is "lost" (terraform killed, directory moved away):
    the run ends owner_lost and the workspace stays locked until an admin unlocks it."""
    chain = chained_things(30, 1.0)  # still applying when the survivors take over
    wss = [demo_workspace(tmp_path, f"w{i}", things=0, extra_tf=chain, auto_apply=True)
           for i in range(6)]  # fmt: skip
    fleet = Fleet(tmp_path, wss, 3, daemon={"lease_renew": "2s"})
    async with fleet.running() as nursery, AsyncExitStack() as stack:
        await fleet.start(nursery)
        apis = [Api(await stack.enter_async_context(p.client())) for p in fleet.procs]
        owners = await balanced(fleet, 0, {"node0", "node1", "node2"})
        kept, lost = sorted(name for name, node in owners.items() if node == "node1")
        runs = {name: (await apis[0].create_run(name))["id"] for name in (kept, lost)}
        with trio.fail_after(60):
            while min(len(created(tmp_path / f"{n}-calls.jsonl")) for n in runs) < 2:
                await trio.sleep(0.1)

        fleet.procs[1].signal(signal.SIGKILL)
        await fleet.procs[1].wait()
        killed_at = trio.current_time()
        assert kill_processes_of(runs[lost]) > 0  # its host is gone: terraform with it
        run_dir = fleet.configs[1].daemon.data_dir / "runs" / runs[lost]
        run_dir.rename(tmp_path / "unreachable")
        lost_calls = tmp_path / f"{lost}-calls.jsonl"
        before_unlock = created(lost_calls)
        await fleet.until_owned(0, {"node0", "node2"}, within=30)
        assert trio.current_time() - killed_at < 30

        interrupted = await wait_run(apis[2], runs[kept], "failed")
        assert interrupted["error_kind"] == "interrupted", interrupted
        latest = (await apis[0].state_versions(kept))[0]
        assert latest["kind"] == "partial" and latest["run_id"] == runs[kept]
        assert (await apis[0].workspace(kept))["lock"] is None

        ended = await wait_run(apis[0], runs[lost], "failed")
        assert ended["error_kind"] == "owner_lost", ended
        lock = (await apis[2].workspace(lost))["lock"]
        assert lock is not None and lock["run_id"] == runs[lost]
        assert "may lack resources" in lock["reason"] and "force-unlock" in lock["reason"]
        assert ended["error_message"] == lock["reason"]
        assert created(lost_calls) == before_unlock  # nobody applied the lost run again
        notes = await apis[2].http.get(
            "/api/v1/outbox", params={"run_id": runs[lost], "kind": "notify"}
        )
        triggers = [row["payload"]["trigger"] for row in notes.json()["data"]]
        assert triggers[-1] == "run:errored", triggers  # the funnel told the destinations
        unlocked = await apis[2].http.post(
            f"/api/v1/workspaces/{lost}/actions/force-unlock", json={"reason": "checked"}
        )
        assert unlocked.status_code == 200, unlocked.text

        for name in (kept, lost):
            after = (await apis[2].create_run(name))["id"]
            assert (await wait_run(apis[0], after, "applied", timeout=180))["error_kind"] is None
        # The partial state kept what the interrupted apply created: nothing created twice.
        # (The lost run's things, never stored, were created again: the unlock's warning.)
        names = created(tmp_path / f"{kept}-calls.jsonl")
        assert sorted(names) == sorted(set(names)) and len(names) == 30
        await fleet.stop_all()


def snapshot(url: str, run_id: str, ws_id: str) -> dict[str, Any]:
    """Every row a daemon driving `run_id` would write: the run, its log, the workspace's
    state versions and lock, the run's outbox rows."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                "run": conn.execute(select(runs).where(runs.c.id == run_id)).one()._asdict(),
                "log": tuple(conn.execute(
                    select(func.count(), func.max(run_log_chunks.c.seq)).where(
                        run_log_chunks.c.run_id == run_id
                    )
                    ).one()),
                "states": conn.execute(
                    select(state_versions.c.id).where(state_versions.c.workspace_id == ws_id)
                ).scalars().all(),
                "lock": conn.execute(
                    select(workspace_locks).where(workspace_locks.c.workspace_id == ws_id)
                ).all(),
                "outbox": sorted(
                    conn.execute(select(outbox.c.id).where(outbox.c.run_id == run_id)).scalars()
                ),
            }
    finally:
        engine.dispose()


async def test_a_daemon_paused_longer_than_its_lease_writes_nothing_after_it_resumes(
    tmp_path: Path,
) -> None:
    ws = demo_workspace(tmp_path, "w", things=0, extra_tf=chained_things(30, 1.0),
                        auto_apply=True)  # fmt: skip
    fleet = Fleet(tmp_path, [ws], 2, daemon=FAST)
    async with fleet.running() as nursery, AsyncExitStack() as stack:
        await fleet.start(nursery, 0)  # node0 owns the one workspace, node1 joins after
        await fleet.until_owned(0, {"node0"}, within=30)
        await fleet.start(nursery, 1)
        paused, survivor = [Api(await stack.enter_async_context(p.client())) for p in fleet.procs]
        run_id = (await survivor.create_run("w"))["id"]
        ws_id = (await survivor.workspace("w"))["id"]
        with trio.fail_after(60):
            while len(created(tmp_path / "w-calls.jsonl")) < 2:
                await trio.sleep(0.1)

        fleet.procs[0].signal(signal.SIGSTOP)
        try:
            await fleet.until_owned(1, {"node1"}, within=30)
            ended = await wait_run(survivor, run_id, "failed")
            assert ended["error_kind"] == "interrupted", ended
            with trio.fail_after(30):
                while stray_processes(run_id):
                    await trio.sleep(0.1)
            before = snapshot(fleet.url, run_id, ws_id)
        finally:
            fleet.procs[0].signal(signal.SIGCONT)
        resumed = stamp((await fleet.cluster(1))["now"])  # by the database's clock
        # The paused daemon runs again: it finds its lease gone (its fence refuses every
        # write of the run), stops the workspace's actor, and heartbeats again (a tick after
        # it resumed); then nothing of the run may have changed.
        with trio.fail_after(30):
            while b"lease lost" not in fleet.procs[0].output:
                await trio.sleep(0.1)
            while True:
                seen = await fleet.cluster(1)
                node0 = next(d for d in seen["daemons"] if d["node_id"] == "node0")
                if stamp(node0["heartbeat_at"]) > resumed:
                    break
                await trio.sleep(0.2)
        assert (await paused.workspace("w"))["owner"] == "node1"
        assert snapshot(fleet.url, run_id, ws_id) == before
        assert stray_processes(run_id) == []
        names = created(tmp_path / "w-calls.jsonl")
        assert sorted(names) == sorted(set(names))
        await fleet.stop_all()
