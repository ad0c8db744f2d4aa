"""The plan of a run (tfward/actors/planner.py): the workspace lock taken when the plan is
recorded (seed H7), and a plan whose `terraform show -json` fails (seed M1).

H7 runs real terraform; a post_plan run task on loopback holds the planning run while a user
locks the workspace. M1 needs a `show -json` that fails, which real terraform does not do on
demand: the fake terraform prints no JSON (`show.invalid_json`) or exits 1."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio
from fakeshow import FAKE, MESSAGES, commands, fake_show_workspace
from harness import demo_workspace, facts, running_daemon, write_config
from taskservice import TaskService, callback_body, task_table, write_task_config

from tfward.actors.planner import summary_changes

GATE = [{"task": "gate", "stages": ["post_plan"], "enforcement": "mandatory"}]


async def test_a_user_lock_taken_while_a_run_plans_ends_the_run_failed_lock(
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:
        # The task answers 200 and waits: the run stays in its plan phase until the test
        # calls back, the way the task service would.
        service: TaskService = await nursery.start(TaskService(behaviour={"gate": "never"}).serve)
        ws = demo_workspace(tmp_path, things=1, run_tasks=GATE)
        config = write_task_config(tmp_path, [ws], [task_table(service, "gate", timeout="60s")])
        async with running_daemon(config) as (daemon, api):
            run = await api.create_run("demo")
            [request] = await service.wait_for(1)
            assert (await api.run(run["id"]))["status"] == "planning"
            locked = await api.http.post(
                "/api/v1/workspaces/demo/actions/lock", json={"reason": "maintenance"}
            )
            assert locked.status_code == 200, locked.text
            async with httpx.AsyncClient() as client:
                answer = await client.patch(
                    request.payload["task_result_callback_url"],
                    headers={"Authorization": f"Bearer {request.token}"},
                    json=callback_body("passed", "fine"),
                )
            assert answer.status_code == 200, answer.text
            ended = await api.wait(run["id"], "failed")
            workspace = await api.workspace("demo")
        nursery.cancel_scope.cancel()
    assert ended["error_kind"] == "lock"
    assert ended["error_message"] == (
        "could not lock the workspace for the apply: The workspace is locked by User admin"
    )
    found = await facts(daemon, run["id"])
    # The user's lock stays theirs; the run took none, applied nothing and went through the
    # funnel like any failure.
    assert (found["lock"].run_id, found["lock"].locked_by) == (None, "admin")
    assert workspace["lock"]["message"] == "The workspace is locked by User admin"
    assert not found["dir_exists"] and found["triggers"][-1] == "run:errored"
    assert "run:needs_attention" not in found["triggers"]
    assert "[tfward] run finished: failed (lock)" in found["log"]
    assert not list((tmp_path / "demo-store").iterdir())


@pytest.mark.parametrize("failure", ["invalid_json", "exit_1"])
async def test_a_failed_show_json_fails_a_run_a_person_would_confirm(
    tmp_path: Path, failure: str
) -> None:
    ws = fake_show_workspace(tmp_path, failure, auto_apply=False)
    config = write_config(tmp_path, [ws], terraform=FAKE)
    async with running_daemon(config) as (daemon, api):
        run = await api.wait((await api.create_run("demo"))["id"], "failed")
    assert (run["error_kind"], run["error_message"]) == ("plan", MESSAGES[failure])
    found = await facts(daemon, run["id"])
    # Never offered for confirmation: no apply_pending, no lock, no plan stored.
    assert "run:needs_attention" not in found["triggers"] and run["plan_hash"] is None
    assert found["lock"] is None and not found["dir_exists"]
    assert found["triggers"][-1] == "run:errored"
    assert commands(tmp_path) == ["init", "plan", "show"]


@pytest.mark.parametrize("failure", ["invalid_json", "exit_1"])
async def test_a_failed_show_json_fails_the_run_before_its_post_plan_task_sees_a_plan(
    tmp_path: Path, failure: str
) -> None:
    async with trio.open_nursery() as nursery:
        service: TaskService = await nursery.start(TaskService().serve)
        ws = fake_show_workspace(tmp_path, failure, auto_apply=True, run_tasks=GATE)
        config = write_task_config(tmp_path, [ws], [task_table(service, "gate")], terraform=FAKE)
        async with running_daemon(config) as (daemon, api):
            run = await api.wait((await api.create_run("demo"))["id"], "failed")
            results = (await api.http.get(f"/api/v1/runs/{run['id']}/task-results")).json()
        nursery.cancel_scope.cancel()
    assert (run["error_kind"], run["error_message"]) == ("plan", MESSAGES[failure])
    assert service.received == [] and results["data"] == []
    found = await facts(daemon, run["id"])
    assert found["lock"] is None and found["triggers"][-1] == "run:errored"
    assert commands(tmp_path) == ["init", "plan", "show"]


async def test_a_speculative_plan_whose_show_json_fails_still_finishes_and_says_why(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, [fake_show_workspace(tmp_path, "exit_1")], terraform=FAKE)
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo", operation="plan")
        run = await api.wait(run["id"], "planned_and_finished")
        plan = await api.http.get(f"/api/v1/runs/{run['id']}/plan")
    assert plan.json() is None
    assert MESSAGES["exit_1"] in (await facts(daemon, run["id"]))["log"]


@pytest.mark.parametrize(
    ("line", "counts"),
    [
        ("Plan: 3 to add, 0 to change, 1 to destroy.", (3, 0, 1)),
        ("Plan: 0 to add, 12 to change, 0 to destroy.", (0, 12, 0)),
        (None, (0, 0, 0)),
        ("No changes. Your infrastructure matches the configuration.", (0, 0, 0)),
    ],
)
def test_the_counts_of_a_plan_whose_json_comes_later_are_terraforms_plan_line(
    line: str | None, counts: tuple[int, int, int]
) -> None:
    found = summary_changes(line)
    assert (found.add, found.change, found.destroy) == counts
