"""The children of a run (tfward/actors/children.py): the stage `planning` is written with
terraform plan's PID, or at once when the run must wait for a process slot. The fake terraform
holds the one slot with a plan that sleeps (real terraform cannot be made to wait on demand)."""

from __future__ import annotations

import json
from pathlib import Path

from fakeshow import FAKE
from harness import demo_workspace, facts, running_daemon, write_config

from tfward.store import runs as run_store


async def test_a_run_waiting_for_a_process_slot_shows_its_stage_planning(tmp_path: Path) -> None:
    script = tmp_path / "fake-script.json"
    script.write_text(json.dumps({"plan": {"sleep": 60}}))
    holder = demo_workspace(tmp_path, "holder", things=1)
    holder["env"] |= {"FAKE_TF_SCRIPT": str(script)}
    waiter = demo_workspace(tmp_path, "waiter", things=1)
    calls = tmp_path / "waiter-calls.jsonl"
    waiter["env"] |= {"FAKE_TF_CALLS": str(calls)}
    config = write_config(
        tmp_path, [holder, waiter], daemon={"max_concurrent_runs": 1}, terraform=FAKE
    )
    async with running_daemon(config) as (daemon, api):
        first = await api.create_run("waiter", operation="plan")  # its init is kept
        await api.wait(first["id"], "planned_and_finished")
        held = await api.create_run("holder", operation="plan")
        await api.wait_stage(held["id"], "planning")  # its plan holds the only slot
        plans_before = _commands(calls).count("plan")
        waiting = await api.create_run("waiter", operation="plan")
        shown = await api.wait_stage(waiting["id"], "planning")
        plans_while_waiting = _commands(calls).count("plan") - plans_before
        assert (await api.action(held["id"], "cancel")).status_code == 202
        ended = await api.wait(waiting["id"], "planned_and_finished", timeout=60)
        timeline = daemon.store.run_sync(lambda c: run_store.timeline(c, waiting["id"]))
        found = await facts(daemon, waiting["id"])
    # It showed `planning` while its terraform plan had not started ...
    assert shown["status"] == "planning" and plans_while_waiting == 0
    # ... and entered it once: the write of its plan's PID did not enter it again.
    assert [str(e.stage) for e in timeline].count("planning") == 1
    assert ended["status"] == "planned_and_finished" and not found["dir_exists"]


def _commands(calls: Path) -> list[str]:
    return [json.loads(line)["command"] for line in calls.read_text().splitlines()]
