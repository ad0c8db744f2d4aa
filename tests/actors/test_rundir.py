"""`terraform init` of a run directory (tfward/actors/rundir.py): kept and reused for the same
configuration and run again for a changed one (counted from outside, by a shim in front of
terraform: tests/shim.py); tried again when it fails transiently: a real daemon, real terraform
where it can fail on demand (an unreachable registry, a syntax error), and the fake terraform
replaying a registry error terraform 1.0.3 printed (tests/runs/terraform_failures.toml) where
the failure must go away by itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from harness import FAKE_TERRAFORM, Api, demo_workspace, facts, running_daemon, write_config
from shim import counting_terraform

from tfward.actors.rundir import RETRY_CAP, retry_delay
from tfward.config import Config

REGISTRY_ERROR = "could not connect to registry.terraform.io: Failed to"
UNREACHABLE_PROVIDER = (
    'terraform {\n  required_providers {\n    thing = {\n'
    '      source = "localhost:1/tfward/thing"\n    }\n  }\n}\n'
)


def fake_init(tmp_path: Path, step: dict[str, Any], **terraform: Any) -> Config:
    """A workspace whose terraform is the fake, its `init` scripted by `step`."""
    script = tmp_path / "fake-script.json"
    script.write_text(json.dumps({"init": step}))
    ws = demo_workspace(tmp_path, things=1, auto_apply=True)
    ws["env"] = {
        **ws["env"],
        "FAKE_TF_SCRIPT": str(script),
        "FAKE_TF_CALLS": str(tmp_path / "fake-calls.jsonl"),
    }
    return write_config(tmp_path, [ws], terraform={"binary": str(FAKE_TERRAFORM), **terraform})


def init_calls(tmp_path: Path) -> int:
    lines = (tmp_path / "fake-calls.jsonl").read_text().splitlines()
    return [json.loads(line)["command"] for line in lines].count("init")


async def test_an_init_failing_twice_with_a_registry_error_succeeds_on_the_third_attempt(
    tmp_path: Path,
) -> None:
    step = {"replay": "registry_no_such_host", "times": 2, "counter": str(tmp_path / "count")}
    config = fake_init(tmp_path, step, init_retry_interval="100ms")
    async with running_daemon(config) as (daemon, api):
        run = await api.wait((await api.create_run("demo"))["id"], "applied")
    log = (await facts(daemon, run["id"]))["log"]
    assert init_calls(tmp_path) == 3
    assert log.count("[tfward] terraform init -input=false -no-color") == 3
    assert log.count(REGISTRY_ERROR) == 2  # each failed attempt's own output
    assert "attempt 1 of 4, trying again in" in log
    assert "attempt 2 of 4, trying again in" in log
    assert "transient: a provider registry could not be reached" in log
    assert (run["error_kind"], run["error_class"]) == (None, None)


async def test_a_syntax_error_fails_init_permanently_without_a_second_attempt(
    tmp_path: Path,
) -> None:
    ws = demo_workspace(tmp_path, things=1, extra_tf='resource "demo_thing" "x" {\n')
    config = write_config(tmp_path, [ws], terraform={"init_retry_interval": "100ms"})
    async with running_daemon(config) as (daemon, api):
        run = await api.wait((await api.create_run("demo"))["id"], "failed")
    log = (await facts(daemon, run["id"]))["log"]
    assert (run["error_kind"], run["error_class"]) == ("init", "permanent")
    assert log.count("[tfward] terraform init") == 1 and "trying again" not in log


async def test_an_unreachable_registry_is_tried_every_time_and_the_run_fails_transient(
    tmp_path: Path,
) -> None:
    # A module of its own declares the provider (the root declares the demo provider).
    ws = demo_workspace(tmp_path, things=1, extra_tf='module "m" {\n  source = "./m"\n}\n')
    (tmp_path / "demo" / "m").mkdir()
    (tmp_path / "demo" / "m" / "main.tf").write_text(UNREACHABLE_PROVIDER)
    config = write_config(
        tmp_path, [ws], terraform={"init_retries": 2, "init_retry_interval": "100ms"}
    )
    async with running_daemon(config) as (daemon, api):
        run = await api.wait((await api.create_run("demo"))["id"], "failed")
    found = await facts(daemon, run["id"])
    assert (run["error_kind"], run["error_class"]) == ("init", "transient")
    assert run["error_message"].startswith("terraform init (attempt 3 of 3) failed (exit 1): ")
    assert found["log"].count("connect: connection refused") == 3
    assert found["triggers"][-1] == "run:errored" and not found["dir_exists"]


async def test_a_cancel_during_the_wait_between_attempts_ends_the_run_cancelled(
    tmp_path: Path,
) -> None:
    config = fake_init(tmp_path, {"replay": "registry_503"}, init_retry_interval="10m")
    async with running_daemon(config) as (daemon, api):
        run_id = (await api.create_run("demo"))["id"]
        await _log_says(api, run_id, "trying again in")
        assert (await api.action(run_id, "cancel")).status_code == 202
        with trio.fail_after(30):  # the wait was 10 minutes: only the cancel ends it
            run = await api.wait(run_id, "cancelled")
    found = await facts(daemon, run_id)
    assert run["stage"] is None and run["error_class"] is None
    assert "[tfward] run finished: cancelled" in found["log"]
    assert found["triggers"][-1] == "run:cancelled" and not found["dir_exists"]
    assert found["lock"] is None and init_calls(tmp_path) == 1


async def _log_says(api: Api, run_id: str, text: str) -> None:
    with trio.fail_after(60):
        while text not in await api.logs(run_id):
            await trio.sleep(0.1)


@pytest.mark.parametrize(
    ("attempt", "jitter", "wait"),
    [(1, 1.0, 5.0), (2, 1.0, 10.0), (3, 1.2, 24.0), (12, 1.0, RETRY_CAP)],
)
def test_the_wait_between_init_attempts_doubles_up_to_a_cap(
    attempt: int, jitter: float, wait: float
) -> None:
    assert retry_delay(5.0, attempt, jitter) == pytest.approx(wait)


async def test_a_second_run_of_the_same_configuration_runs_no_init_and_a_changed_one_does(
    tmp_path: Path,
) -> None:
    terraform = counting_terraform(tmp_path)
    ws = demo_workspace(tmp_path, things=1)
    config = write_config(tmp_path, [ws], terraform={"binary": str(terraform.binary)})
    async with running_daemon(config) as (daemon, api):

        async def plan() -> str:
            run = await api.create_run("demo", operation="plan")
            await api.wait(run["id"], "planned_and_finished")
            return await api.logs(run["id"])

        await plan()
        assert (terraform.started("init"), terraform.started("plan")) == (1, 1)
        second = await plan()
        assert (terraform.started("init"), terraform.started("plan")) == (1, 2)
        assert "init reused: this configuration was initialised before" in second

        (Path(ws["source"]) / "extra.tf").write_text('output "extra" {\n  value = 1\n}\n')
        changed = await plan()
        assert (terraform.started("init"), terraform.started("plan")) == (2, 3)
        assert "init reused" not in changed
        await plan()  # the changed configuration's init is kept in turn
        assert (terraform.started("init"), terraform.started("plan")) == (2, 4)
