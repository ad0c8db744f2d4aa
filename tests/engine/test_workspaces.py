"""Workspace kinds and their inputs: module workspaces, sensitive values."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio
from harness import (
    DEMO_WORKSPACE,
    Api,
    any_change,
    demo_workspace,
    facts,
    running_daemon,
    write_config,
)

from tfward.daemon.service import Daemon
from tfward.store import artifacts


async def test_a_module_workspace_runs_the_generated_main_tf_json(tmp_path: Path) -> None:
    module = tmp_path / "modules" / "things"
    shutil.copytree(DEMO_WORKSPACE, module)
    (tmp_path / "cfg").mkdir()
    store = tmp_path / "store"
    store.mkdir()
    ws = {
        "name": "mod",
        "module": {"source": "../modules/things"},
        "inputs": {"prefix": "mod", "things": 2},
        "env": {"TFWARD_DEMO_STORE_DIR": str(store)},
        "auto_apply": True,
    }
    config = write_config(tmp_path / "cfg", [ws])
    async with running_daemon(config) as (daemon, api):
        run = await api.wait((await api.create_run("mod"))["id"], "applied")
        assert run["resource_changes"]["add"] == 2
        sv = (await api.state_versions("mod"))[0]
        assert sv["outputs"]["main"]["value"]["ids"][0].startswith("thing-mod-0-")
        # The module's code is part of the snapshot: editing it makes a new version.
        (module / "extra.tf").write_text("# changed\n")
        await api.wait(
            (await api.create_run("mod", operation="plan"))["id"], "planned_and_finished"
        )
        versions = (await api.http.get("/api/v1/workspaces/mod/configuration-versions")).json()
        assert len(versions["data"]) == 2


async def test_sensitive_values_never_reach_the_log(tmp_path: Path) -> None:
    secret = "hunter2-s3cr3t-value"
    ws = demo_workspace(
        tmp_path, things=1, auto_apply=True, vars={"value": secret}, sensitive=["value"]
    )
    config = write_config(tmp_path, [ws])
    async with running_daemon(config) as (daemon, api):
        run = await api.wait((await api.create_run("demo"))["id"], "applied")
        found = await facts(daemon, run["id"])
        assert secret not in found["log"] and "***" in found["log"]
        response = await api.http.get(f"/api/v1/runs/{run['id']}/logs")
        assert secret not in response.text


SECRET_TF = """
variable "secret" {
  type      = string
  sensitive = true
}

resource "demo_thing" "secret" {
  name  = "secret"
  value = var.secret
}
"""


async def test_the_plan_json_the_api_serves_holds_no_sensitive_value(tmp_path: Path) -> None:
    declared, listed = "declared-s3cret-from-file", "listed-s3cret-value"
    (tmp_path / "secret.txt").write_text(declared + "\n")
    ws = demo_workspace(
        tmp_path,
        things=1,
        extra_tf=SECRET_TF,
        # `secret` is declared sensitive in Terraform; `value` only in tfward's `sensitive`.
        vars={"secret": {"from_file": "secret.txt"}, "value": listed},
        sensitive=["value"],
    )
    config = write_config(tmp_path, [ws])
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo", operation="plan")
        run = await api.wait(run["id"], "planned_and_finished")
        response = await api.http.get(f"/api/v1/runs/{run['id']}/plan")
        stored = await daemon.store.read(lambda c: artifacts.get_plan_json(c, run["id"]))
        found = await facts(daemon, run["id"])
    assert response.status_code == 200
    plan = response.json()
    assert plan["variables"]["secret"]["value"] == "***"
    assert plan["variables"]["value"]["value"] == "***"
    changes = {rc["address"]: rc["change"] for rc in plan["resource_changes"]}
    assert changes["demo_thing.secret"]["after"]["value"] == "***"
    assert changes["demo_thing.this[0]"]["after"]["name"] == "demo-0"
    for secret in (declared, listed):
        assert secret not in response.text
        assert secret.encode() not in stored
        assert secret not in found["log"]


async def test_a_referenced_module_input_stays_out_of_the_stored_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "mod-s3cret"
    monkeypatch.setenv("TFWARD_TEST_MODULE_PREFIX", secret)
    module = tmp_path / "modules" / "things"
    shutil.copytree(DEMO_WORKSPACE, module)
    (tmp_path / "cfg").mkdir()
    store = tmp_path / "store"
    store.mkdir()
    ws = {
        "name": "mod",
        "module": {"source": "../modules/things"},
        # The prefix is part of every thing's name, and so of its id.
        "inputs": {"prefix": {"from_env": "TFWARD_TEST_MODULE_PREFIX"}, "things": 1},
        "env": {"TFWARD_DEMO_STORE_DIR": str(store)},
        "auto_apply": True,
    }
    config = write_config(tmp_path / "cfg", [ws])
    async with running_daemon(config) as (daemon, api):
        run = await api.wait((await api.create_run("mod"))["id"], "applied")
        await api.plan_json(run["id"])  # made after the run: nothing reviewed it
        plan = await api.http.get(f"/api/v1/runs/{run['id']}/plan")
        found = await facts(daemon, run["id"])
        _, archive = await daemon.store.read(
            lambda c: artifacts.configuration_archive(c, run["configuration_version_id"])
        )
        outputs = (await api.state_versions("mod"))[0]["outputs"]
        resources = await synced_resources(daemon, api, "mod")
    assert run["resource_changes"]["add"] == 1
    assert [p.name for p in store.iterdir()][0].startswith(f"thing-{secret}-0-")
    assert secret.encode() not in gzip.decompress(archive)
    assert secret not in plan.text and secret not in found["log"]
    # Terraform refuses a sensitive value in an output not marked sensitive: this one is.
    assert outputs["main"] == {"type": outputs["main"]["type"], "sensitive": True, "value": None}
    # The inventory keeps ids, and this one was made from the secret.
    assert [r["id"].split("-")[:3] for r in resources] == [["thing", "***", "0"]]


async def synced_resources(daemon: Daemon, api: Api, name: str) -> list[dict[str, Any]]:
    """The workspace's inventory once synced; woken by the daemon's commits, not a timer."""
    with trio.fail_after(60), any_change(daemon.store) as changed:
        while True:
            if ((await api.workspace(name))["inventory"] or {}).get("status") == "synced":
                response = await api.http.get(f"/api/v1/workspaces/{name}/resources")
                return list(response.json()["data"])
            with trio.move_on_after(0.5):  # the outbox worker also wakes on time, not commits
                await changed.wait()


OTHER_TERRAFORM = Path(__file__).resolve().parents[1] / "fakes" / "other_terraform.py"


async def test_a_workspace_pinned_to_another_terraform_runs_with_it_whatever_its_text_says(
    tmp_path: Path,
) -> None:
    plain = demo_workspace(tmp_path, "plain", things=1, auto_apply=True)
    real = write_config(tmp_path, [plain]).terraform.binary
    calls = tmp_path / "other-calls.jsonl"
    pinned = demo_workspace(
        tmp_path, "pinned", things=1, auto_apply=True, terraform_binary=str(OTHER_TERRAFORM)
    )
    # It prints other words than terraform 1.0.3 for progress, plans, applies and errors.
    pinned["env"] |= {"OTHER_TF_REAL": real, "OTHER_TF_CALLS": str(calls), "OTHER_TF_REWORD": "1"}
    config = write_config(tmp_path, [plain, pinned])
    assert config.workspace("pinned").terraform_binary == str(OTHER_TERRAFORM)
    assert config.workspace("plain").terraform_binary == real

    def commands() -> list[str]:
        lines = calls.read_text().splitlines() if calls.exists() else []
        return [json.loads(line)["args"][0] for line in lines]

    async with running_daemon(config) as (daemon, api):
        first = await api.wait((await api.create_run("pinned"))["id"], "applied")
        # Nothing reviews this auto-applied plan: `show -json` runs after the run, with the
        # workspace's binary too.
        await api.plan_json(first["id"])
        assert commands() == ["init", "plan", "apply", "show"]
        log = await api.logs(first["id"])
        assert "Applied successfully." in log and "Apply complete!" not in log
        first = await api.run(first["id"])
        assert first["resource_changes"]["add"] == 1  # from the plan JSON, not the text
        await api.wait((await api.create_run("plain"))["id"], "applied")
        assert len(commands()) == 4  # the other workspace kept the [terraform] binary

        again = await api.wait((await api.create_run("pinned"))["id"], "planned_and_finished")
        assert "init reused" in await api.logs(again["id"])
        # Back to the [terraform] binary: the kept init was made by another one, so init runs.
        config.path.write_text(config.path.read_text().replace(f'"{OTHER_TERRAFORM}"', f'"{real}"'))
        assert await daemon.reload()
        assert daemon.config.workspace("pinned").terraform_binary == real
        after = await api.wait((await api.create_run("pinned"))["id"], "planned_and_finished")
        assert "init reused" not in await api.logs(after["id"])
        assert len(commands()) == 6  # plan and show of `again` (its init was reused)
