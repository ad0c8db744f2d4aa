"""Runs through the daemon with real terraform and the demo provider, end to end over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import trio
from harness import (
    demo_workspace,
    facts,
    running_daemon,
    state_addresses,
    stray_processes,
    write_config,
)


async def test_plan_and_apply_waits_for_confirm_then_applies_the_plan(tmp_path: Path) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=2)])
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo", operation="plan_and_apply", message="first")
        run = await api.wait(run["id"], "apply_pending")
        assert run["resource_changes"] == {"add": 2, "change": 0, "destroy": 0}
        assert run["actions"] == ["confirm", "discard"]
        ws = await api.workspace("demo")
        assert ws["lock"]["run_id"] == run["id"]
        plan = (await api.http.get(f"/api/v1/runs/{run['id']}/plan")).json()
        planned = sorted(rc["address"] for rc in plan["resource_changes"])
        assert (await api.action(run["id"], "confirm")).status_code == 202
        run = await api.wait(run["id"], "applied")
        found = await facts(daemon, run["id"])
        assert state_addresses(daemon, found["states"][0].id) == planned
        assert found["lock"] is None and not found["dir_exists"]
        assert found["triggers"][-1] == "run:completed"
        assert len(list((tmp_path / "demo-store").iterdir())) == 2


async def test_a_second_confirm_never_applies_twice(tmp_path: Path) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1)])
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo")
        await api.wait(run["id"], "apply_pending")
        first, second = (
            await api.action(run["id"], "confirm"),
            await api.action(run["id"], "confirm"),
        )
        assert (first.status_code, second.status_code) == (202, 202)
        await api.wait(run["id"], "applied")
        assert (await api.action(run["id"], "confirm")).status_code == 409
        calls = [
            json.loads(line) for line in (tmp_path / "demo-calls.jsonl").read_text().splitlines()
        ]
        assert [c["op"] for c in calls].count("create") == 1


async def test_auto_apply_applies_without_confirmation(tmp_path: Path) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=2, auto_apply=True)])
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo")
        run = await api.wait(run["id"], "applied")
        assert run["confirmed_by"] == "auto-apply"
        assert (await api.state_versions("demo"))[0]["resource_count"] == 2


async def test_no_changes_plan_finishes_without_locking(tmp_path: Path) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1, auto_apply=True)])
    async with running_daemon(config) as (daemon, api):
        await api.wait((await api.create_run("demo"))["id"], "applied")
        run = await api.wait((await api.create_run("demo"))["id"], "planned_and_finished")
        assert run["has_changes"] is False
        found = await facts(daemon, run["id"])
        assert found["lock"] is None and not found["dir_exists"]
        assert "run:needs_attention" not in found["triggers"]


async def test_discard_releases_the_lock_and_removes_the_directory(tmp_path: Path) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1)])
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo")
        await api.wait(run["id"], "apply_pending")
        assert (await api.action(run["id"], "discard", comment="not today")).status_code == 202
        run = await api.wait(run["id"], "discarded")
        found = await facts(daemon, run["id"])
        assert found["lock"] is None and not found["dir_exists"]
        assert found["run"].error_message == "not today"
        assert found["triggers"][-1] == "run:completed"
        assert not list((tmp_path / "demo-store").iterdir())


async def test_speculative_plan_neither_waits_for_nor_takes_the_lock(tmp_path: Path) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1)])
    async with running_daemon(config) as (daemon, api):
        holder = await api.create_run("demo")
        await api.wait(holder["id"], "apply_pending")
        queued = await api.create_run("demo")
        spec = await api.wait(
            (await api.create_run("demo", operation="plan"))["id"], "planned_and_finished"
        )
        assert spec["has_changes"] is True and spec["is_speculative"]
        assert (await api.run(queued["id"]))["status"] == "pending"
        assert (await api.workspace("demo"))["lock"]["run_id"] == holder["id"]


async def test_runs_of_a_workspace_start_in_fifo_order(tmp_path: Path) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1, auto_apply=True)])
    async with running_daemon(config) as (daemon, api):
        ids = [(await api.create_run("demo", message=str(i)))["id"] for i in range(3)]
        finals = [await api.wait(i, "applied", "planned_and_finished") for i in ids]
        started = [f["timestamps"]["started_at"] for f in finals]
        finished = [f["timestamps"]["finished_at"] for f in finals]
        assert started == sorted(started)
        assert all(finished[i] <= started[i + 1] for i in range(2))


async def test_destroy_removes_everything_and_records_a_new_state(tmp_path: Path) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=2, auto_apply=True)])
    async with running_daemon(config) as (daemon, api):
        await api.wait((await api.create_run("demo"))["id"], "applied")
        run = await api.wait((await api.create_run("demo", operation="destroy"))["id"], "applied")
        assert run["resource_changes"] == {"add": 0, "change": 0, "destroy": 2}
        assert (await api.state_versions("demo"))[0]["resource_count"] == 0
        assert not list((tmp_path / "demo-store").iterdir())


async def test_targets_and_replace_limit_and_force_changes(tmp_path: Path) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=2, auto_apply=True)])
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo", targets=["demo_thing.this[0]"])
        run = await api.wait(run["id"], "applied")
        assert run["resource_changes"]["add"] == 1
        sv = (await api.state_versions("demo"))[0]
        assert state_addresses(daemon, sv["id"]) == ["demo_thing.this[0]"]
        run = await api.wait(
            (await api.create_run("demo", replace=["demo_thing.this[0]"]))["id"], "applied"
        )
        assert run["resource_changes"] == {"add": 2, "change": 0, "destroy": 1}


async def test_state_versions_can_be_downloaded_and_rolled_back(tmp_path: Path) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1, auto_apply=True)])
    async with running_daemon(config) as (daemon, api):
        await api.wait((await api.create_run("demo"))["id"], "applied")
        await api.wait((await api.create_run("demo", operation="destroy"))["id"], "applied")
        newest, first = (
            (await api.state_versions("demo"))[0],
            (await api.state_versions("demo"))[-1],
        )
        download = await api.http.get(f"/api/v1/state-versions/{first['id']}/download")
        assert json.loads(download.content)["serial"] == first["serial"]
        response = await api.http.post(
            f"/api/v1/workspaces/demo/state-versions/{first['id']}/rollback"
        )
        assert response.status_code == 201, response.text
        rolled = response.json()["data"]
        assert rolled["kind"] == "rollback" and rolled["rolled_back_from"] == first["id"]
        assert rolled["serial"] == newest["serial"] + 1
        assert rolled["resource_count"] == first["resource_count"] == 1


async def test_configuration_versions_are_content_addressed_and_diffable(tmp_path: Path) -> None:
    ws = demo_workspace(tmp_path, things=1)
    config = write_config(tmp_path, [ws])
    async with running_daemon(config) as (daemon, api):
        for _ in range(2):
            await api.wait(
                (await api.create_run("demo", operation="plan"))["id"], "planned_and_finished"
            )
        (Path(ws["source"]) / "extra.tf").write_text('output "extra" { value = 1 }\n')
        await api.wait(
            (await api.create_run("demo", operation="plan"))["id"], "planned_and_finished"
        )
        versions = (await api.http.get("/api/v1/workspaces/demo/configuration-versions")).json()[
            "data"
        ]
        assert len(versions) == 2
        diff = (
            await api.http.get(
                f"/api/v1/configuration-versions/{versions[1]['id']}/diff/{versions[0]['id']}"
            )
        ).json()
        assert [(f["path"], f["status"]) for f in diff["data"]["files"]] == [("extra.tf", "added")]


async def test_cancelling_a_slow_apply_keeps_the_finished_resources_and_cleans_up(
    tmp_path: Path,
) -> None:
    slow = 'resource "demo_thing" "slow" {\n  name  = "slow"\n  delay = 120\n}\n'
    config = write_config(
        tmp_path,
        [demo_workspace(tmp_path, things=2, extra_tf=slow, auto_apply=True)],
        terraform={"cancel_grace": "3s"},
    )
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo")
        await api.wait_stage(run["id"], "applying")
        calls = tmp_path / "demo-calls.jsonl"
        with trio.fail_after(30):
            while not calls.exists() or calls.read_text().count('"create"') < 2:
                await trio.sleep(0.05)
        assert (await api.action(run["id"], "cancel")).status_code == 202
        run = await api.wait(run["id"], "cancelled")
        found = await facts(daemon, run["id"])
        assert found["states"][0].kind == "partial"
        assert state_addresses(daemon, found["states"][0].id) == [
            "demo_thing.this[0]",
            "demo_thing.this[1]",
        ]
        assert found["lock"] is None and not found["dir_exists"]
        assert found["triggers"][-1] == "run:cancelled"
        assert "run finished: cancelled" in found["log"]
        assert stray_processes(str(tmp_path)) == []


async def test_a_failing_resource_fails_the_run_with_error_kind_apply(tmp_path: Path) -> None:
    failing = 'resource "demo_thing" "bad" {\n  name = "bad"\n  fail = true\n}\n'
    config = write_config(
        tmp_path, [demo_workspace(tmp_path, things=1, extra_tf=failing, auto_apply=True)]
    )
    async with running_daemon(config) as (daemon, api):
        run = await api.wait((await api.create_run("demo"))["id"], "failed")
        assert run["error_kind"] == "apply" and "failing on purpose" in run["error_message"]
        found = await facts(daemon, run["id"])
        assert found["states"][0].kind == "partial"
        assert state_addresses(daemon, found["states"][0].id) == ["demo_thing.this[0]"]
        assert found["lock"] is None and not found["dir_exists"]
        assert found["triggers"][-1] == "run:errored"
        assert "failing on purpose" in found["log"]
        assert stray_processes(str(tmp_path)) == []
