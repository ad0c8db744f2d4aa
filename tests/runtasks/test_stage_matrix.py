"""Every run-task stage x every result status x both enforcement levels, end to end: a real
daemon, real terraform, and a real task service on loopback (seeds C3, C6, H3, M10, O4).

Expected: a mandatory task that does not pass fails the run (`run_task`) through the funnel,
except at `post_apply`, where the applied run stays applied and the failure is a warning plus
a `run:needs_attention` notification; an advisory one only warns; a passing one leaves no
trace on the run but its result.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import demo_workspace, facts, running_daemon
from taskservice import TaskService, task_table, write_task_config

STAGES = ["pre_plan", "post_plan", "pre_apply", "post_apply"]
STATUSES = ["passed", "failed", "timeout", "webhook_error"]
BEHAVIOUR = {"passed": "passed", "failed": "failed", "timeout": "never", "webhook_error": "error"}
CASES = [
    (stage, status, level)
    for stage in STAGES
    for status in STATUSES
    for level in ("mandatory", "advisory")
]


@pytest.mark.parametrize(("stage", "status", "level"), CASES, ids=["-".join(c) for c in CASES])
async def test_a_stage_result_is_enforced_as_its_level_says(
    tmp_path: Path, task_service: TaskService, stage: str, status: str, level: str
) -> None:
    task_service.behaviour["check"] = BEHAVIOUR[status]
    applies = stage in ("pre_apply", "post_apply")
    ws = demo_workspace(
        tmp_path,
        things=1,
        auto_apply=applies,
        run_tasks=[{"task": "check", "stages": [stage], "enforcement": level}],
    )
    config = write_task_config(tmp_path, [ws], [task_table(task_service, "check")])
    blocked = level == "mandatory" and status != "passed" and stage != "post_apply"
    want = "failed" if blocked else "applied" if applies else "apply_pending"
    async with running_daemon(config) as (daemon, api):
        run_id = (await api.create_run("demo"))["id"]
        run = await api.wait(run_id, want)
        response = await api.http.get(f"/api/v1/runs/{run_id}/task-results")
    found = await facts(daemon, run_id)  # after the shutdown: the whole log is stored
    results = response.json()["data"]
    assert [(r["stage"], r["status"], r["enforcement"]) for r in results] == [
        (stage, status, level)
    ]
    assert results[0]["timestamps"]["token_revoked_at"] is not None
    assert len(task_service.received) == (2 if status == "webhook_error" else 1)
    assert all(r.signature_ok for r in task_service.received)
    assert f"run task check: {status}" in found["log"]
    if status in ("passed", "failed") and stage != "pre_plan":
        assert task_service.plan_fetches == [("check", 200)]
    if blocked:
        assert (run["error_kind"], run["stage"]) == ("run_task", None)
        assert run["error_message"].startswith(f"check: {status}")
        assert "[tfward] run finished: failed (run_task)" in found["log"]
        assert found["lock"] is None and not found["dir_exists"]
        assert found["triggers"][-1] == "run:errored"
        return
    warnings = run["warnings"]
    if status == "passed":
        assert warnings == []
    elif level == "advisory":
        assert warnings == [
            f"advisory run task at {stage}: check: {status}: {results[0]['message']}"
        ]
    else:
        assert warnings == [
            f"mandatory run task after the apply: check: {status}: " + results[0]["message"]
        ]
        attention = [
            row["payload"]
            for row in found["outbox"]
            if row["payload"]["trigger"] == "run:needs_attention"
            and "run task" in (row["payload"].get("message") or "")
        ]
        assert len(attention) == 1 and "check: " + status in attention[0]["message"]
