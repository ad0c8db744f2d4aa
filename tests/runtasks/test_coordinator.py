"""The run-task coordinator through the daemon: every stage called, concurrency, the most
restrictive outcome, every webhook down (C3), the no-progress timer (M10), cancellation, and
the exact request body, with real terraform and a real task service on loopback."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from harness import admin_headers, demo_workspace, facts, running_daemon
from taskservice import TaskService, closed_url, task_table, write_task_config

STAGES = ["pre_plan", "post_plan", "pre_apply", "post_apply"]


def _ws(tmp_path: Path, attachments: list[dict[str, Any]], **settings: Any) -> dict[str, Any]:
    return demo_workspace(tmp_path, things=1, run_tasks=attachments, **settings)


async def test_every_stage_calls_its_tasks_while_the_run_shows_that_stage(
    tmp_path: Path, task_service: TaskService
) -> None:
    ws = _ws(tmp_path, [{"task": "check", "stages": STAGES}], auto_apply=True)
    config = write_task_config(tmp_path, [ws], [task_table(task_service, "check")])
    async with running_daemon(config) as (daemon, api):
        task_service.api_headers = admin_headers(config)
        run = await api.wait((await api.create_run("demo"))["id"], "applied")
        results = (await api.http.get(f"/api/v1/runs/{run['id']}/task-results")).json()["data"]
    assert [r.payload["stage"] for r in task_service.received] == STAGES
    assert task_service.run_stages == [(stage, stage) for stage in STAGES]
    assert [(r["stage"], r["status"]) for r in results] == [(s, "passed") for s in STAGES]
    assert all(r["outcomes"][0]["outcome-id"] == "ID-1" for r in results)


async def test_the_request_body_has_every_hcp_field_and_its_links_work(
    tmp_path: Path, task_service: TaskService
) -> None:
    task_service.behaviour["check"] = "never"
    ws = _ws(tmp_path, [{"task": "check", "stages": ["post_plan"], "enforcement": "advisory"}])
    config = write_task_config(tmp_path, [ws], [task_table(task_service, "check", timeout="30s")])
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo", message="hello tasks")
        body = (await task_service.wait_for(1))[0].payload
        auth = {"Authorization": f"Bearer {body['access_token']}"}
        async with httpx.AsyncClient() as client:
            archive = await client.get(body["configuration_version_download_url"], headers=auth)
            plan = await client.get(body["plan_json_api_url"], headers=auth)
            bare = await client.get(body["configuration_version_download_url"])
        result = (await api.http.get(f"/api/v1/run-task-results/{body['task_result_id']}")).json()
    public = config.daemon.public_url
    assert set(body) == {
        "payload_version", "stage", "access_token", "capabilities", "task_result_id",
        "task_result_callback_url", "task_result_enforcement_level", "run_id", "run_message",
        "run_created_at", "run_created_by", "run_app_url", "workspace_id", "workspace_name",
        "workspace_working_directory", "workspace_app_url", "organization_name",
        "is_speculative", "configuration_version_id", "configuration_version_download_url",
        "plan_json_api_url", "vcs_repo_url", "vcs_branch", "vcs_commit_hash", "vcs_commit_url",
        "vcs_pull_request_url",
    }  # fmt: skip
    rid = body["task_result_id"]
    assert body["payload_version"] == 1 and body["capabilities"] == {"outcomes": True}
    assert (body["stage"], body["task_result_enforcement_level"]) == ("post_plan", "advisory")
    assert body["task_result_callback_url"] == f"{public}/api/v1/run-task-results/{rid}/callback"
    assert body["plan_json_api_url"] == f"{public}/api/v1/run-task-results/{rid}/plan-json"
    assert (body["run_id"], body["run_message"]) == (run["id"], "hello tasks")
    assert (body["workspace_name"], body["organization_name"]) == ("demo", "tests")
    assert body["is_speculative"] is False and body["vcs_repo_url"] is None
    assert body["run_created_at"].endswith("Z")
    assert archive.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
        assert "main.tf" in tar.getnames()
    assert plan.status_code == 200 and "resource_changes" in plan.json()
    assert bare.status_code == 401
    assert body["access_token"] not in str(result)


async def test_results_of_a_stage_are_delivered_concurrently(
    tmp_path: Path, task_service: TaskService
) -> None:
    # Each task service answers only once both requests have arrived: sent one after the
    # other, the first would wait for the second forever.
    task_service.behaviour.update({"a": "barrier:2", "b": "barrier:2"})
    attach = [{"task": name, "stages": ["pre_plan"]} for name in ("a", "b")]
    tasks = [task_table(task_service, name, retries=0) for name in ("a", "b")]
    config = write_task_config(tmp_path, [_ws(tmp_path, attach)], tasks)
    async with running_daemon(config) as (daemon, api):
        await api.wait((await api.create_run("demo"))["id"], "apply_pending")
    assert sorted(r.task for r in task_service.received) == ["a", "b"]


async def test_the_stage_takes_the_most_restrictive_outcome(
    tmp_path: Path, task_service: TaskService
) -> None:
    task_service.behaviour.update({"ok": "passed", "loud": "failed", "slow": "never"})
    attach = [
        {"task": "ok", "stages": ["post_plan"], "enforcement": "mandatory"},
        {"task": "loud", "stages": ["post_plan"], "enforcement": "advisory"},
        {"task": "slow", "stages": ["post_plan"], "enforcement": "mandatory"},
    ]
    tasks = [task_table(task_service, n) for n in ("ok", "loud", "slow")]
    config = write_task_config(tmp_path, [_ws(tmp_path, attach)], tasks)
    async with running_daemon(config) as (daemon, api):
        run = await api.wait((await api.create_run("demo"))["id"], "failed")
    assert run["error_kind"] == "run_task"
    assert run["error_message"].startswith("slow: timeout: ")
    assert run["warnings"] == ["advisory run task at post_plan: loud: failed: loud says failed"]


async def test_every_webhook_down_at_once_blocks_the_run(
    tmp_path: Path, task_service: TaskService
) -> None:
    # Seed C3: the old platform counted a stage whose webhooks all failed as passed.
    task_service.behaviour["broken"] = "error"
    tasks = [
        {**task_table(task_service, "gone"), "url": closed_url()},
        {**task_table(task_service, "also-gone"), "url": closed_url()},
        task_table(task_service, "broken"),
    ]
    attach = [{"task": t["name"], "stages": ["post_plan"]} for t in tasks]
    config = write_task_config(tmp_path, [_ws(tmp_path, attach)], tasks)
    async with running_daemon(config) as (daemon, api):
        run = await api.wait((await api.create_run("demo"))["id"], "failed")
        results = (await api.http.get(f"/api/v1/runs/{run['id']}/task-results")).json()["data"]
        found = await facts(daemon, run["id"])
    assert run["error_kind"] == "run_task"
    assert {r["task_name"]: r["status"] for r in results} == {
        "gone": "webhook_error",
        "also-gone": "webhook_error",
        "broken": "webhook_error",
    }
    reasons = {r["task_name"]: r["message"] for r in results}
    assert "ConnectError" in reasons["gone"] and "(after 2 attempts)" in reasons["gone"]
    assert "answered 500" in reasons["broken"]
    assert found["lock"] is None and found["triggers"][-1] == "run:errored"


@pytest.mark.parametrize("level", ["mandatory", "advisory"])
async def test_a_post_plan_task_whose_endpoint_is_down_blocks_only_when_mandatory(
    tmp_path: Path, task_service: TaskService, level: str
) -> None:
    tasks = [{**task_table(task_service, "scan"), "url": closed_url()}]
    attach = [{"task": "scan", "stages": ["post_plan"], "enforcement": level}]
    config = write_task_config(tmp_path, [_ws(tmp_path, attach)], tasks)
    async with running_daemon(config) as (daemon, api):
        run_id = (await api.create_run("demo"))["id"]
        run = await api.wait(run_id, "failed" if level == "mandatory" else "apply_pending")
        lock = (await api.workspace("demo"))["lock"]
    found = await facts(daemon, run_id)
    assert "[tfward] run task scan: webhook_error: delivery failed: ConnectError" in found["log"]
    if level == "mandatory":
        assert (run["status"], run["error_kind"]) == ("failed", "run_task")
        assert lock is None and found["triggers"][-1] == "run:errored"
        assert "[tfward] run finished: failed (run_task): scan: webhook_error" in found["log"]
    else:
        assert run["status"] == "apply_pending" and lock["run_id"] == run_id
        (warning,) = run["warnings"]
        assert warning.startswith(
            "advisory run task at post_plan: scan: webhook_error: delivery failed: ConnectError"
        )


async def test_running_callbacks_are_progress_and_the_result_passes_later(
    tmp_path: Path, task_service: TaskService
) -> None:
    task_service.behaviour["steady"] = "running_then_passed"
    attach = [{"task": "steady", "stages": ["post_plan"]}]
    config = write_task_config(
        tmp_path, [_ws(tmp_path, attach)], [task_table(task_service, "steady")]
    )
    async with running_daemon(config) as (daemon, api):
        run = await api.wait((await api.create_run("demo"))["id"], "apply_pending")
        results = (await api.http.get(f"/api/v1/runs/{run['id']}/task-results")).json()["data"]
    assert [c[1:] for c in task_service.callbacks] == [
        ("running", 200),
        ("running", 200),
        ("passed", 200),
    ]
    assert results[0]["status"] == "passed"
    stamps = results[0]["timestamps"]
    assert _seconds(stamps["last_progress_at"]) - _seconds(stamps["created_at"]) > 0.4


async def test_a_silent_task_is_marked_timeout_at_once_by_its_waiter(
    tmp_path: Path, task_service: TaskService
) -> None:
    # Seed M10: the result must not stay `running` until some later sweep.
    task_service.behaviour["silent"] = "never"
    attach = [{"task": "silent", "stages": ["pre_plan"], "enforcement": "advisory"}]
    config = write_task_config(
        tmp_path, [_ws(tmp_path, attach)], [task_table(task_service, "silent")]
    )
    async with running_daemon(config) as (daemon, api):
        run_id = (await api.create_run("demo"))["id"]
        await task_service.wait_for(1)
        with trio.fail_after(10):
            while True:
                result = (await api.http.get(f"/api/v1/runs/{run_id}/task-results")).json()
                if result["data"][0]["status"] not in ("pending", "running"):
                    break
                await trio.sleep(0.1)
        await api.wait(run_id, "apply_pending")
    stamps = result["data"][0]["timestamps"]
    waited = _seconds(stamps["updated_at"]) - _seconds(stamps["last_progress_at"])
    assert result["data"][0]["status"] == "timeout"
    assert 1.9 <= waited < 3.0


async def test_cancelling_a_run_during_a_stage_wait_ends_it_and_revokes_the_tokens(
    tmp_path: Path, task_service: TaskService
) -> None:
    task_service.behaviour["slow"] = "never"
    attach = [{"task": "slow", "stages": ["post_plan"]}]
    tasks = [task_table(task_service, "slow", timeout="5m")]
    config = write_task_config(tmp_path, [_ws(tmp_path, attach)], tasks)
    async with running_daemon(config) as (daemon, api):
        run_id = (await api.create_run("demo"))["id"]
        request = (await task_service.wait_for(1))[0]
        await api.wait_stage(run_id, "post_plan")
        with trio.fail_after(10):
            assert (await api.action(run_id, "cancel")).status_code == 202
            run = await api.wait(run_id, "cancelled")
        late = await api.http.patch(
            request.payload["task_result_callback_url"],
            headers={"Authorization": f"Bearer {request.token}"},
            json={"data": {"type": "task-results", "attributes": {"status": "passed"}}},
        )
        found = await facts(daemon, run_id)
        result = (await api.http.get(f"/api/v1/runs/{run_id}/task-results")).json()["data"][0]
    assert run["status"] == "cancelled"
    assert late.status_code == 401, late.text
    assert result["status"] == "running" and result["timestamps"]["token_revoked_at"]
    assert result["message"] == "the run stopped waiting before the task finished"
    assert found["lock"] is None and not found["dir_exists"]
    assert "[tfward] run finished: cancelled" in found["log"]
    assert found["triggers"][-1] == "run:cancelled"


async def test_a_speculative_run_gets_its_plan_stage_tasks_marked_speculative(
    tmp_path: Path, task_service: TaskService
) -> None:
    attach = [{"task": "check", "stages": STAGES}]
    config = write_task_config(
        tmp_path, [_ws(tmp_path, attach)], [task_table(task_service, "check")]
    )
    async with running_daemon(config) as (daemon, api):
        run_id = (await api.create_run("demo", operation="plan"))["id"]
        await api.wait(run_id, "planned_and_finished")
    assert [(r.payload["stage"], r.payload["is_speculative"]) for r in task_service.received] == [
        ("pre_plan", True),
        ("post_plan", True),
    ]


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
