"""Runs of an older configuration version (`configuration_version_id` on
`POST /api/v1/workspaces/{name}/runs`): real daemon, real terraform, the demo provider."""

from __future__ import annotations

from pathlib import Path

from harness import demo_workspace, facts, running_daemon, state_addresses, write_config

EXTRA = 'resource "demo_thing" "extra" {\n  name = "extra"\n}\n'


async def test_a_run_of_an_older_configuration_version_applies_exactly_that_code(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1, auto_apply=True)])
    async with running_daemon(config) as (daemon, api):
        first = await api.wait((await api.create_run("demo"))["id"], "applied")
        (tmp_path / "demo" / "extra.tf").write_text(EXTRA)  # the source moves on
        second = await api.wait((await api.create_run("demo"))["id"], "applied")
        assert second["configuration_version_id"] != first["configuration_version_id"]

        created = await api.create_run(
            "demo", configuration_version_id=first["configuration_version_id"]
        )
        assert created["configuration_version_id"] == first["configuration_version_id"]
        assert created["configuration_pinned"] is True
        back = await api.wait(created["id"], "applied")
        versions = await api.http.get("/api/v1/workspaces/demo/configuration-versions")
    assert back["configuration_version_id"] == first["configuration_version_id"]
    assert back["configuration_sha256"] == first["configuration_sha256"] is not None
    assert (first["configuration_pinned"], second["configuration_pinned"]) == (False, False)
    assert back["resource_changes"] == {"add": 0, "change": 0, "destroy": 1}
    found = await facts(daemon, back["id"])
    assert state_addresses(daemon, found["states"][0].id) == ["demo_thing.this[0]"]
    assert f"configuration {first['configuration_sha256'][:12]} (pinned: " in found["log"]
    # No new snapshot was taken: the workspace still has its two versions.
    assert len(versions.json()["data"]) == 2


async def test_a_configuration_version_that_is_not_the_workspaces_own_is_refused_with_422(
    tmp_path: Path,
) -> None:
    workspaces = [demo_workspace(tmp_path, "demo", things=1), demo_workspace(tmp_path, "other")]
    config = write_config(tmp_path, workspaces)
    async with running_daemon(config) as (daemon, api):
        other = await api.create_run("other", operation="plan")
        other = await api.wait(other["id"], "planned_and_finished")
        foreign = await api.http.post(
            "/api/v1/workspaces/demo/runs",
            json={"configuration_version_id": other["configuration_version_id"]},
        )
        unknown = await api.http.post(
            "/api/v1/workspaces/demo/runs", json={"configuration_version_id": "cv-nope"}
        )
        runs = (await api.http.get("/api/v1/workspaces/demo/runs")).json()["data"]
    assert foreign.status_code == 422
    assert "is not one of workspace demo's" in foreign.json()["error"]["message"]
    assert unknown.status_code == 422
    assert unknown.json()["error"]["message"] == "configuration version cv-nope not found"
    assert runs == []
