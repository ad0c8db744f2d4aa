"""The run pipeline (tfward/actors/pipeline.py) with real terraform: `[daemon]
max_concurrent_runs` bounds the terraform processes of all workspaces together. Processes are
counted from outside, by a shim in front of terraform that logs each start and end in order
(tests/shim.py). An auto-applied run's writes between its plan and its apply, and the check
the plan's record makes for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from harness import demo_workspace, running_daemon, write_config
from shim import counting_terraform

from tfward.actors.pipeline import RunPipeline
from tfward.runs.model import Stage
from tfward.store import artifacts, states
from tfward.store import runs as run_store


async def test_never_more_terraform_processes_run_than_max_concurrent_runs(
    tmp_path: Path,
) -> None:
    terraform = counting_terraform(tmp_path)
    names = ["w1", "w2", "w3"]
    workspaces = [
        demo_workspace(tmp_path, name, things=2, vars={"delay": 1}, auto_apply=True)
        for name in names
    ]
    config = write_config(
        tmp_path,
        workspaces,
        daemon={"max_concurrent_runs": 1},
        terraform={"binary": str(terraform.binary)},
    )
    async with running_daemon(config) as (daemon, api):
        ids = [(await api.create_run(name))["id"] for name in names]
        runs = [await api.wait(run_id, "applied", timeout=120) for run_id in ids]
    # The three runs were in flight together (each started before any ended), so only the
    # limit kept their terraform processes apart.
    started = max(r["timestamps"]["started_at"] for r in runs)
    assert started < min(r["timestamps"]["finished_at"] for r in runs)
    assert terraform.started("apply") == 3 and terraform.most_at_once() == 1


def _empty_state(serial: int, lineage: str) -> bytes:
    doc = {"version": 4, "terraform_version": "1.0.3", "serial": serial, "lineage": lineage,
           "outputs": {}, "resources": []}  # fmt: skip
    return json.dumps(doc).encode()


class StateStoredWhilePlanning:
    """At `saving_plan`, once, a state is stored behind the run's back (as `tfward state
    rollback` or a `terraform state push` through the http backend could): the plan was made
    against a state that is no longer the workspace's."""

    def __init__(self) -> None:
        self.daemon: Any = None
        self.reached = trio.Event()

    async def at(self, run_id: str, stage: Stage) -> None:
        if stage is Stage.SAVING_PLAN and not self.reached.is_set():
            self.reached.set()
            ws_id = self.daemon.rt.workspace_ids["demo"]
            pushed = states.parse_state(_empty_state(7, "pushed-lineage"))
            await self.daemon.store.write(
                lambda c: states.store(c, ws_id, pushed, kind="rollback", run_id=None)
            )


async def test_an_auto_applied_run_whose_state_moved_while_it_planned_is_planned_again(
    tmp_path: Path,
) -> None:
    """The plan's record checks the state for an apply that goes on in the planning directory
    (`_apply_here`): a moved state sends the run back to be planned, before `applying` is
    entered and before terraform apply starts (seed 003)."""
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1, auto_apply=True)])
    injector = StateStoredWhilePlanning()
    async with running_daemon(config, faults=injector) as (daemon, api):
        injector.daemon = daemon
        run_id = (await api.create_run("demo"))["id"]
        run = await api.wait(run_id, "applied", timeout=120)
        timeline = daemon.store.run_sync(lambda c: run_store.timeline(c, run_id))
        log = await api.logs(run_id)
        calls = _calls(tmp_path / "demo-calls.jsonl")
    steps = [(str(e.status), str(e.stage) if e.stage else None) for e in timeline]
    first_attempt = steps[: steps.index(("pending", None), 1)]
    assert ("applying", "restoring_plan") in first_attempt
    assert ("applying", "applying") not in first_attempt
    assert artifacts.STATE_MOVED in log and run["resource_changes"] == {
        "add": 1, "change": 0, "destroy": 0}  # fmt: skip
    assert calls.count("create") == 1  # the one apply ran once, on the second plan


async def test_an_auto_applied_run_enters_applying_with_its_plans_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no `pre_apply` check, `restoring_plan` and `applying` are written by the plan's
    record: no transition of their own on the way from terraform plan's exit to terraform
    apply's start. `saving_state` is written when it begins (the step an operator watches)."""
    written: list[Stage | None] = []
    transition = RunPipeline._transition

    async def spy(self: RunPipeline, fn: Any, trigger: str | None = None) -> Any:
        run = await transition(self, fn, trigger)
        written.append(run.stage)
        return run

    monkeypatch.setattr(RunPipeline, "_transition", spy)
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1, auto_apply=True)])
    async with running_daemon(config) as (daemon, api):
        run_id = (await api.create_run("demo"))["id"]
        await api.wait(run_id, "applied", timeout=120)
        timeline = daemon.store.run_sync(lambda c: run_store.timeline(c, run_id))
    stages = [str(e.stage) for e in timeline if e.stage is not None]
    assert stages[-3:] == ["restoring_plan", "applying", "saving_state"]
    assert written == [Stage.SAVING_STATE]

def _calls(path: Path) -> list[str]:
    """The demo provider's calls, by kind ("create", "read", ...)."""
    return [json.loads(line)["op"] for line in path.read_text().splitlines()]
