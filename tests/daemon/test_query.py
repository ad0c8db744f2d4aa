"""Query strings (api/query.py): each parameter read as its type within its bounds, anything
else refused with 422 naming the parameter, on every route, as the OpenAPI document says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness import demo_workspace, running_daemon, write_config
from werkzeug.datastructures import MultiDict

from tfward.config import Config
from tfward.daemon.api import query
from tfward.daemon.api.app import create_app
from tfward.daemon.api.openapi import build, openapi_path
from tfward.errors import BadRequest


@pytest.mark.parametrize(
    ("param", "raw", "value"),
    [
        (query.LIMIT, "1", 1),
        (query.LIMIT, "1000", 1000),
        (query.WAIT_TIMEOUT, "0", 0.0),
        (query.WAIT_TIMEOUT, "2.5", 2.5),
        (query.WAIT_TIMEOUT, "300", 300.0),
        (query.WAIT_STATUS, "applied,failed", ("applied", "failed")),
        (query.FOLLOW, "true", True),
        (query.FOLLOW, "false", False),
        (query.RUN_ID, "run-x", "run-x"),
    ],
)
def test_a_value_of_the_right_type_within_bounds_is_read_as_that_type(
    param: query.Param, raw: str, value: Any
) -> None:
    assert param.parse(raw) == value


@pytest.mark.parametrize(
    ("param", "raw", "words"),
    [
        (query.LIMIT, "abc", "expected an integer from 1 to 1000, got 'abc'"),
        (query.LIMIT, "null", "got 'null'"),
        (query.LIMIT, "-1", "got '-1'"),
        (query.LIMIT, "0", "got '0'"),
        (query.LIMIT, "1001", "got '1001'"),
        (query.LIMIT, "2.0", "got '2.0'"),
        (query.LIMIT, "9" * 5000, "expected an integer"),
        (query.WAIT_TIMEOUT, "abc", "expected a number from 0 to 300, got 'abc'"),
        (query.WAIT_TIMEOUT, "99999", "got '99999'"),
        (query.WAIT_TIMEOUT, "-1", "got '-1'"),
        (query.WAIT_TIMEOUT, "nan", "got 'nan'"),
        (query.WAIT_TIMEOUT, "inf", "got 'inf'"),
        (query.WAIT_TIMEOUT, "1e999", "got '1e999'"),
        (query.WAIT_STATUS, "bogus", "expected a comma-separated list of pending,"),
        (query.WAIT_STATUS, "applied,", "got 'applied,'"),
        (query.FOLLOW, "yes", "expected true or false, got 'yes'"),
        (query.RUN_ID, "", "got an empty value"),
        (query.LIMIT, "", "got an empty value"),
    ],
)
def test_a_wrong_value_is_refused_naming_the_parameter_and_what_it_expects(
    param: query.Param, raw: str, words: str
) -> None:
    with pytest.raises(BadRequest, match=f"query parameter '{param.name}'") as caught:
        param.parse(raw)
    assert words in str(caught.value)


def test_an_unknown_or_repeated_parameter_is_refused_and_an_absent_one_gets_its_default() -> None:
    params = (query.LIMIT, query.RUN_ID)
    assert query.parse(params, MultiDict()) == {"limit": 100, "run_id": None}
    with pytest.raises(BadRequest, match="unknown query parameter 'limt'; this endpoint takes"):
        query.parse(params, MultiDict([("limt", "5")]))
    with pytest.raises(BadRequest, match="'limit': given 2 times, expected once"):
        query.parse(params, MultiDict([("limit", "5"), ("limit", "6")]))
    with pytest.raises(BadRequest, match="takes: none"):
        query.parse((), MultiDict([("x", "1")]))


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return write_config(tmp_path, [demo_workspace(tmp_path, things=1)])


async def test_the_table_names_only_real_routes_and_the_document_shows_each_parameter(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, _):
        rules = {
            (method, rule.rule)
            for rule in create_app(daemon).url_map.iter_rules()
            for method in rule.methods or ()
        }
    assert set(query.TABLE) <= rules
    spec = build(["demo"])
    for (method, rule), params in query.TABLE.items():
        operation = spec["paths"][openapi_path(rule)][method.lower()]
        shown = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
        assert shown == {p.name: p.schema() for p in params}, rule
    for path, item in spec["paths"].items():
        # LOCK and UNLOCK (terraform's http backend) sit in the `x-methods` extension.
        operations = [*item.items(), *item.get("x-methods", {}).items()]
        for method, operation in operations:
            if method != "x-methods":
                assert "422" in operation["responses"], (method, path)


BAD = [
    ("/api/v1/runs/{run}", "wait_status=bogus", "wait_status"),
    ("/api/v1/runs/{run}", "wait_status=applied&wait_timeout=abc", "wait_timeout"),
    ("/api/v1/runs/{run}", "wait_status=applied&wait_timeout=99999", "wait_timeout"),
    ("/api/v1/runs/{run}", "wait_status=applied&wait_timeout=-1", "wait_timeout"),
    ("/api/v1/runs/{run}", "wait_status=applied&wait_timeout=nan", "wait_timeout"),
    ("/api/v1/runs/{run}", "wait_statuss=applied", "wait_statuss"),
    ("/api/v1/runs/{run}/logs", "follow=yes", "follow"),
    ("/api/v1/workspaces/demo/runs", "limit=abc", "limit"),
    ("/api/v1/workspaces/demo/runs", "limit=-1", "limit"),
    ("/api/v1/workspaces/demo/runs", "limit=null", "limit"),
    ("/api/v1/workspaces/demo/runs", "limit=1&limit=2", "limit"),
    ("/api/v1/releases", "status=bogus", "status"),
    ("/api/v1/releases/rel-x", "wait_timeout=-1", "wait_timeout"),
    ("/api/v1/outbox", "status=bogus", "status"),
    ("/api/v1/outbox", "kind=", "kind"),
    ("/api/v1/notifications/deliveries", "limit=0", "limit"),
    ("/api/v1/resources", "type=", "type"),
    ("/api/v1/workspaces", "limit=5", "limit"),
    ("/healthz", "verbose=1", "verbose"),
]


async def test_every_route_refuses_a_bad_or_unknown_query_parameter_with_422(
    config: Config,
) -> None:
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo", operation="plan")
        for path, given, name in BAD:
            url = path.format(run=run["id"]) + "?" + given
            response = await api.http.get(url)
            assert response.status_code == 422, (url, response.text)
            assert f"'{name}'" in response.json()["error"]["message"], url
        # Good values still work: the wait ends as soon as the run is planned.
        response = await api.http.get(
            f"/api/v1/runs/{run['id']}",
            params={"wait_status": "planned_and_finished", "wait_timeout": "60"},
        )
        assert response.json()["data"]["status"] == "planned_and_finished"
        listed = await api.http.get("/api/v1/workspaces/demo/runs", params={"limit": "1"})
        assert [r["id"] for r in listed.json()["data"]] == [run["id"]]
