"""The run-task endpoints over HTTP: the callback's 401 / 403 / 404 / 409 / 422 rules, what a
token may read, and tokens never stored in plain text (seeds C4, C5; docs/protocols.md)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from harness import Api, demo_workspace, running_daemon
from taskservice import Received, TaskService, callback_body, task_table, write_task_config

from tfward.daemon.service import Daemon
from tfward.ids import now
from tfward.runtasks.keys import keys_from_secret
from tfward.runtasks.tokens import TokenService


@pytest.fixture
async def task_service(nursery: trio.Nursery) -> AsyncIterator[TaskService]:
    service: TaskService = await nursery.start(TaskService().serve)
    service.behaviour.update({"one": "never", "two": "never"})
    yield service


def _config(tmp_path: Path, service: TaskService) -> Any:
    attach = [
        {"task": n, "stages": ["post_plan"], "enforcement": "advisory"} for n in ("one", "two")
    ]
    tasks = [task_table(service, n, timeout="60s") for n in ("one", "two")]
    return write_task_config(
        tmp_path, [demo_workspace(tmp_path, things=1, run_tasks=attach)], tasks
    )


LONE_SURROGATE = b'{"data": {"attributes": {"status": "passed", "message": "\\ud800"}}}'


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _two_requests(api: Api, service: TaskService) -> tuple[str, Received, Received]:
    run_id = (await api.create_run("demo"))["id"]
    received = sorted(await service.wait_for(2), key=lambda r: r.task)
    return run_id, received[0], received[1]


def _mint(daemon: Daemon, request: Received, *, key: bytes | None = None, age: float = 0) -> str:
    """A token for `request`'s result: signed with another key, or issued `age` seconds ago."""
    assert daemon.rt.run_tasks is not None
    tokens = TokenService(keys_from_secret(key)) if key else daemon.rt.run_tasks.tokens
    p = request.payload
    return tokens.issue(
        result_id=p["task_result_id"],
        run_id=p["run_id"],
        workspace_id=p["workspace_id"],
        stage=p["stage"],
        lifetime=60,
        when=now() - timedelta(seconds=age),
    ).token


async def test_callbacks_answer_as_the_protocol_says(
    tmp_path: Path, task_service: TaskService
) -> None:
    async with running_daemon(_config(tmp_path, task_service)) as (daemon, api):
        run_id, one, two = await _two_requests(api, task_service)
        url = one.payload["task_result_callback_url"]
        passed = callback_body("passed")
        huge = callback_body(
            "passed",
            outcomes=[{"attributes": {"outcome-id": "X", "body": "x" * (1024 * 1024 + 1)}}],
        )
        attempts: list[tuple[str, dict[str, str], Any, int]] = [
            ("no token", {}, passed, 401),
            ("not a JWT", _bearer("garbage"), passed, 401),
            ("forged", _bearer(_mint(daemon, one, key=b"k" * 32)), passed, 401),
            ("expired", _bearer(_mint(daemon, one, age=3600)), passed, 401),
            ("not the issued one", _bearer(_mint(daemon, one)), passed, 401),
            ("other result's", _bearer(two.token), passed, 403),
            ("not JSON", _bearer(one.token), b"{nope", 422),
            ("nested 1,000 deep", _bearer(one.token), b"[" * 1000 + b"]" * 1000, 422),
            ("nested 1,000 deep, no token", {}, b"[" * 1000 + b"]" * 1000, 401),
            ("a lone surrogate", _bearer(one.token), LONE_SURROGATE, 422),
            ("unknown status", _bearer(one.token), callback_body("done"), 422),
            ("outcome body over 1 MB", _bearer(one.token), huge, 422),
        ]
        for what, headers, body, status in attempts:
            kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
            response = await api.http.patch(url, headers=headers, **kwargs)
            assert response.status_code == status, (what, response.text)
            assert "\n" not in response.json()["error"]["message"], what
        unknown = await api.http.patch(
            url.replace(one.payload["task_result_id"], "taskrs-nope"),
            headers=_bearer(one.token),
            json=passed,
        )
        assert unknown.status_code == 404, unknown.text
        running = await api.http.post(
            url, headers=_bearer(one.token), json=callback_body("running")
        )
        assert running.status_code == 200 and running.json()["data"]["status"] == "running"
        outcome = {"outcome-id": "ID-7", "description": "under attributes", "body": "**b**"}
        done = await api.http.patch(
            url,
            headers=_bearer(one.token),
            json={
                "data": {
                    "type": "task-results",
                    "attributes": {
                        "status": "failed",
                        "message": "1 finding",
                        "outcomes": [outcome],
                    },
                }
            },
        )
        assert done.status_code == 200, done.text
        again = await api.http.patch(url, headers=_bearer(one.token), json=passed)
        assert again.status_code == 409, again.text  # final: 409 (its token is revoked too)
        other = two.payload["task_result_callback_url"]
        assert (
            await api.http.patch(other, headers=_bearer(two.token), json=passed)
        ).status_code == 200
        run = await api.wait(run_id, "apply_pending")
        shown = (
            await api.http.get(f"/api/v1/run-task-results/{one.payload['task_result_id']}")
        ).json()
        listed = await api.http.get(f"/api/v1/runs/{run_id}/task-results")
        missing = await api.http.get("/api/v1/runs/run-nope/task-results")
    assert shown["data"]["status"] == "failed" and shown["data"]["message"] == "1 finding"
    assert shown["data"]["outcomes"] == [{**outcome, "url": None, "tags": {}}]
    assert run["warnings"] == ["advisory run task at post_plan: one: failed: 1 finding"]
    assert one.token not in listed.text and two.token not in listed.text
    assert missing.status_code == 404


async def test_a_token_reads_its_runs_plan_and_nothing_after_the_result_is_final(
    tmp_path: Path, task_service: TaskService
) -> None:
    async with running_daemon(_config(tmp_path, task_service)) as (daemon, api):
        run_id, one, two = await _two_requests(api, task_service)
        plan_url = one.payload["plan_json_api_url"]
        changes_url = plan_url.replace("/plan-json", "/resource-changes")
        async with httpx.AsyncClient() as client:
            plan = await client.get(plan_url, headers=_bearer(one.token))
            changes = await client.get(changes_url, headers=_bearer(one.token))
            anonymous = await client.get(plan_url)
            crossed = await client.get(changes_url, headers=_bearer(two.token))
            await client.patch(
                one.payload["task_result_callback_url"],
                headers=_bearer(one.token),
                json=callback_body("passed"),
            )
            after = await client.get(plan_url, headers=_bearer(one.token))
            download = await client.get(
                two.payload["configuration_version_download_url"], headers=_bearer(two.token)
            )
            used = await client.get(
                one.payload["configuration_version_download_url"], headers=_bearer(one.token)
            )
        direct = (await api.http.get(f"/api/v1/runs/{run_id}/plan")).json()
    assert plan.status_code == 200 and plan.json() == direct
    assert changes.status_code == 200
    assert [c["address"] for c in changes.json()["data"]] == ["demo_thing.this[0]"]
    assert (anonymous.status_code, crossed.status_code, after.status_code) == (401, 403, 401)
    assert download.status_code == 200 and download.headers["content-type"] == "application/gzip"
    assert used.status_code == 401


async def test_the_database_never_holds_a_token_in_plain_text(
    tmp_path: Path, task_service: TaskService
) -> None:
    config = _config(tmp_path, task_service)
    async with running_daemon(config) as (daemon, api):
        run_id, one, two = await _two_requests(api, task_service)
        await api.http.patch(
            one.payload["task_result_callback_url"],
            headers=_bearer(one.token),
            json=callback_body("passed"),
        )
        # `two` is still waiting: its token exists, encrypted.
        db = config.daemon.database_url.removeprefix("sqlite:///")
        rows = _raw_rows(db)
    tokens = [one.token.encode(), two.token.encode(), b"eyJhbGciOiJIUzI1NiIs"]
    by_id = {r["id"]: r for r in rows if r["_table"] == "run_task_results"}
    assert by_id[one.payload["task_result_id"]]["token_ciphertext"] is None
    assert by_id[two.payload["task_result_id"]]["token_ciphertext"] is not None
    for row in rows:
        for value in row.values():
            blob = value if isinstance(value, bytes) else str(value).encode()
            assert not any(t in blob for t in tokens), (row["_table"], row.get("id"))
    files = [Path(db), Path(db + "-wal")]
    assert not any(t in f.read_bytes() for f in files if f.exists() for t in tokens)


def _raw_rows(path: str) -> list[dict[str, Any]]:
    """Every row of every table, read with the sqlite3 module (not through tfward)."""
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows: list[dict[str, Any]] = []
        for table in tables:
            cursor = conn.execute(f'SELECT * FROM "{table}"')
            names = [d[0] for d in cursor.description]
            rows += [{"_table": table, **dict(zip(names, r, strict=True))} for r in cursor]
        return rows
    finally:
        conn.close()
