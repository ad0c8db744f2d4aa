"""`terraform show -json` beside the apply (tfward/actors/planjson.py, docs/architecture.md §3).

An auto-applied run that nothing reviews before its apply starts the apply while `show -json`
runs alongside; the plan JSON is stored when it finishes, or `plan_json_error` says why there is
none. A run whose plan something reads first — a person confirming, a run task or a hook at
`post_plan`/`pre_apply` — still fails when `show -json` fails (seed M1; the confirm and the
`post_plan` task cases are in test_planner.py).

The happy path runs real terraform; the failures need a `show -json` that fails or hangs on
demand: the fake terraform (`show.invalid_json`, `show.exit`, `show.sleep`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import trio
from fakeshow import FAKE, MESSAGES, commands, fake_show_workspace
from harness import Api, demo_workspace, facts, running_daemon, stray_processes, write_config

BESIDE = "terraform show -json"


async def test_an_auto_applied_run_nothing_reviews_applies_while_show_json_runs_beside_it(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=2, auto_apply=True)])
    async with running_daemon(config) as (daemon, api):
        run = await api.wait((await api.create_run("demo"))["id"], "applied")
        plan = (await api.http.get(f"/api/v1/runs/{run['id']}/plan")).json()
        log = (await facts(daemon, run["id"]))["log"]
    assert f"{BESIDE} " in log and "(beside)" in log
    # The counts are the plan JSON's once it is stored, and the JSON is there to review.
    assert run["resource_changes"] == {"add": 2, "change": 0, "destroy": 0}
    assert run["plan_json_error"] is None
    actions = [change["change"]["actions"] for change in plan["resource_changes"]]
    assert actions == [["create"], ["create"]]


@pytest.mark.parametrize(("failure", "reason"), [("invalid_json", "not_json"), ("exit_1", "exit")])
async def test_a_failed_show_json_beside_the_apply_is_recorded_on_the_run_not_failing_it(
    tmp_path: Path, failure: str, reason: str
) -> None:
    ws = fake_show_workspace(tmp_path, failure, auto_apply=True)
    config = write_config(tmp_path, [ws], terraform=FAKE)
    async with running_daemon(config) as (daemon, api):
        run = await api.wait((await api.create_run("demo"))["id"], "applied")
        plan = (await api.http.get(f"/api/v1/runs/{run['id']}/plan")).json()
        metrics = (await api.http.get("/metrics")).text
        found = await facts(daemon, run["id"])
    expected = MESSAGES[failure].removesuffix(": the plan cannot be reviewed")
    assert run["plan_json_error"] == expected
    assert run["error_message"] is None and plan is None
    # Terraform's `Plan:` line gave the counts; nothing replaced them.
    assert run["resource_changes"] == {"add": 1, "change": 0, "destroy": 0}
    assert f'tfward_plan_json_failures_total{{reason="{reason}"}} 1.0' in metrics
    assert f"{expected}; the run goes on without its plan JSON" in found["log"]
    assert sorted(commands(tmp_path)) == ["apply", "init", "plan", "show"]
    assert found["triggers"][-1] == "run:completed" and not found["dir_exists"]


async def test_a_run_cancelled_while_show_json_runs_beside_it_ends_through_the_funnel(
    tmp_path: Path,
) -> None:
    script = tmp_path / "fake-script.json"
    script.write_text(json.dumps({"show": {"sleep": 60}}))
    ws = demo_workspace(tmp_path, things=1, auto_apply=True)
    calls = tmp_path / "calls.jsonl"
    ws["env"] |= {"FAKE_TF_SCRIPT": str(script), "FAKE_TF_CALLS": str(calls)}
    config = write_config(tmp_path, [ws], terraform=FAKE)
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo")
        await _until_called(calls, "show")
        await _until_state_stored(api)  # the apply has finished; `show -json` still sleeps
        beside = [line.split(":", 1)[0] for line in stray_processes(str(tmp_path))]
        niceness = {os.getpriority(os.PRIO_PROCESS, int(pid)) for pid in beside}
        answer = await api.action(run["id"], "cancel")
        assert answer.status_code in (200, 202), answer.text
        with trio.fail_after(60):
            while not (run := await api.wait(run["id"]))["timestamps"]["finished_at"]:
                pass
        found = await facts(daemon, run["id"])
        plan = await api.http.get(f"/api/v1/runs/{run['id']}/plan")
    # The apply had finished and its state is kept: the run is applied, and says a stop came.
    # `show -json` was stopped with the run (nothing stored), and the funnel ran once it was
    # reaped: no process, no directory, no lock left behind.
    assert run["status"] == "applied" and len(found["states"]) == 1
    # It ran at the lowest CPU priority, its shim and terraform alike: the apply comes first.
    assert len(beside) >= 2 and niceness == {19}
    assert run["warnings"] == ["a stop request arrived after the apply finished"]
    assert plan.status_code == 404 and "was stopped with the run" in plan.text
    assert stray_processes(str(tmp_path)) == []
    assert not found["dir_exists"] and found["lock"] is None
    assert found["triggers"][-1] == "run:completed"


@pytest.mark.parametrize("stage", ["post_plan", "pre_apply"])
async def test_a_failed_show_json_fails_an_auto_applied_run_whose_hook_reads_the_plan(
    tmp_path: Path, stage: str
) -> None:
    hooks = {stage: ['test -s "$TFWARD_PLAN_JSON"']}
    ws = fake_show_workspace(tmp_path, "invalid_json", auto_apply=True, hooks=hooks)
    config = write_config(tmp_path, [ws], terraform=FAKE)
    async with running_daemon(config) as (daemon, api):
        run = await api.wait((await api.create_run("demo"))["id"], "failed")
        found = await facts(daemon, run["id"])
    assert (run["error_kind"], run["error_message"]) == ("plan", MESSAGES["invalid_json"])
    assert commands(tmp_path) == ["init", "plan", "show"]
    assert found["lock"] is None and found["triggers"][-1] == "run:errored"


async def _until_state_stored(api: Api, within: float = 60) -> None:
    """Until the workspace has a stored state version (the apply's state was kept)."""
    with trio.fail_after(within):
        while not (await api.http.get("/api/v1/workspaces/demo/state-versions")).json()["data"]:
            await trio.sleep(0.05)


async def _until_called(calls: Path, command: str, within: float = 60) -> dict[str, Any]:
    """The fake terraform's first recorded call of `command` (it records before it works)."""
    with trio.fail_after(within):
        while True:
            for line in calls.read_text().splitlines() if calls.exists() else ():
                call: dict[str, Any] = json.loads(line)
                if call["command"] == command:
                    return call
            await trio.sleep(0.05)
