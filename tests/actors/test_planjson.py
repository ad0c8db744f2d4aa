"""`terraform show -json` after the run (tfward/actors/planjson.py, docs/architecture.md §3).

An auto-applied run that nothing reviews during the run records its plan without the JSON and
applies at once; the funnel queues the outbox job `plan_json`, which makes the JSON after the
run and stores it, or records on the run why there is none. A run whose plan something reads
during the run — a person confirming, a run task or a hook at `post_plan`, `pre_apply` or
`post_apply` — still fails when `show -json` fails (seed M1; the confirm and the `post_plan`
task cases are in test_planner.py).

The happy paths run real terraform; the failures need a `show -json` that fails or hangs on
demand: the fake terraform (`show.invalid_json`, `show.exit`, `show.sleep`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from fakeshow import FAKE, MESSAGES, commands, fake_show_workspace
from harness import demo_workspace, facts, running_daemon, stray_processes, write_config


async def test_an_auto_applied_run_nothing_reviews_gets_its_plan_json_after_it_ended(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=2, auto_apply=True)])
    async with running_daemon(config) as (daemon, api):
        run = await api.wait((await api.create_run("demo"))["id"], "applied")
        plan = await api.plan_json(run["id"])
        run = await api.run(run["id"])
        found = await facts(daemon, run["id"])
        scratch = config.daemon.data_dir / "plan-json"
        leftovers = [p.name for p in scratch.iterdir() if not p.name.startswith("cli-")]
        processes = stray_processes(str(config.daemon.data_dir))
    log = found["log"]
    assert "the plan JSON is made after the run" in log and "terraform show" not in log
    # The counts are the plan JSON's once it is stored, and the JSON is there to review.
    assert run["resource_changes"] == {"add": 2, "change": 0, "destroy": 0}
    assert run["plan_json_error"] is None
    actions = [change["change"]["actions"] for change in plan["resource_changes"]]
    assert actions == [["create"], ["create"]]
    # A job of the outbox, done; it ran in the run's kept init (no second one was kept), and
    # left no file (but the shared CLI config) and no process.
    jobs = [(row["kind"], row["status"]) for row in found["outbox"] if row["kind"] == "plan_json"]
    assert jobs == [("plan_json", "done")]
    assert len(list((config.daemon.data_dir / "init-cache" / "demo").iterdir())) == 1
    assert leftovers == [] and processes == []


async def test_show_json_after_the_run_initialises_its_own_directory_when_no_init_was_kept(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1, auto_apply=True)])
    # The init cannot be kept (a file stands where the workspace's init cache would go): the
    # job finds none and runs `terraform init` in its own directory, from the stored
    # configuration version.
    cache = config.daemon.data_dir / "init-cache"
    cache.mkdir(parents=True)
    (cache / "demo").write_text("not a directory\n")
    async with running_daemon(config) as (daemon, api):
        run = await api.wait((await api.create_run("demo"))["id"], "applied")
        plan = await api.plan_json(run["id"])
        found = await facts(daemon, run["id"])
    assert "could not keep this init for later runs" in found["log"]
    assert [rc["address"] for rc in plan["resource_changes"]] == ["demo_thing.this[0]"]


@pytest.mark.parametrize(("failure", "reason"), [("invalid_json", "not_json"), ("exit_1", "exit")])
async def test_a_failed_show_json_after_the_run_is_recorded_on_the_run_not_failing_it(
    tmp_path: Path, failure: str, reason: str
) -> None:
    ws = fake_show_workspace(tmp_path, failure, auto_apply=True)
    config = write_config(tmp_path, [ws], terraform=FAKE)
    async with running_daemon(config) as (daemon, api):
        run = await api.wait((await api.create_run("demo"))["id"], "applied")
        plan = await api.plan_json(run["id"])
        run = await api.run(run["id"])
        metrics = (await api.http.get("/metrics")).text
        found = await facts(daemon, run["id"])
    expected = MESSAGES[failure].removesuffix(": the plan cannot be reviewed")
    assert run["status"] == "applied" and run["plan_json_error"] == expected
    assert run["error_message"] is None and plan is None
    # Terraform's `Plan:` line gave the counts; nothing replaced them.
    assert run["resource_changes"] == {"add": 1, "change": 0, "destroy": 0}
    assert f'tfward_plan_json_failures_total{{reason="{reason}"}} 1.0' in metrics
    assert commands(tmp_path) == ["init", "plan", "apply", "show"]
    assert found["triggers"][-1] == "run:completed" and not found["dir_exists"]


async def test_show_json_stopped_with_the_daemon_is_made_again_at_the_next_start(
    tmp_path: Path,
) -> None:
    script = tmp_path / "fake-script.json"
    script.write_text(json.dumps({"show": {"sleep": 60}}))
    ws = demo_workspace(tmp_path, things=1, auto_apply=True)
    calls = tmp_path / "calls.jsonl"
    ws["env"] |= {"FAKE_TF_SCRIPT": str(script), "FAKE_TF_CALLS": str(calls)}
    config = write_config(tmp_path, [ws], terraform=FAKE)
    async with running_daemon(config) as (daemon, api):
        run = await api.wait((await api.create_run("demo"))["id"], "applied")
        await _until_called(calls, "show")
    # The daemon stopped while `show -json` ran: stopped with it, nothing stored, the job
    # left for the next start.
    assert stray_processes(str(tmp_path)) == []
    script.write_text(json.dumps({}))
    async with running_daemon(config) as (daemon, api):
        plan = await api.plan_json(run["id"])
        run = await api.run(run["id"])
        found = await facts(daemon, run["id"])
    assert plan["format_version"] and run["plan_json_error"] is None
    assert commands(tmp_path) == ["init", "plan", "apply", "show", "show"]
    jobs = [(row["kind"], row["status"]) for row in found["outbox"] if row["kind"] == "plan_json"]
    assert jobs == [("plan_json", "done")]


@pytest.mark.parametrize("stage", ["post_plan", "pre_apply", "post_apply"])
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
    assert not any(row["kind"] == "plan_json" for row in found["outbox"])


async def _until_called(calls: Path, command: str, within: float = 60) -> dict[str, Any]:
    """The fake terraform's first recorded call of `command` (it records before it works)."""
    with trio.fail_after(within):
        while True:
            for line in calls.read_text().splitlines() if calls.exists() else ():
                call: dict[str, Any] = json.loads(line)
                if call["command"] == command:
                    return call
            await trio.sleep(0.05)
