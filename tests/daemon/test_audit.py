"""The audit trail through a real daemon (tfward/daemon/api/audited.py, routes_audit.py,
store/audit.py): every admin action — force-unlock, force-cancel, state rollback, raw state
download, outbox retry, release create and cancel, config reload — is recorded with the token
name, what it was done to and the outcome, refusals included; only an admin reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio
from harness import demo_workspace, running_daemon, toml_value
from receiver import followups_config

from tfward.config import Config, load_config
from tfward.config.tokens import token_sha256
from tfward.daemon.service import Daemon

TOKENS = {"ops": ("admin", "tfw_audit-ops-admin"), "ci": ("apply", "tfw_audit-ci-apply")}
# A hook that hangs, ignoring SIGINT, while the marker file exists: a run to force-cancel.
HANG = "if [ -e {marker} ]; then trap '' INT; sleep 300; fi"


def audit_config(tmp_path: Path) -> Config:
    hang = {"pre_plan": [HANG.format(marker=tmp_path / "hang")]}
    workspaces = [
        demo_workspace(tmp_path, "demo", things=1, auto_apply=True, hooks=hang,
                       notifications=["down"]),  # fmt: skip
        # The release's run hangs until cancelled, so the release is still running then.
        demo_workspace(tmp_path, "rel", things=1, hooks={"pre_plan": ["sleep 300"]}),
    ]
    # Nothing listens on port 1: the one delivery attempt fails and its row is dead at once.
    down = {"name": "down", "type": "generic", "url": "http://127.0.0.1:1/hook", "retries": 0}
    config = followups_config(
        tmp_path, workspaces, [down], terraform={"cancel_grace": "3s"}
    )
    text = config.path.read_text() + "\n[releases]\nenabled = true\n"
    for name, (role, token) in TOKENS.items():
        text += f"\n[[api_token]]\nname = {toml_value(name)}\nrole = {toml_value(role)}\n"
        text += f"sha256 = {toml_value(token_sha256(token))}\n"
    config.path.write_text(text)
    return load_config(config.path)


def client(daemon: Daemon, who: str) -> httpx.AsyncClient:
    token = TOKENS[who][1]
    return httpx.AsyncClient(
        base_url=daemon.addresses[0], headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


async def test_every_admin_action_is_in_the_audit_trail_with_the_token_name(
    tmp_path: Path,
) -> None:
    config = audit_config(tmp_path)
    async with running_daemon(config) as (daemon, _):
        async with client(daemon, "ops") as ops, client(daemon, "ci") as ci:
            await _states_and_locks(ops, ci)
            await _force_cancel(tmp_path, ops, ci)
            await _outbox(ops)
            await _releases(ops)
            assert await daemon.reload()
            config.path.write_text(config.path.read_text() + "\n[nonsense]\n")
            assert not await daemon.reload()
            trail = (await ops.get("/api/v1/audit", params={"limit": 1000})).json()["data"]
            refused_reader = await ci.get("/api/v1/audit")
    assert refused_reader.status_code == 403
    seen = [(e["actor"], e["action"], e["outcome"]) for e in reversed(trail)]
    assert seen == [
        ("ops", "state_rollback", "ok"),
        ("ops", "state_rollback", "refused"),
        ("ops", "state_download", "ok"),
        ("ops", "state_download", "refused"),
        ("ops", "force_unlock", "ok"),
        ("ops", "force_unlock", "refused"),
        ("ops", "force_cancel", "ok"),
        ("ops", "force_cancel", "refused"),
        ("ops", "outbox_retry", "ok"),
        ("ops", "outbox_retry", "refused"),
        ("ops", "release_create", "ok"),
        ("ops", "release_create", "refused"),
        ("ops", "release_cancel", "ok"),
        ("ops", "release_cancel", "refused"),
        ("signal", "config_reload", "ok"),
        ("signal", "config_reload", "refused"),
    ]
    by_action = {(e["action"], e["outcome"]): e for e in trail}
    unlocked = by_action[("force_unlock", "ok")]
    assert unlocked["target"] == "workspace demo"
    assert unlocked["detail"]["lock"]["locked_by"] == "ci"
    assert by_action[("force_unlock", "refused")]["reason"] == (
        "workspace demo is not locked: there is nothing to force-unlock"
    )
    assert "not found" in by_action[("state_download", "refused")]["reason"]
    assert "nonsense: unknown key" in by_action[("config_reload", "refused")]["reason"]
    assert by_action[("release_create", "ok")]["target"].startswith("release rel-")
    assert all(e["created_at"].endswith("Z") for e in trail)


async def _states_and_locks(ops: httpx.AsyncClient, ci: httpx.AsyncClient) -> None:
    """Two state versions (an apply, then a destroy); roll back to the first (and to one that
    does not exist), download it (and one that does not exist); force-unlock a user's lock,
    then force-unlock the unlocked workspace."""
    first = await _run(ci, "demo", "applied")
    await _run(ci, "demo", "applied", operation="destroy")
    versions = (await ops.get("/api/v1/workspaces/demo/state-versions")).json()["data"]
    old = next(v["id"] for v in versions if v["run_id"] == first["id"])
    rollback = "/api/v1/workspaces/demo/state-versions/{}/rollback"
    assert (await ops.post(rollback.format(old))).status_code == 201
    assert (await ops.post(rollback.format("sv-nope"))).status_code == 404
    assert (await ops.get(f"/api/v1/state-versions/{old}/download")).status_code == 200
    assert (await ops.get("/api/v1/state-versions/sv-nope/download")).status_code == 404
    assert (await ci.post("/api/v1/workspaces/demo/actions/lock")).status_code == 200
    force = "/api/v1/workspaces/demo/actions/force-unlock"
    assert (await ops.post(force)).status_code == 200
    refused = await ops.post(force)
    assert refused.status_code == 409 and "is not locked" in refused.text


async def _force_cancel(tmp_path: Path, ops: httpx.AsyncClient, ci: httpx.AsyncClient) -> None:
    """A run hanging in a hook that ignores SIGINT: cancel, force-cancel; then again (refused:
    the run has ended)."""
    (tmp_path / "hang").touch()
    run = (await ci.post("/api/v1/workspaces/demo/runs", json={})).json()["data"]
    await _stage(ci, run["id"], "pre_plan")
    assert (await ci.post(f"/api/v1/runs/{run['id']}/actions/cancel")).status_code == 202
    assert (await ops.post(f"/api/v1/runs/{run['id']}/actions/force-cancel")).status_code == 202
    await _wait(ci, run["id"], "force_cancelled")
    again = await ops.post(f"/api/v1/runs/{run['id']}/actions/force-cancel")
    assert again.status_code == 409
    (tmp_path / "hang").unlink()


async def _outbox(ops: httpx.AsyncClient) -> None:
    with trio.fail_after(60):
        while not (dead := await ops.get("/api/v1/outbox", params={"status": "dead"})).json()[
            "data"
        ]:
            await trio.sleep(0.1)
    row = dead.json()["data"][0]["id"]
    assert (await ops.post(f"/api/v1/outbox/{row}/actions/retry")).status_code == 202
    assert (await ops.post("/api/v1/outbox/ob-nope/actions/retry")).status_code == 404


async def _releases(ops: httpx.AsyncClient) -> None:
    created = await ops.post("/api/v1/releases", json={"batches": [["rel"]]})
    assert created.status_code == 201, created.text
    release = created.json()["data"]["id"]
    refused = await ops.post("/api/v1/releases", json={"batches": [["nope"]]})
    assert refused.status_code == 422
    cancel = f"/api/v1/releases/{release}/actions/cancel"
    assert (await ops.post(cancel)).status_code == 202
    assert (await ops.post("/api/v1/releases/rel-nope/actions/cancel")).status_code == 404


async def _run(http: httpx.AsyncClient, ws: str, want: str, **body: Any) -> dict[str, Any]:
    run = (await http.post(f"/api/v1/workspaces/{ws}/runs", json=body)).json()["data"]
    return await _wait(http, run["id"], want)


async def _wait(http: httpx.AsyncClient, run_id: str, want: str) -> dict[str, Any]:
    with trio.fail_after(90):
        while True:
            answer = await http.get(
                f"/api/v1/runs/{run_id}", params={"wait_status": want, "wait_timeout": 30}
            )
            run: dict[str, Any] = answer.json()["data"]
            if run["status"] == want:
                return run
            assert not run["timestamps"]["finished_at"], run


async def _stage(http: httpx.AsyncClient, run_id: str, stage: str) -> None:
    with trio.fail_after(60):
        while (await http.get(f"/api/v1/runs/{run_id}")).json()["data"]["stage"] != stage:
            await trio.sleep(0.05)
