"""Workspace kinds and their inputs: module workspaces, sensitive values."""

from __future__ import annotations

import shutil
from pathlib import Path

from harness import DEMO_WORKSPACE, demo_workspace, facts, running_daemon, write_config


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
