"""The OpenAPI document (api/openapi.py): it documents every route the daemon serves and no
other, is valid OpenAPI 3.1, names the roles auth.py enforces, and real answers match it.
Operations of methods OpenAPI has no field for (terraform's LOCK and UNLOCK) are read from the
path item's `x-methods`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from harness import demo_workspace, running_daemon, write_config
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from tfward.config import API_ROLES, Config
from tfward.daemon.api import auth
from tfward.daemon.api.app import create_app
from tfward.daemon.api.openapi import X_METHODS, build, openapi_path
from tfward.daemon.web.app import is_web_page

METHODS = ("get", "put", "post", "delete", "patch")


def methods_of(item: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """METHOD -> operation of a path item: its OpenAPI fields and its `x-methods`."""
    found = {m.upper(): op for m, op in item.items() if m in METHODS}
    return {**found, **item.get(X_METHODS, {})}


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return write_config(tmp_path, [demo_workspace(tmp_path, things=1)])


def documented(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, item in spec["paths"].items() for method in methods_of(item)}


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, Werkzeug rule, operation): every path parameter here has the default converter."""
    return [
        (method, re.sub(r"\{(\w+)\}", r"<\1>", path), operation)
        for path, item in spec["paths"].items()
        for method, operation in methods_of(item).items()
    ]


def conforms(spec: dict[str, Any], path: str, method: str, response: Any) -> None:
    """The JSON answer matches what the document says for its path, method and status."""
    responses = spec["paths"][path][method]["responses"]
    assert str(response.status_code) in responses, f"{method} {path}: {response.text}"
    answer = responses[str(response.status_code)]
    if "$ref" in answer:
        answer = spec["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    schema = answer["content"]["application/json"]["schema"]
    # The components ride along so that `#/components/schemas/...` resolves.
    Draft202012Validator({**schema, "components": spec["components"]}).validate(response.json())


async def test_every_route_the_daemon_serves_is_documented_and_no_other(config: Config) -> None:
    async with running_daemon(config) as (daemon, api):
        response = await api.http.get("/api/v1/openapi.json")
        assert response.status_code == 200, response.text
        spec = response.json()
        served = {
            (method, openapi_path(rule.rule))
            for rule in create_app(daemon).url_map.iter_rules()
            for method in rule.methods or ()
            if method not in ("HEAD", "OPTIONS") and not is_web_page(rule.endpoint)
        }
    assert served - documented(spec) == set(), "served but not in the document"
    assert documented(spec) - served == set(), "in the document but not served"
    assert spec["paths"]["/api/v1/workspaces/{name}"]["get"]["parameters"][0]["schema"][
        "examples"
    ] == ["demo"]


def test_the_document_is_valid_openapi_with_unique_operation_ids() -> None:
    spec = build(["demo", "network"])
    validate(spec)
    ids = [operation["operationId"] for _, _, operation in operations(spec)]
    assert len(ids) == len(set(ids))


def test_each_operation_names_the_role_auth_enforces_and_documents_the_refusals() -> None:
    for method, rule, operation in operations(build()):
        where = f"{method} {rule}"
        if (method, rule) in auth.PUBLIC:
            assert "x-required-role" not in operation, where
            assert operation["security"] in ([], [{"runTaskToken": []}]), where
            continue
        # Terraform's http backend sends basic auth; everything takes a bearer token.
        basic = rule in auth.BACKEND_RULES
        expected: list[Any] = [{"basicAuth": []}] * basic + [{"bearerAuth": []}]
        assert operation["security"] == expected, where
        assert "401" in operation["responses"], where
        role = operation["x-required-role"]
        if isinstance(role, str):
            assert auth.required_role(method, rule, {}) == role, where
            assert ("403" in operation["responses"]) == (role != "read"), where
            continue
        assert "403" in operation["responses"], where
        if rule.endswith("/runs"):  # by the body's operation: the gate lets the least through
            assert auth.required_role(method, rule, {}) == min(role.values(), key=API_ROLES.index)
            continue
        (action,) = [p for p in operation["parameters"] if p["name"] == "action"]
        assert set(role) == set(action["schema"]["enum"]), where
        for value, need in role.items():
            assert auth.required_role(method, rule, {"action": value}) == need, where


async def test_answers_about_real_runs_workspaces_and_states_match_the_document(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, api):
        spec = (await api.http.get("/api/v1/openapi.json")).json()
        run = await api.create_run("demo", auto_apply=True, message="conformance")
        await api.wait(run["id"], "applied")
        sv_id = (await api.state_versions("demo"))[0]["id"]
        url = f"/api/v1/runs/{run['id']}"
        for method, path, target in [
            ("get", "/healthz", "/healthz"),
            ("get", "/api/v1/recovery", "/api/v1/recovery"),
            ("get", "/api/v1/workspaces", "/api/v1/workspaces"),
            ("get", "/api/v1/workspaces/{name}", "/api/v1/workspaces/nope"),
            ("get", "/api/v1/workspaces/{name}/runs", "/api/v1/workspaces/demo/runs"),
            ("get", "/api/v1/runs/{run_id}", url),
            ("get", "/api/v1/runs/{run_id}/task-results", f"{url}/task-results"),
            ("get", "/api/v1/state-versions/{sv_id}", f"/api/v1/state-versions/{sv_id}"),
            (
                "get",
                "/api/v1/workspaces/{name}/configuration-versions",
                "/api/v1/workspaces/demo/configuration-versions",
            ),
            ("get", "/api/v1/outbox", "/api/v1/outbox"),
            ("get", "/api/v1/notifications/deliveries", "/api/v1/notifications/deliveries"),
            ("get", "/api/v1/resources", "/api/v1/resources"),
            ("get", "/api/v1/releases", "/api/v1/releases"),
            ("get", "/api/v1/workspaces/{name}/state", "/api/v1/workspaces/demo/state"),
            ("post", "/api/v1/runs/{run_id}/actions/{action}", f"{url}/actions/cancel"),
        ]:
            response = await api.http.request(method.upper(), target)
            conforms(spec, path, method, response)
        # The workspace again, now with a lock held by a user and a state version.
        await api.http.post("/api/v1/workspaces/demo/actions/lock", json={"reason": "test"})
        response = await api.http.get("/api/v1/workspaces/demo")
        assert response.json()["data"]["lock"]["reason"] == "test"
        conforms(spec, "/api/v1/workspaces/{name}", "get", response)
