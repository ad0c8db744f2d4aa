"""Smoke: a plan_and_apply run through the daemon with real terraform."""

from __future__ import annotations

from pathlib import Path

from harness import demo_workspace, running_daemon, write_config


async def test_plan_and_apply_waits_for_confirm_then_applies(tmp_path: Path) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=2)])
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo", operation="plan_and_apply")
        run = await api.wait(run["id"], "apply_pending")
        assert run["resource_changes"] == {"add": 2, "change": 0, "destroy": 0}
        response = await api.action(run["id"], "confirm")
        assert response.status_code == 202, response.text
        run = await api.wait(run["id"], "applied")
        versions = await api.state_versions("demo")
        assert versions[0]["resource_count"] == 2
        print(await api.logs(run["id"]))
