"""Terraform's `http` backend on a workspace's state (daemon/api/routes_backend.py), spoken to
over real HTTP the way terraform 1.0.3 speaks it (its requests are in tests/statebackend.py;
tests/daemon/test_backend_terraform.py drives real terraform): the state as stored, the
serial, lineage and lock rules of a POST, LOCK/UNLOCK as the workspace lock, roles through
basic auth, and a run's remote-state credential reading only what it is granted."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from harness import bearer, running_daemon, token_for, with_tokens, write_config
from statebackend import basic, lock_info, outputs_workspace, state_doc

from tfward.actors import backups
from tfward.actors.remote_state import new_token
from tfward.config import Config
from tfward.config.tokens import token_sha256
from tfward.ids import now
from tfward.store import credentials

W = "/api/v1/workspaces/w"
LINEAGE = "6a72abb9-3d00-e825-c58e-caa8878a2fa7"


def auth(name: str, role: str) -> dict[str, str]:
    """Basic auth with the API token of `name` (what terraform sends)."""
    return basic(token_for(name, role), user="anything")


OPS, OPS2 = auth("ops", "apply"), auth("ops2", "apply")
READER, ROOT = auth("reader", "read"), auth("root", "admin")


@pytest.fixture
def config(tmp_path: Path) -> Config:
    base = write_config(
        tmp_path,
        [
            outputs_workspace(tmp_path, "w", {"greeting": "hello"}),
            outputs_workspace(tmp_path, "other", {"x": "y"}, remote_state_from=["w"]),
        ],
    )
    return with_tokens(base, ops="apply", ops2="apply", reader="read", root="admin")


def client(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=60)


async def versions(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await http.get(f"{W}/state-versions", headers=READER)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def lock_of(http: httpx.AsyncClient, workspace: str = "w") -> dict[str, Any] | None:
    response = await http.get(f"/api/v1/workspaces/{workspace}", headers=READER)
    lock: dict[str, Any] | None = response.json()["data"]["lock"]
    return lock


async def test_an_empty_workspace_has_no_state_and_a_posted_one_comes_back_byte_for_byte(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, _), client(daemon.addresses[0]) as http:
        empty = await http.get(f"{W}/state", headers=READER)
        assert (empty.status_code, empty.content) == (204, b"")
        raw = state_doc(1, LINEAGE, {"greeting": "by hand"}).replace(b"  ", b"\t")
        md5 = base64.b64encode(hashlib.md5(raw).digest()).decode()
        posted = await http.post(f"{W}/state", content=raw, headers={**OPS, "Content-MD5": md5})
        assert posted.status_code == 200, posted.text
        version = posted.json()["data"]
        assert (version["kind"], version["created_by"], version["serial"]) == (
            "http-backend",
            "ops",
            1,
        )
        assert version["outputs"]["greeting"]["value"] == "by hand"
        got = await http.get(f"{W}/state", headers=READER)
        assert got.status_code == 200 and got.content == raw
        assert got.headers["content-type"] == "application/json"
        assert [v["created_by"] for v in await versions(http)] == ["ops"]
        found = list((config.daemon.data_dir / "state-backups" / "w").iterdir())
        assert [backups.read(p, daemon.store.sealer) for p in found] == [raw]  # sealed


async def test_a_state_that_does_not_continue_the_current_one_is_refused_and_nothing_stored(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, _), client(daemon.addresses[0]) as http:
        for serial in (1, 3):
            ok = await http.post(f"{W}/state", content=state_doc(serial, LINEAGE), headers=OPS)
            assert ok.status_code == 200, ok.text
        backups = config.daemon.data_dir / "state-backups" / "w"
        kept = sorted(p.name for p in backups.iterdir())
        older = await http.post(f"{W}/state", content=state_doc(2, LINEAGE), headers=OPS)
        assert older.status_code == 409
        assert older.json()["error"]["message"] == (
            "state serial 2 is not newer than the current serial 3"
        )
        foreign = await http.post(f"{W}/state", content=state_doc(9, "another"), headers=OPS)
        assert foreign.status_code == 409
        assert "lineage another differs from the workspace's" in foreign.text
        again = await http.put(f"{W}/state", content=state_doc(3, LINEAGE), headers=OPS)
        assert again.status_code == 200 and again.json()["data"]["serial"] == 3
        assert [v["serial"] for v in await versions(http)] == [3, 1]
        assert sorted(p.name for p in backups.iterdir()) == kept


async def test_bad_requests_are_refused_with_a_clear_400(config: Config) -> None:
    async with running_daemon(config) as (daemon, _), client(daemon.addresses[0]) as http:
        for method, body, headers, says in [
            ("POST", b"not json", {}, "not a terraform state file"),
            ("POST", state_doc(1, LINEAGE), {"Content-MD5": "AAAA"}, "Content-MD5 AAAA"),
            ("LOCK", b"[]", {}, "must be a JSON object"),
            ("LOCK", b'{"Who": "me"}', {}, 'needs "ID"'),
            ("LOCK", b'{"ID": "x", "Who": 3}', {}, '"Who" must be a string'),
            ("UNLOCK", b"{nope", {}, "not terraform's lock info JSON"),
            ("UNLOCK", b'{"ID": ""}', {}, 'needs "ID"'),
        ]:
            answer = await http.request(
                method, f"{W}/state", content=body, headers={**OPS, **headers}
            )
            assert answer.status_code == 400, (method, body, answer.text)
            assert says in answer.json()["error"]["message"], answer.text
        unknown = await http.get("/api/v1/workspaces/nope/state", headers=READER)
        assert unknown.status_code == 404
        assert (await versions(http)) == [] and await lock_of(http) is None


async def test_basic_auth_carries_the_token_and_roles_decide_what_it_may_do(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, _), client(daemon.addresses[0]) as http:
        anonymous = await http.get(f"{W}/state")
        assert anonymous.status_code == 401
        assert 'Basic realm="tfward"' in anonymous.headers["WWW-Authenticate"]
        forged = await http.get(f"{W}/state", headers=basic("tfw_forged"))
        assert forged.status_code == 401
        malformed = await http.get(f"{W}/state", headers={"Authorization": "Basic %%%"})
        assert malformed.status_code == 401 and "malformed" in malformed.text
        no_password = await http.get(f"{W}/state", headers=basic("", user="ops"))
        assert no_password.status_code == 401
        for method, body in (("POST", state_doc(1, LINEAGE)), ("LOCK", b'{"ID": "a"}')):
            refused = await http.request(method, f"{W}/state", content=body, headers=READER)
            assert refused.status_code == 403 and "needs apply" in refused.text
        # Basic auth is one way to send a token anywhere; a bearer token works here too.
        listed = await http.get("/api/v1/workspaces", headers=READER)
        assert listed.status_code == 200
        posted = await http.post(
            f"{W}/state", content=state_doc(1, LINEAGE), headers=bearer("ops", "apply")
        )
        assert posted.status_code == 200


async def test_lock_is_the_workspace_lock_held_under_terraforms_lock_id(config: Config) -> None:
    async with running_daemon(config) as (daemon, _), client(daemon.addresses[0]) as http:
        taken = await http.request("LOCK", f"{W}/state", json=lock_info("id-a"), headers=OPS)
        assert taken.status_code == 200 and taken.json()["ID"] == "id-a"
        lock = await lock_of(http)
        assert lock is not None
        assert (lock["run_id"], lock["locked_by"], lock["lock_id"]) == (None, "ops", "id-a")
        assert (lock["operation"], lock["who"]) == ("OperationTypeApply", "ops@build-host")
        assert lock["message"] == "The workspace is locked by User ops"
        again = await http.request("LOCK", f"{W}/state", json=lock_info("id-a"), headers=OPS)
        assert again.status_code == 200
        for headers in (OPS, OPS2):  # another terraform, of the same user or another one
            busy = await http.request("LOCK", f"{W}/state", json=lock_info("id-b"), headers=headers)
            assert busy.status_code == 423
            assert busy.json()["ID"] == "id-a" and busy.json()["Who"] == "ops@build-host"
        api_lock = await http.post(f"{W}/actions/lock", headers=bearer("ops2", "apply"))
        assert api_lock.status_code == 409 and "locked by User ops" in api_lock.text

        for lock_id in (None, "id-b"):
            params = {"ID": lock_id} if lock_id else {}
            body = state_doc(1, LINEAGE)
            refused = await http.post(f"{W}/state", content=body, params=params, headers=OPS)
            assert refused.status_code == 409 and "only the holder may write" in refused.text
        written = await http.post(
            f"{W}/state", content=state_doc(1, LINEAGE), params={"ID": "id-a"}, headers=OPS2
        )
        assert written.status_code == 200 and written.json()["data"]["created_by"] == "ops2"

        wrong = await http.request("UNLOCK", f"{W}/state", json=lock_info("id-b"), headers=OPS)
        assert wrong.status_code == 409 and "lock ID id-b is not its lock ID" in wrong.text
        blank = await http.request("UNLOCK", f"{W}/state", headers=OPS)
        assert blank.status_code == 409 and "names no lock ID" in blank.text
        assert (await lock_of(http) or {}).get("lock_id") == "id-a"
        released = await http.request("UNLOCK", f"{W}/state", json=lock_info("id-a"), headers=OPS)
        assert released.status_code == 200 and await lock_of(http) is None
        twice = await http.request("UNLOCK", f"{W}/state", json=lock_info("id-a"), headers=OPS)
        assert twice.status_code == 200
        stale = await http.post(
            f"{W}/state", content=state_doc(2, LINEAGE), params={"ID": "id-a"}, headers=OPS
        )
        assert stale.status_code == 409 and "not locked under lock ID id-a" in stale.text


async def test_the_alternative_lock_address_and_methods_take_the_same_lock(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, _), client(daemon.addresses[0]) as http:
        for lock_method, unlock_method in (("POST", "DELETE"), ("PUT", "UNLOCK")):
            taken = await http.request(
                lock_method, f"{W}/state/lock", json=lock_info("alt"), headers=OPS
            )
            assert taken.status_code == 200, taken.text
            assert (await lock_of(http) or {}).get("lock_id") == "alt"
            busy = await http.request("LOCK", f"{W}/state", json=lock_info("x"), headers=OPS)
            assert busy.status_code == 423
            released = await http.request(
                unlock_method, f"{W}/state/lock", json=lock_info("alt"), headers=OPS
            )
            assert released.status_code == 200 and await lock_of(http) is None


async def test_a_lock_held_by_a_run_or_a_user_answers_423_naming_the_holder(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, api), client(daemon.addresses[0]) as http:
        created = await http.post(f"{W}/runs", json={}, headers=bearer("ops", "apply"))
        run_id = created.json()["data"]["id"]
        await wait(http, run_id, "apply_pending")
        busy = await http.request("LOCK", f"{W}/state", json=lock_info("mine"), headers=OPS)
        assert busy.status_code == 423
        holder = busy.json()
        assert holder["ID"] == run_id
        assert holder["Info"] == f"The workspace is locked by Run {run_id} (plan awaiting apply)"
        written = await http.post(f"{W}/state", content=state_doc(1, LINEAGE), headers=OPS)
        assert written.status_code == 409 and f"locked by Run {run_id}" in written.text
        discard = await http.post(
            f"/api/v1/runs/{run_id}/actions/discard", headers=bearer("ops", "apply")
        )
        assert discard.status_code == 202
        await wait(http, run_id, "discarded")

        await http.post(
            f"{W}/actions/lock", json={"reason": "freeze"}, headers=bearer("root", "admin")
        )
        busy = await http.request("LOCK", f"{W}/state", json=lock_info("mine"), headers=OPS)
        assert busy.status_code == 423
        assert busy.json()["ID"] == "user:root"
        assert busy.json()["Info"] == "The workspace is locked by User root (freeze)"


async def test_runs_queued_behind_a_backend_lock_start_once_it_is_force_unlocked(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, _), client(daemon.addresses[0]) as http:
        taken = await http.request("LOCK", f"{W}/state", json=lock_info("held"), headers=OPS)
        assert taken.status_code == 200
        created = await http.post(f"{W}/runs", json={}, headers=bearer("ops", "apply"))
        run_id = created.json()["data"]["id"]
        # Time enough for a run that did not wait to start planning (it never may).
        waited = await wait(http, run_id, "planning", timeout=2)
        assert waited["status"] == "pending"
        unlocking_at = now()  # before: the run may start before the answer arrives
        forced = await http.post(f"{W}/actions/force-unlock", headers=bearer("root", "admin"))
        assert forced.status_code == 200 and forced.json()["data"]["lock"] is None
        run = await wait(http, run_id, "apply_pending")
        assert run["status"] == "apply_pending"
        started = datetime.fromisoformat(run["timestamps"]["started_at"].replace("Z", "+00:00"))
        assert started > unlocking_at


async def test_a_run_credential_reads_only_the_state_it_is_granted_and_dies_with_the_run(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, _), client(daemon.addresses[0]) as http:
        await http.post(f"{W}/state", content=state_doc(1, LINEAGE, {"a": "b"}), headers=OPS)
        # A run of `other` that waits (its workspace is locked), holding a credential.
        other = "/api/v1/workspaces/other"
        await http.post(f"{other}/actions/lock", headers=bearer("root", "admin"))
        created = await http.post(f"{other}/runs", json={}, headers=bearer("ops", "apply"))
        run_id = created.json()["data"]["id"]
        token = new_token()
        ws_id = daemon.rt.workspace_ids["other"]
        await daemon.store.write(
            lambda c: credentials.issue(
                c, token_sha256(token), run_id=run_id, ws_id=ws_id, scope=["w"], when=now()
            )
        )
        granted = await http.get(f"{W}/state", headers=basic(token, user=run_id))
        assert granted.status_code == 200 and b'"b"' in granted.content
        own = await http.get(f"{other}/state", headers=basic(token))
        assert own.status_code == 403
        assert own.json()["error"]["message"] == (
            f"run {run_id} of workspace other may not read the state of workspace 'other': "
            "it is not in remote_state_from (granted: w)"
        )
        for method, path in (
            ("GET", "/api/v1/workspaces"),
            ("GET", f"{W}/state-versions"),
            ("POST", f"{W}/state"),
            ("LOCK", f"{W}/state"),
        ):
            answer = await http.request(method, path, headers=basic(token))
            assert answer.status_code == 401, (method, path, answer.text)
        cancelled = await http.post(
            f"/api/v1/runs/{run_id}/actions/cancel", headers=bearer("ops", "apply")
        )
        assert cancelled.status_code == 202
        await wait(http, run_id, "cancelled")
        dead = await http.get(f"{W}/state", headers=basic(token))
        assert dead.status_code == 401


async def wait(
    http: httpx.AsyncClient, run_id: str, status: str, timeout: float = 60
) -> dict[str, Any]:
    """Long-poll the run until `status`, its end, or `timeout`; the run as it is then."""
    with trio.fail_after(timeout + 30):
        response = await http.get(
            f"/api/v1/runs/{run_id}",
            params={"wait_status": status, "wait_timeout": timeout},
            headers=READER,
        )
    run: dict[str, Any] = response.json()["data"]
    return run


async def test_a_daemon_start_revokes_every_credential_an_earlier_daemon_handed_out(
    config: Config,
) -> None:
    token = new_token()
    async with running_daemon(config) as (daemon, _), client(daemon.addresses[0]) as http:
        await http.post(f"{W}/state", content=state_doc(1, LINEAGE), headers=OPS)
        other = "/api/v1/workspaces/other"
        await http.post(f"{other}/actions/lock", headers=bearer("root", "admin"))
        created = await http.post(f"{other}/runs", json={}, headers=bearer("ops", "apply"))
        run_id = created.json()["data"]["id"]
        ws_id = daemon.rt.workspace_ids["other"]
        await daemon.store.write(
            lambda c: credentials.issue(
                c, token_sha256(token), run_id=run_id, ws_id=ws_id, scope=["w"], when=now()
            )
        )
        assert (await http.get(f"{W}/state", headers=basic(token))).status_code == 200
    # The run is still queued (its workspace locked), but no terraform of that daemon runs.
    async with running_daemon(config) as (daemon, _), client(daemon.addresses[0]) as http:
        assert (await wait(http, run_id, "pending", timeout=0))["status"] == "pending"
        assert (await http.get(f"{W}/state", headers=basic(token))).status_code == 401


async def test_a_state_larger_than_the_apis_json_bodies_is_taken(config: Config) -> None:
    big = state_doc(1, LINEAGE, {"blob": "x" * (5 * 1024 * 1024)})  # the API's bodies: 4 MB
    async with running_daemon(config) as (daemon, _), client(daemon.addresses[0]) as http:
        posted = await http.post(f"{W}/state", content=big, headers=OPS)
        assert posted.status_code == 200, posted.text[:200]
        assert (await http.get(f"{W}/state", headers=READER)).content == big
        # (A blocking client: the daemon answers before the body is sent whole.)
        elsewhere = await trio.to_thread.run_sync(
            lambda: httpx.post(
                f"{daemon.addresses[0]}{W}/actions/lock", content=big, headers=OPS, timeout=60
            )
        )
        assert elsewhere.status_code == 413
