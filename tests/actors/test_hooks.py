"""Script hooks (tfward/actors/hooks.py) on a real daemon with real terraform: every stage
runs its commands in the run directory with the run's facts in the environment and their
output in the log, masked; a failing hook before the apply fails the run through the funnel,
one after it leaves the run applied and says so; a cancel kills a hook's whole process group.
Timeouts, force-cancel and shutdown during a hook are rows of the fault matrix
(tests/actors/test_fault_matrix.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from harness import demo_workspace, facts, running_daemon, stray_processes, write_config

from tfward.config import Config

SECRET = "hook-secret-7f3a"
# Python reads the plan JSON the hook was given (system python3: no package needed).
COUNT_CHANGES = (
    "python3 -c 'import json, os; "
    'd = json.load(open(os.environ["TFWARD_PLAN_JSON"])); '
    'print("plan-json changes", len(d["resource_changes"]))\''
)


def hooked(tmp_path: Path, hooks: dict[str, list[str]], **settings: Any) -> Config:
    ws = demo_workspace(tmp_path, things=1, auto_apply=True, hooks=hooks, **settings)
    ws["env"] = {**ws["env"], "HOOK_SECRET": SECRET}
    ws["sensitive"] = ["HOOK_SECRET"]
    return write_config(tmp_path, [ws], terraform={"cancel_grace": "2s"})


async def test_every_hook_stage_runs_in_the_run_directory_with_its_output_in_the_log(
    tmp_path: Path,
) -> None:
    said = 'echo "hook-$TFWARD_STAGE run=$TFWARD_RUN_ID ws=$TFWARD_WORKSPACE"; ls main.tf'
    hooks = {
        "pre_plan": [said, 'echo "plan json: [${TFWARD_PLAN_JSON:-none}]"'],
        "post_plan": [said, COUNT_CHANGES],
        "pre_apply": [said, COUNT_CHANGES, 'echo "the secret is $HOOK_SECRET"'],
        "post_apply": [said, COUNT_CHANGES],
    }
    async with running_daemon(hooked(tmp_path, hooks)) as (daemon, api):
        run = await api.wait((await api.create_run("demo"))["id"], "applied")
    log = (await facts(daemon, run["id"]))["log"]
    positions = [log.index(f"hook-{stage} run={run['id']} ws=demo\nmain.tf\n") for stage in hooks]
    plan, apply = log.index("[tfward] terraform plan "), log.index("[tfward] terraform apply ")
    assert positions[0] < plan < positions[1] < positions[2] < apply < positions[3]
    assert "plan json: [none]" in log  # no plan yet at pre_plan
    assert log.count("plan-json changes 1\n") == 3
    assert "the secret is ***" in log and SECRET not in log
    assert log.count(": ok (") == 9 and run["warnings"] == []


async def test_a_failing_pre_plan_hook_fails_the_run_through_the_funnel(tmp_path: Path) -> None:
    hooks = {"pre_plan": ['echo "tflint: 2 problems"; exit 3', "echo never-runs"]}
    async with running_daemon(hooked(tmp_path, hooks)) as (daemon, api):
        run = await api.wait((await api.create_run("demo"))["id"], "failed")
    found = await facts(daemon, run["id"])
    assert (run["error_kind"], run["error_class"]) == ("hook", "permanent")
    assert run["error_message"] == "hook pre_plan[0] failed (exit 3)"
    assert "tflint: 2 problems" in found["log"] and "never-runs\n" not in found["log"]
    assert "[tfward] terraform plan" not in found["log"]
    assert "[tfward] run finished: failed (hook)" in found["log"]
    assert not found["dir_exists"] and found["lock"] is None
    assert found["triggers"][-1] == "run:errored"


async def test_a_failing_post_apply_hook_leaves_the_run_applied_with_a_warning(
    tmp_path: Path,
) -> None:
    hooks = {"post_apply": ["exit 1", "echo second-hook-ran"]}
    async with running_daemon(hooked(tmp_path, hooks)) as (daemon, api):
        run = await api.wait((await api.create_run("demo"))["id"], "applied")
    found = await facts(daemon, run["id"])
    assert run["warnings"] == ["hook post_apply[0] failed (exit 1) after the apply"]
    assert "second-hook-ran" in found["log"] and found["states"][0].run_id == run["id"]
    assert found["triggers"][-2:] == ["run:needs_attention", "run:completed"]
    attention = [r for r in found["outbox"] if r["payload"].get("trigger") == "run:needs_attention"]
    assert "hook post_apply[0] failed" in attention[-1]["payload"]["message"]


async def test_a_cancel_during_a_hanging_hook_kills_its_whole_process_group(
    tmp_path: Path,
) -> None:
    # The hook's background child ignores SIGINT (as sh makes it): only the group kill ends it.
    pid_file = tmp_path / "hook-child.pid"
    hooks = {"post_plan": [f"sleep 300 & echo $! > {pid_file}; wait"]}
    async with running_daemon(hooked(tmp_path, hooks)) as (daemon, api):
        run_id = (await api.create_run("demo"))["id"]
        await _wait_for_file(pid_file)
        assert (await api.run(run_id))["stage"] == "post_plan"
        assert (await api.action(run_id, "cancel")).status_code == 202
        run = await api.wait(run_id, "cancelled")
        child = int(pid_file.read_text())
        assert not _running(child), "the hook's child outlived the cancel"
    found = await facts(daemon, run_id)
    assert run["error_message"] == "cancelled in stage post_plan"
    assert not found["dir_exists"] and found["lock"] is None
    assert found["triggers"][-1] == "run:cancelled"
    assert stray_processes(str(tmp_path)) == []


async def _wait_for_file(path: Path) -> None:
    with trio.fail_after(60):
        while not (path.exists() and path.read_text().strip()):
            await trio.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
