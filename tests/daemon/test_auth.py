"""API tokens and roles against the real daemon: every endpoint refuses a missing or unknown
token (401) and a weaker role (403), except the health check and the run-task endpoints; what
a caller does is recorded under its token's name; the local admin token exists only while the
config names no token."""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import (
    ROLES,
    admin_token,
    bearer,
    demo_workspace,
    running_daemon,
    with_tokens,
    write_config,
)

from tfward.config import Config
from tfward.daemon.api.app import create_app
from tfward.daemon.web.app import is_web_page

# Every route, what each method needs. Written out by hand (not read from auth.py) so that a
# change of the daemon's table, or a route added without an entry here, fails this test.
OPEN = "open"
EXPECTED: dict[tuple[str, str], str | dict[str, str]] = {
    ("GET", "/healthz"): OPEN,
    ("GET", "/metrics"): "read",
    ("GET", "/api/v1/openapi.json"): "read",
    ("GET", "/api/v1/recovery"): "read",
    ("GET", "/api/v1/cluster"): "read",
    ("GET", "/api/v1/workspaces"): "read",
    ("GET", "/api/v1/workspaces/<name>"): "read",
    ("POST", "/api/v1/workspaces/<name>/actions/<action>"): {
        "lock": "apply",
        "unlock": "apply",
        "force-unlock": "admin",
    },
    ("POST", "/api/v1/workspaces/<name>/runs"): {"plan": "plan", "plan_and_apply": "apply",
                                                 "destroy": "apply"},  # fmt: skip
    ("GET", "/api/v1/workspaces/<name>/runs"): "read",
    ("GET", "/api/v1/runs/<run_id>"): "read",
    ("POST", "/api/v1/runs/<run_id>/actions/<action>"): {
        "confirm": "apply",
        "discard": "apply",
        "cancel": "apply",
        "force-cancel": "admin",
    },
    ("GET", "/api/v1/runs/<run_id>/plan"): "read",
    ("GET", "/api/v1/runs/<run_id>/logs"): "read",
    ("GET", "/api/v1/runs/<run_id>/events"): "read",
    ("GET", "/api/v1/events"): "read",
    ("GET", "/api/v1/runs/<run_id>/task-results"): "read",
    ("GET", "/api/v1/workspaces/<name>/state-versions"): "read",
    ("GET", "/api/v1/state-versions/<sv_id>"): "read",
    ("GET", "/api/v1/state-versions/<sv_id>/download"): "admin",
    ("POST", "/api/v1/workspaces/<name>/state-versions/<sv_id>/rollback"): "admin",
    ("GET", "/api/v1/workspaces/<name>/configuration-versions"): "read",
    ("GET", "/api/v1/configuration-versions/<a>/diff/<b>"): "read",
    ("GET", "/api/v1/configuration-versions/<cv_id>/download"): OPEN,
    ("PATCH", "/api/v1/run-task-results/<result_id>/callback"): OPEN,
    ("POST", "/api/v1/run-task-results/<result_id>/callback"): OPEN,
    ("GET", "/api/v1/run-task-results/<result_id>"): "read",
    ("GET", "/api/v1/run-task-results/<result_id>/plan-json"): OPEN,
    ("GET", "/api/v1/run-task-results/<result_id>/resource-changes"): OPEN,
    ("GET", "/api/v1/outbox"): "read",
    ("GET", "/api/v1/outbox/<row_id>"): "read",
    ("POST", "/api/v1/outbox/<row_id>/actions/<action>"): {"retry": "admin"},
    ("GET", "/api/v1/notifications/deliveries"): "read",
    ("GET", "/api/v1/releases"): "read",
    ("POST", "/api/v1/releases"): "admin",
    ("GET", "/api/v1/releases/<release_id>"): "read",
    ("POST", "/api/v1/releases/<release_id>/actions/<action>"): {"cancel": "admin"},
    ("GET", "/api/v1/workspaces/<name>/resources"): "read",
    ("GET", "/api/v1/resources"): "read",
    ("GET", "/api/v1/audit"): "admin",
    # Terraform's http backend (routes_backend.py).
    ("GET", "/api/v1/workspaces/<name>/state"): "read",
    ("POST", "/api/v1/workspaces/<name>/state"): "apply",
    ("PUT", "/api/v1/workspaces/<name>/state"): "apply",
    ("LOCK", "/api/v1/workspaces/<name>/state"): "apply",
    ("UNLOCK", "/api/v1/workspaces/<name>/state"): "apply",
    ("LOCK", "/api/v1/workspaces/<name>/state/lock"): "apply",
    ("POST", "/api/v1/workspaces/<name>/state/lock"): "apply",
    ("PUT", "/api/v1/workspaces/<name>/state/lock"): "apply",
    ("UNLOCK", "/api/v1/workspaces/<name>/state/lock"): "apply",
    ("DELETE", "/api/v1/workspaces/<name>/state/lock"): "apply",
}


@pytest.fixture
def config(tmp_path: Path) -> Config:
    base = write_config(tmp_path, [demo_workspace(tmp_path, things=1)])
    return with_tokens(base, **{role: role for role in ROLES}, x="admin")


def requests_for(method: str, rule: str, need: str | dict[str, str]) -> list[tuple[str, str, str]]:
    """(path, json operation or "", role) for each variant of the route."""
    path = re.sub(r"<(\w+)>", lambda m: "demo" if m[1] == "name" else f"x-{m[1]}", rule)
    if isinstance(need, str):
        return [(path, "", need)]
    if rule.endswith("/runs"):
        return [(path, operation, role) for operation, role in need.items()]
    return [(path.replace("x-action", action), "", role) for action, role in need.items()]


def cases() -> list[tuple[str, str, str, str]]:
    return [
        (method, path, operation, role)
        for (method, rule), need in EXPECTED.items()
        for path, operation, role in requests_for(method, rule, need)
    ]


async def test_the_table_here_names_every_route_the_daemon_serves(config: Config) -> None:
    async with running_daemon(config) as (daemon, _):
        app = create_app(daemon)
        served = {
            (method, rule.rule)
            for rule in app.url_map.iter_rules()
            for method in rule.methods or ()
            if method not in ("HEAD", "OPTIONS") and not is_web_page(rule.endpoint)
        }
    assert served == set(EXPECTED)


async def test_every_endpoint_refuses_no_token_an_unknown_one_and_a_weaker_role(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, _):
        async with httpx.AsyncClient(base_url=daemon.addresses[0], timeout=30) as http:
            # Held by someone else: the runs the loop creates wait instead of running terraform.
            await http.post("/api/v1/workspaces/demo/actions/lock", headers=bearer("x", "admin"))
            for method, path, operation, need in cases():
                body = {"operation": operation} if operation else None
                where = f"{method} {path} {operation}"
                anonymous = await http.request(method, path, json=body)
                forged = await http.request(
                    method, path, json=body, headers={"Authorization": "Bearer tfw_forged"}
                )
                if need == OPEN:
                    assert anonymous.status_code != 403, where
                    continue
                assert anonymous.status_code == 401, where
                assert anonymous.headers["WWW-Authenticate"].startswith("Bearer"), where
                assert "Authorization: Bearer" in anonymous.json()["error"]["message"], where
                assert forged.status_code == 401, where
                for role in ROLES:
                    got = await _answer(http, method, path, body, bearer(role, role))
                    if ROLES.index(role) < ROLES.index(need):
                        assert got.status_code == 403, f"{where} as {role}: {got.text}"
                        # (A read token is refused a run at the gate, where `plan` is named.)
                        assert "needs " in got.json()["error"]["message"], where
                    else:
                        assert got.status_code not in (401, 403), f"{where} as {role}: {got.text}"


async def _answer(
    http: httpx.AsyncClient, method: str, path: str, body: Any, headers: dict[str, str]
) -> httpx.Response:
    """The answer, its body read, except an event stream's (it goes on until the daemon stops):
    for those, the status and headers."""
    async with http.stream(method, path, json=body, headers=headers) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response
        await response.aread()
        return response


async def test_the_open_endpoints_need_no_api_token_and_take_none_for_a_run_task_token(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, _):
        async with httpx.AsyncClient(
            base_url=daemon.addresses[0], headers=bearer("admin", "admin"), timeout=90
        ) as http:
            assert (await http.get("/healthz", headers={"Authorization": ""})).status_code == 200
            created = await http.post("/api/v1/workspaces/demo/runs", json={"operation": "plan"})
            run_id = created.json()["data"]["id"]
            waited = await http.get(
                f"/api/v1/runs/{run_id}", params={"wait_status": "planned_and_finished"}
            )
            cv_id = waited.json()["data"]["configuration_version_id"]
            # The configuration is there for a run task's token; an admin API token is not one.
            download = await http.get(f"/api/v1/configuration-versions/{cv_id}/download")
            assert download.status_code == 401, download.text


async def test_who_created_confirmed_and_locked_is_the_token_name(
    tmp_path: Path,
) -> None:
    base = write_config(tmp_path, [demo_workspace(tmp_path, things=1)])
    config = with_tokens(base, ci="apply", alice="apply", bob="apply", reader="read")
    async with running_daemon(config) as (daemon, _):
        url = daemon.addresses[0]
        async with httpx.AsyncClient(base_url=url, timeout=90) as http:
            created = await http.post(
                "/api/v1/workspaces/demo/runs", json={}, headers=bearer("ci", "apply")
            )
            run_id = created.json()["data"]["id"]
            waited = await http.get(
                f"/api/v1/runs/{run_id}",
                params={"wait_status": "apply_pending", "wait_timeout": 60},
                headers=bearer("reader", "read"),
            )
            assert waited.json()["data"]["status"] == "apply_pending"
            confirmed = await http.post(
                f"/api/v1/runs/{run_id}/actions/confirm", headers=bearer("alice", "apply")
            )
            assert confirmed.status_code == 202, confirmed.text
            done = await http.get(
                f"/api/v1/runs/{run_id}",
                params={"wait_status": "applied", "wait_timeout": 60},
                headers=bearer("reader", "read"),
            )
            run = done.json()["data"]
            assert (run["status"], run["created_by"], run["confirmed_by"]) == (
                "applied",
                "ci",
                "alice",
            )
            locked = await http.post(
                "/api/v1/workspaces/demo/actions/lock", headers=bearer("bob", "apply")
            )
            assert locked.json()["data"]["lock"]["locked_by"] == "bob"
            # Only the holder (or an admin's force-unlock) may unlock.
            other = await http.post(
                "/api/v1/workspaces/demo/actions/unlock", headers=bearer("alice", "apply")
            )
            assert other.status_code == 409 and "bob" in other.text
            mine = await http.post(
                "/api/v1/workspaces/demo/actions/unlock", headers=bearer("bob", "apply")
            )
            assert mine.status_code == 200 and mine.json()["data"]["lock"] is None


async def test_the_local_admin_token_is_made_private_and_only_counts_without_configured_tokens(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1)])
    async with running_daemon(config) as (daemon, api):
        path = config.daemon.data_dir / "admin.token"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert (await api.http.get("/api/v1/workspaces")).status_code == 200
        local = {"Authorization": f"Bearer {admin_token(config)}"}

        with_tokens(config, ci="plan")
        assert await daemon.reload()
        refused = await api.http.get("/api/v1/workspaces", headers=local)
        assert refused.status_code == 401
        admitted = await api.http.get("/api/v1/workspaces", headers=bearer("ci", "plan"))
        assert admitted.status_code == 200
        # A plan token may plan, not apply.
        plan = await api.http.post(
            "/api/v1/workspaces/demo/runs", json={"operation": "plan"}, headers=bearer("ci", "plan")
        )
        assert plan.status_code == 201 and plan.json()["data"]["created_by"] == "ci"
        apply = await api.http.post(
            "/api/v1/workspaces/demo/runs", json={}, headers=bearer("ci", "plan")
        )
        assert apply.status_code == 403 and "needs apply" in apply.text
