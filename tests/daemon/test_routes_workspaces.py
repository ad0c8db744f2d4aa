"""The workspace endpoints (daemon/api/routes_workspaces.py) over HTTP, with real terraform: the
list's entry for each workspace is exactly that workspace's own GET, whatever the workspace
holds (a person's lock, a current run and a queue, a state with a sensitive and a masked
output, drift, a synced inventory, nothing at all); the lock action answers the same view."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import Api, bearer, demo_workspace, running_daemon, until, with_tokens, write_config

from tfward.daemon.service import Daemon
from tfward.ids import now
from tfward.store import drift
from tfward.store import workspaces as ws_store

SECRET = "tfw-wslist-secret-5d0e"
OUTPUTS_TF = """
output "password" {
  value     = "pw-${var.prefix}"
  sensitive = true
}

# Not marked sensitive by the user: tfward masks the secret in it.
output "echo" {
  value = "hello ${var.value}"
}
"""


async def record_drift(daemon: Daemon, name: str, plan_id: str, addresses: list[str]) -> None:
    """The finished plan `plan_id` of `name` recorded as a drift check that found `addresses`
    (through the store function a check's run calls: a real check would need drift made behind
    terraform's back and a scheduler that keeps queueing checks while the test compares)."""

    def tx(conn: Any) -> None:
        ws_id = ws_store.workspace_id(conn, name)
        assert drift.record_check(conn, ws_id, name, plan_id, addresses, now())

    await daemon.store.write(tx)


async def listed(api: Api) -> dict[str, dict[str, Any]]:
    response = await api.http.get("/api/v1/workspaces")
    assert response.status_code == 200, response.text
    return {entry["name"]: entry for entry in response.json()["data"]}


async def test_the_lists_entry_for_each_workspace_is_exactly_its_own_get(tmp_path: Path) -> None:
    workspaces = [
        demo_workspace(tmp_path, "busy", things=1),
        demo_workspace(tmp_path, "drifted", things=1),
        demo_workspace(tmp_path, "locked", things=1),
        demo_workspace(tmp_path, "never", things=1),
        demo_workspace(tmp_path, "secret", things=1, extra_tf=OUTPUTS_TF, auto_apply=True,
                       vars={"value": SECRET}, sensitive=["value"]),
    ]  # fmt: skip
    config = with_tokens(write_config(tmp_path, workspaces), ann="admin")
    async with running_daemon(config) as (daemon, api):
        api.http.headers.update(bearer("ann", "admin"))
        locked = await api.http.post(
            "/api/v1/workspaces/locked/actions/lock", json={"reason": "freeze"}
        )
        assert locked.status_code == 200, locked.text
        applied = await api.create_run("secret")
        plan = await api.create_run("drifted", operation="plan")
        current = await api.create_run("busy")
        await api.wait(current["id"], "apply_pending")
        queued = [(await api.create_run("busy"))["id"] for _ in range(2)]
        await api.wait(applied["id"], "applied")
        await api.wait(plan["id"], "planned_and_finished")
        await record_drift(daemon, "drifted", plan["id"], ["demo_thing.this[0]"])

        async def synced() -> bool:
            inventory = (await api.workspace("secret"))["inventory"]
            return inventory is not None and inventory["status"] == "synced"

        await until(daemon, synced)
        entries = await listed(api)
        shown = {name: await api.workspace(name) for name in entries}
    assert list(entries) == ["busy", "drifted", "locked", "never", "secret"]
    for name, entry in entries.items():
        assert json.dumps(entry) == json.dumps(shown[name]), name  # the same keys in order too
    assert json.dumps(locked.json()["data"]) == json.dumps(entries["locked"])
    assert (entries["locked"]["lock"]["locked_by"], entries["locked"]["lock"]["reason"]) == (
        "ann", "freeze")  # fmt: skip
    busy = entries["busy"]
    assert busy["current_run"]["id"] == current["id"] and busy["queued_runs"] == len(queued)
    assert busy["lock"]["run_id"] == current["id"]
    outputs = entries["secret"]["latest_state_version"]["outputs"]
    assert outputs["password"] == {"type": "string", "sensitive": True, "value": None}
    assert outputs["echo"]["value"].startswith("hello ") and SECRET not in json.dumps(entries)
    assert entries["secret"]["inventory"]["state_version_id"] == (
        entries["secret"]["latest_state_version"]["id"])  # fmt: skip
    assert entries["drifted"]["drift"]["addresses"] == ["demo_thing.this[0]"]
    assert entries["drifted"]["drift"]["check_run_id"] == plan["id"]
    never = entries["never"]
    assert (never["lock"], never["current_run"], never["queued_runs"]) == (None, None, 0)
    assert (never["latest_state_version"], never["inventory"]) == (None, None)
    assert never["drift"] == {"drifted": False, "addresses": [], "checked_at": None}
    assert len({entry["owner"] for entry in entries.values()}) == 1  # this one daemon
    assert entries["never"]["owner"] is not None
