"""Crash safety (docs/architecture.md §2, §5): kill -9 and restart (also with the disk filled while
the daemon is down, and before an apply changed the state), SIGTERM during an apply, a plan lost
while the daemon was down, a plan terraform calls stale, and config reload."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import trio
from harness import (
    FAKE_TERRAFORM,
    Api,
    DaemonProcess,
    chained_things,
    demo_workspace,
    open_store,
    running_daemon,
    write_config,
)
from sqlalchemy import delete, select
from storagefaults import FullDisk, HeldWriteLock, tmpfs

from tfward.store import runs as run_store
from tfward.store.tables import outbox, plan_artifacts, runs


def created(calls: Path) -> list[str]:
    if not calls.exists():
        return []
    return [
        c["name"]
        for c in map(json.loads, calls.read_text().splitlines())
        if c["op"] == "create" and c.get("ok", True)
    ]


async def addresses(api: Api, sv_id: str) -> set[str]:
    doc = json.loads((await api.http.get(f"/api/v1/state-versions/{sv_id}/download")).content)
    return {f"{r['type']}.{r['name']}" for r in doc["resources"] for _ in r["instances"]}


async def test_kill_9_during_an_apply_keeps_every_created_resource(tmp_path: Path) -> None:
    # Killed after 3 of 10 things: the 7 left take terraform 10 s, time enough for the second
    # daemon to start and stop it even on a loaded machine (else terraform finishes: `applied`).
    ws = demo_workspace(tmp_path, things=0, extra_tf=chained_things(10, 1.5), auto_apply=True)
    config = write_config(tmp_path, [ws], terraform={"cancel_grace": "30s"})
    calls = tmp_path / "demo-calls.jsonl"
    async with trio.open_nursery() as nursery:
        first = DaemonProcess(config)
        await first.start(nursery)
        async with first.client() as http:
            run_id = (await Api(http).create_run("demo"))["id"]
            with trio.fail_after(60):
                while len(created(calls)) < 3:
                    await trio.sleep(0.1)
        first.signal(signal.SIGKILL)
        await first.wait()

        second = DaemonProcess(config)
        await second.start(nursery)
        async with second.client() as http:
            api = Api(http)
            run = await api.run(run_id)
            assert (run["status"], run["error_kind"]) == ("failed", "interrupted")
            assert "was stored" in run["error_message"]
            report = (await http.get("/api/v1/recovery")).json()["data"]
            assert run_id in report["interrupted"]
            # Nothing reviewed its plan: its JSON is made after the run, the recovered one too.
            assert len((await api.plan_json(run_id))["resource_changes"]) == 10
            latest = (await api.state_versions("demo"))[0]
            in_state = await addresses(api, latest["id"])
            in_store = {f"demo_thing.chain{name.split('-')[1]}" for name in created(calls)}
            assert latest["kind"] == "partial" and in_state == in_store and len(in_state) >= 3
            # What terraform printed after the kill reached the log too, once each.
            log = await api.logs(run_id)
            for address in in_state:
                assert log.count(f"{address}: Creation complete") == 1, log
            assert (await api.workspace("demo"))["lock"] is None
            plan = await api.wait(
                (await api.create_run("demo", operation="plan"))["id"], "planned_and_finished"
            )
            assert plan["resource_changes"]["add"] == 10 - len(in_state)
        second.signal(signal.SIGTERM)
        assert await second.wait() == 0


async def test_an_apply_stopped_before_it_changed_the_state_says_it_left_nothing_newer(
    tmp_path: Path,
) -> None:
    # The fake: a hanging apply (killed mid-apply, real terraform has written state already).
    script = tmp_path / "fake.json"
    script.write_text("{}")
    ws = demo_workspace(tmp_path, things=1, auto_apply=True)
    ws["env"] = {**ws["env"], "FAKE_TF_SCRIPT": str(script)}
    config = write_config(tmp_path, [ws], terraform={"binary": str(FAKE_TERRAFORM)})
    async with trio.open_nursery() as nursery:
        first = DaemonProcess(config)
        await first.start(nursery)
        async with first.client() as http:
            api = Api(http)
            await api.wait((await api.create_run("demo"))["id"], "applied")
            script.write_text(json.dumps({"apply": {"sleep": 60}}))
            run_id = (await api.create_run("demo"))["id"]
            await api.wait_stage(run_id, "applying")
        first.signal(signal.SIGKILL)
        await first.wait()

        second = DaemonProcess(config)
        await second.start(nursery)
        async with second.client() as http:
            run = await Api(http).run(run_id)
            assert (run["status"], run["error_kind"]) == ("failed", "interrupted")
            # The run directory held only the state the apply started from: nothing was stored.
            assert run["error_message"].endswith(
                "; terraform left no state newer than the workspace's"
            ), run["error_message"]
            assert len(await Api(http).state_versions("demo")) == 1
        second.signal(signal.SIGTERM)
        assert await second.wait() == 0


async def test_sigterm_during_an_apply_lets_it_finish_and_exits_0(tmp_path: Path) -> None:
    ws = demo_workspace(tmp_path, things=0, extra_tf=chained_things(3, 1.5), auto_apply=True)
    config = write_config(tmp_path, [ws])
    async with trio.open_nursery() as nursery:
        daemon = DaemonProcess(config)
        await daemon.start(nursery)
        async with daemon.client() as http:
            api = Api(http)
            run_id = (await api.create_run("demo"))["id"]
            await api.wait_stage(run_id, "applying")
            daemon.signal(signal.SIGTERM)
            with trio.fail_after(10):
                while (await http.post("/api/v1/workspaces/demo/runs", json={})).status_code != 503:
                    await trio.sleep(0.05)
        assert await daemon.wait() == 0
    store = open_store(config)
    run = store.run_sync(lambda c: run_store.get_run(c, run_id))
    assert str(run.status) == "applied"
    assert len(created(tmp_path / "demo-calls.jsonl")) == 3
    store.close()


async def test_a_plan_lost_while_the_daemon_was_down_is_planned_again(tmp_path: Path) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1)])
    async with running_daemon(config) as (daemon, api):
        run_id = (await api.create_run("demo"))["id"]
        await api.wait(run_id, "apply_pending")
    store = open_store(config)
    store.run_sync(
        lambda c: c.execute(delete(plan_artifacts).where(plan_artifacts.c.run_id == run_id))
    )
    store.close()
    async with running_daemon(config) as (daemon, api):
        report = (await api.http.get("/api/v1/recovery")).json()["data"]
        assert run_id in report["requeued"]
        run = await api.wait(run_id, "apply_pending")
        assert any("saved plan was lost" in w for w in run["warnings"])
        assert "saved plan was lost" in await api.logs(run_id)
        assert (await api.action(run_id, "confirm")).status_code == 202
        await api.wait(run_id, "applied")
        rows = daemon.store.run_sync(
            lambda c: [
                r.payload
                for r in c.execute(select(outbox.c.payload).where(outbox.c.run_id == run_id))
            ]
        )
        attention = [r.get("message", "") for r in rows if r["trigger"] == "run:needs_attention"]
        # The first plan, the notification saying why it is planned again, the second plan.
        assert len(attention) == 3 and "saved plan was lost" in attention[1]


async def test_a_plan_terraform_calls_stale_is_planned_again_not_failed(tmp_path: Path) -> None:
    script = tmp_path / "fake.json"
    script.write_text(json.dumps({"apply": {"stale_once": str(tmp_path / "stale-said")}}))
    ws = demo_workspace(tmp_path, things=1)
    ws["env"] = {**ws["env"], "FAKE_TF_SCRIPT": str(script)}
    config = write_config(tmp_path, [ws], terraform={"binary": str(FAKE_TERRAFORM)})
    async with running_daemon(config) as (daemon, api):
        run_id = (await api.create_run("demo"))["id"]
        await api.wait(run_id, "apply_pending")
        assert (await api.action(run_id, "confirm")).status_code == 202
        with trio.fail_after(30):
            while (run := await api.run(run_id))["confirmed_by"] is not None or run[
                "status"
            ] != "apply_pending":
                assert not run["timestamps"]["finished_at"], (
                    run["status"],
                    run["error_kind"],
                    run["error_message"],
                )
                await trio.sleep(0.05)
        assert any("stale" in w for w in run["warnings"])
        assert (await api.action(run_id, "confirm")).status_code == 202
        await api.wait(run_id, "applied")


async def test_reload_adds_and_retires_workspaces_and_keeps_a_bad_config_out(
    tmp_path: Path,
) -> None:
    a, b = demo_workspace(tmp_path, "a", things=1), demo_workspace(tmp_path, "b", things=1)
    config = write_config(tmp_path, [a, b])
    async with running_daemon(config) as (daemon, api):
        held = (await api.create_run("b"))["id"]
        queued = (await api.create_run("b"))["id"]
        await api.wait(held, "apply_pending")
        good = config.path.read_text()
        config.path.write_text(good + "\n[[workspace]]\nname = 3\n")
        assert await daemon.reload() is False
        assert [w.name for w in daemon.config.workspaces] == ["a", "b"]
        c = demo_workspace(tmp_path, "c", things=1)
        write_config(tmp_path, [a, c], daemon={"database_url": config.daemon.database_url})
        assert await daemon.reload() is True
        run = await api.wait(queued, "cancelled")
        assert "removed from the config" in run["error_message"]
        assert (await api.http.post("/api/v1/workspaces/b/runs", json={})).status_code == 404
        assert (await api.run(held))["status"] == "apply_pending"  # the active run finishes first
        assert (await api.action(held, "discard")).status_code == 202
        await api.wait(held, "discarded")
        await api.wait((await api.create_run("c", operation="plan"))["id"], "planned_and_finished")


def apply_exit_codes(run_dir: Path) -> list[str]:
    """What the shim wrote for each `terraform apply` of the run that has exited."""
    texts = [p.read_text() for p in run_dir.glob(".tfward/*-apply.exit")]
    return [text.split()[0] for text in texts if text.strip()]


async def test_a_kill_after_terraform_applied_but_before_the_state_was_saved_ends_applied(
    tmp_path: Path,
) -> None:
    """Terraform printed "Apply complete!" and exited 0; the daemon, held up by another
    process's write lock, had not reached saving_state when it was killed. Recovery reads the
    exit code the shim wrote: the run is applied, its state stored as `apply`."""
    ws = demo_workspace(tmp_path, things=0, extra_tf=chained_things(3, 0.5), auto_apply=True)
    # SQLite's write lock holds the daemon up: SQLite whatever TFWARD_TEST_DATABASE says.
    db = tmp_path / "data" / "tfward.db"
    config = write_config(tmp_path, [ws], daemon={"database_url": f"sqlite:///{db}"})
    async with trio.open_nursery() as nursery:
        first = DaemonProcess(config)
        await first.start(nursery)
        async with first.client() as http:
            api = Api(http)
            run_id = (await api.create_run("demo"))["id"]
            await api.wait_stage(run_id, "applying")
            run_dir = config.daemon.data_dir / "runs" / run_id
            with HeldWriteLock(db):
                with trio.fail_after(60):
                    while apply_exit_codes(run_dir) != ["0"]:
                        await trio.sleep(0.1)
                assert (await api.run(run_id))["stage"] == "applying"  # not saving_state yet
                first.signal(signal.SIGKILL)
                await first.wait()
        second = DaemonProcess(config)
        await second.start(nursery)
        async with second.client() as http:
            api = Api(http)
            run = await api.run(run_id)
            assert run["status"] == "applied", (run["error_kind"], run["error_message"])
            latest = (await api.state_versions("demo"))[0]
            assert (latest["kind"], latest["run_id"]) == ("apply", run_id)
            assert latest["resource_count"] == 3
            assert (await api.workspace("demo"))["lock"] is None
            assert len((await api.plan_json(run_id))["resource_changes"]) == 3  # after the run
            rows = (await http.get("/api/v1/outbox", params={"run_id": run_id})).json()["data"]
            triggers = [r["payload"]["trigger"] for r in rows if r["kind"] == "notify"]
            assert "run:completed" in triggers and "run:errored" not in triggers
            assert "Apply complete!" in await api.logs(run_id)
        second.signal(signal.SIGTERM)
        assert await second.wait() == 0


async def test_a_disk_filled_while_the_daemon_is_down_loses_no_resource_of_the_apply(
    tmp_path: Path,
) -> None:
    """The chaos soak's lost resource: kill -9 during an apply, then the data dir's disk fills
    while no daemon is there to free its reserve. Terraform's first state write (the backup of
    the old state) fails, so it halts after its first resource and prints the state under the
    serial it read: the stored one. Recovery stores that state with the next serial."""
    with tmpfs(tmp_path / "data", 30):
        ws = demo_workspace(tmp_path, things=1, auto_apply=True)
        config = write_config(tmp_path, [ws], daemon={"disk_reserve_mb": 4})
        async with trio.open_nursery() as nursery:
            first = DaemonProcess(config)
            await first.start(nursery)
            async with first.client() as http:
                api = Api(http)
                await api.wait((await api.create_run("demo"))["id"], "applied")
                before = (await api.state_versions("demo"))[0]
                (Path(ws["source"]) / "extra.tf").write_text(chained_things(2, 3.0))
                run_id = (await api.create_run("demo"))["id"]
                await api.wait_stage(run_id, "applying")
                with trio.fail_after(60):  # chain0 takes 3 s: the kill lands before its end
                    while "demo_thing.chain0: Creating..." not in await api.logs(run_id):
                        await trio.sleep(0.05)
            first.signal(signal.SIGKILL)
            await first.wait()
            run_dir = config.daemon.data_dir / "runs" / run_id
            with FullDisk(config.daemon.data_dir):
                with trio.fail_after(60):
                    while not apply_exit_codes(run_dir):
                        await trio.sleep(0.1)
            assert created(tmp_path / "demo-calls.jsonl") == ["demo-0", "chain-0"]

            second = DaemonProcess(config)
            await second.start(nursery)
            async with second.client() as http:
                api = Api(http)
                run = await api.run(run_id)
                assert (run["status"], run["error_kind"]) == ("failed", "interrupted")
                assert "Failed to persist state to backend" in await api.logs(run_id)
                latest = (await api.state_versions("demo"))[0]
                assert (latest["kind"], latest["run_id"]) == ("partial", run_id)
                assert latest["serial"] == before["serial"] + 1
                in_state = await addresses(api, latest["id"])
                assert in_state == {"demo_thing.this", "demo_thing.chain0"}
                assert (await api.workspace("demo"))["lock"] is None
            second.signal(signal.SIGTERM)
            assert await second.wait() == 0


def children(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(proc.name))
            except (OSError, IndexError):
                continue
    return found


async def test_killing_terraforms_outer_process_lets_the_inner_one_record_every_resource(
    tmp_path: Path,
) -> None:
    """kill -9 of terraform's panicwrap parent: the group is stopped like a cancel (SIGINT,
    grace, SIGKILL), so the inner terraform finishes the create in flight and writes it into
    its state; no resource is left outside the stored state."""
    ws = demo_workspace(tmp_path, things=0, extra_tf=chained_things(6, 1.0), auto_apply=True)
    config = write_config(tmp_path, [ws], terraform={"cancel_grace": "30s"})
    calls = tmp_path / "demo-calls.jsonl"
    async with running_daemon(config) as (daemon, api):
        run_id = (await api.create_run("demo"))["id"]
        with trio.fail_after(60):
            while len(created(calls)) < 2:
                await trio.sleep(0.1)
        shim = daemon.store.run_sync(
            lambda c: c.execute(select(runs.c.pid).where(runs.c.id == run_id)).scalar_one()
        )
        (outer,) = [
            p for p in children(shim) if b"terraform" in Path(f"/proc/{p}/cmdline").read_bytes()
        ]
        os.kill(outer, signal.SIGKILL)
        run = await api.wait(run_id, "failed", timeout=90)
        assert run["error_kind"] == "apply"
        assert "Interrupt received" in await api.logs(run_id)  # stopped, not killed outright
        latest = (await api.state_versions("demo"))[0]
        in_state = await addresses(api, latest["id"])
    in_store = {f"demo_thing.chain{name.split('-')[1]}" for name in created(calls)}
    assert in_state == in_store and len(in_state) >= 2, (in_state, in_store)
