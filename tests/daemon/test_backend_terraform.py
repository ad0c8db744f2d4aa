"""Terraform run by hand against a workspace, through the http backend (routes_backend.py),
with the bundled terraform 1.0.3 as the client and the backend block the README shows: it
takes the workspace lock while a daemon run waits, writes a new state version and unlocks,
and the run then plans on that state; while a run holds the lock terraform cannot take it
and says who holds it, and its force-unlock cannot release it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio
from harness import bearer, running_daemon, token_for, with_tokens, write_config
from statebackend import Terraform, hand_directory, outputs_workspace, read_until

from tfward.config import Config
from tfward.store import runs as run_store

BY_HAND = 'output "greeting" {\n  value = "by hand"\n}\n'
W = "/api/v1/workspaces/w"
OPS, READER = bearer("ops", "apply"), bearer("reader", "read")


def config_for(tmp_path: Path, *, auto_apply: bool) -> Config:
    workspace = outputs_workspace(tmp_path, "w", {"greeting": "from tfward"}, auto_apply=auto_apply)
    return with_tokens(write_config(tmp_path, [workspace]), ops="apply", reader="read")


async def run_of(http: httpx.AsyncClient, run_id: str, status: str) -> dict[str, Any]:
    with trio.fail_after(120):
        response = await http.get(
            f"/api/v1/runs/{run_id}",
            params={"wait_status": status, "wait_timeout": 90},
            headers=READER,
        )
    run: dict[str, Any] = response.json()["data"]
    return run


async def workspace(http: httpx.AsyncClient) -> dict[str, Any]:
    found: dict[str, Any] = (await http.get(W, headers=READER)).json()["data"]
    return found


async def test_terraform_applied_by_hand_holds_the_lock_a_queued_run_waits_then_plans_on_it(
    tmp_path: Path,
) -> None:
    config = config_for(tmp_path, auto_apply=True)
    async with running_daemon(config) as (daemon, _):
        url = daemon.addresses[0]
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            first = (await http.post(f"{W}/runs", json={}, headers=OPS)).json()["data"]
            assert (await run_of(http, first["id"], "applied"))["status"] == "applied"
            tf = Terraform(
                config.terraform.binary,
                hand_directory(tmp_path, url, "w", BY_HAND),
                token_for("ops", "apply"),
            )
            init = await tf("init", "-input=false")
            assert init.code == 0, init.output

            apply = await tf.start("apply")
            seen = bytearray()
            with trio.fail_after(120):
                await read_until(apply, b"Enter a value:", seen)
            lock = (await workspace(http))["lock"]
            assert (lock["locked_by"], lock["operation"]) == ("ops", "OperationTypeApply")
            assert lock["run_id"] is None and lock["lock_id"]

            queued = (await http.post(f"{W}/runs", json={}, headers=OPS)).json()["data"]
            # Time enough for a run that did not wait to start planning (it never may).
            with trio.fail_after(30):
                response = await http.get(
                    f"/api/v1/runs/{queued['id']}",
                    params={"wait_status": "planning", "wait_timeout": 2},
                    headers=READER,
                )
            waiting = response.json()["data"]
            assert waiting["status"] == "pending"
            assert (await workspace(http))["queued_runs"] == 1

            assert apply.stdin is not None and apply.stdout is not None
            await apply.stdin.send_all(b"yes\n")
            with trio.fail_after(120):
                while chunk := await apply.stdout.receive_some(65536):
                    seen += chunk
                assert await apply.wait() == 0, seen.decode()
            assert b"Apply complete!" in seen

            ran = await run_of(http, queued["id"], "applied")
            assert ran["status"] == "applied", ran
            versions = (await http.get(f"{W}/state-versions", headers=READER)).json()["data"]
            assert [(v["kind"], v["created_by"]) for v in versions] == [
                ("apply", None),
                ("http-backend", "ops"),
                ("apply", None),
            ]
            by_hand = versions[1]
            assert by_hand["outputs"]["greeting"]["value"] == "by hand"
            assert by_hand["serial"] == versions[2]["serial"] + 1
            assert by_hand["lineage"] == versions[2]["lineage"]
            planned_on = await daemon.store.read(
                lambda c: run_store.planned_state_version(c, queued["id"])
            )
            assert planned_on == by_hand["id"]
            assert versions[0]["outputs"]["greeting"]["value"] == "from tfward"
            assert (await workspace(http))["lock"] is None


async def test_while_a_run_holds_the_lock_terraform_names_it_and_cannot_force_unlock_it(
    tmp_path: Path,
) -> None:
    config = config_for(tmp_path, auto_apply=False)
    async with running_daemon(config) as (daemon, _):
        url = daemon.addresses[0]
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            run = (await http.post(f"{W}/runs", json={}, headers=OPS)).json()["data"]
            assert (await run_of(http, run["id"], "apply_pending"))["status"] == "apply_pending"
            tf = Terraform(
                config.terraform.binary,
                hand_directory(tmp_path, url, "w", BY_HAND),
                token_for("ops", "apply"),
            )
            assert (await tf("init", "-input=false")).code == 0

            plan = await tf("plan", "-input=false")
            assert plan.code == 1, plan.output
            assert "Error acquiring the state lock" in plan.output
            assert f"HTTP remote state already locked: ID={run['id']}" in plan.output

            forced = await tf("force-unlock", "-force", "not-the-lock-id")
            assert forced.code == 1, forced.output
            assert "Unexpected HTTP response code 409" in forced.output
            lock = (await workspace(http))["lock"]
            assert lock["run_id"] == run["id"]

            # Without locking terraform reads the state (an empty one: nothing applied yet).
            unlocked = await tf("plan", "-input=false", "-lock=false")
            assert unlocked.code == 0, unlocked.output
            confirm = await http.post(f"/api/v1/runs/{run['id']}/actions/confirm", headers=OPS)
            assert confirm.status_code == 202
            assert (await run_of(http, run["id"], "applied"))["status"] == "applied"
