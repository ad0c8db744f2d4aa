"""The HTTP API: bad input gets a clear 4xx (never a 500), actions refused with reasons (and
the first of confirm and discard wins), 405 with `Allow`, log streaming, and connections that
ask to close are closed."""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from pathlib import Path

import pytest
import trio
from harness import demo_workspace, running_daemon, write_config

from tfward.config import load_config
from tfward.daemon.api.app import create_app


@pytest.fixture
def config(tmp_path: Path):  # type: ignore[no-untyped-def]
    return write_config(
        tmp_path, [demo_workspace(tmp_path, things=1)], terraform={"plan_expiry": "3s"}
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        ("get", "/api/v1/workspaces/nope", None, 404, "workspace 'nope' not found"),
        ("get", "/api/v1/runs/run-nope", None, 404, "run run-nope not found"),
        ("get", "/api/v1/runs/run-nope/logs", None, 404, "not found"),
        ("get", "/api/v1/state-versions/sv-nope", None, 404, "not found"),
        ("get", "/api/v1/no/such/route", None, 404, ""),
        ("post", "/api/v1/workspaces/nope/runs", {}, 404, "workspace 'nope' not found"),
        ("post", "/api/v1/workspaces/demo/runs", b"{not json", 400, "not valid JSON"),
        ("post", "/api/v1/workspaces/demo/runs", {"colour": "red"}, 422, "unknown field 'colour'"),
        ("post", "/api/v1/workspaces/demo/runs", {"operation": "yolo"}, 422, "field 'operation'"),
        ("post", "/api/v1/workspaces/demo/runs", {"auto_apply": "yes"}, 422, "field 'auto_apply'"),
        ("post", "/api/v1/workspaces/demo/runs", {"targets": [1]}, 422, "field 'targets'"),
        ("post", "/api/v1/workspaces/demo/runs", [1, 2], 422, "must be a JSON object"),
        ("post", "/api/v1/runs/run-nope/actions/confirm", None, 404, "not found"),
        ("post", "/api/v1/workspaces/demo/actions/explode", None, 404, "unknown workspace action"),
        ("get", "/api/v1/configuration-versions/cv-a/diff/cv-b", None, 404, "not found"),
    ],
)
async def test_bad_requests_get_a_clear_client_error(
    config,
    method: str,
    path: str,
    body: object,
    status: int,
    words: str,  # type: ignore[no-untyped-def]
) -> None:
    async with running_daemon(config) as (daemon, api):
        kwargs = (
            {"content": body}
            if isinstance(body, bytes)
            else {"json": body}
            if body is not None
            else {}
        )
        response = await api.http.request(method.upper(), path, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == status, response.text
        assert words in response.json()["error"]["message"]


async def test_actions_the_state_machine_refuses_get_409_with_the_reason(config) -> None:  # type: ignore[no-untyped-def]
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo")
        await api.wait(run["id"], "apply_pending")
        response = await api.action(run["id"], "force-cancel")
        assert response.status_code == 409 and "it is apply_pending" in response.text
        response = await api.action(run["id"], "cancel")
        assert response.status_code == 409 and "discard it instead" in response.text


async def test_confirm_is_refused_once_the_lock_is_no_longer_held_by_the_run(config) -> None:  # type: ignore[no-untyped-def]
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo")
        await api.wait(run["id"], "apply_pending")
        response = await api.http.post("/api/v1/workspaces/demo/actions/unlock")
        assert response.status_code == 409 and f"locked by Run {run['id']}" in response.text
        response = await api.http.post("/api/v1/workspaces/demo/actions/force-unlock")
        assert response.status_code == 200
        response = await api.action(run["id"], "confirm")
        assert response.status_code == 409 and "no longer held by this run" in response.text


async def test_an_expired_plan_is_discarded_and_cannot_be_confirmed(config) -> None:  # type: ignore[no-untyped-def]
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo")
        await api.wait(run["id"], "apply_pending")
        run = await api.wait(run["id"], "discarded", timeout=20)
        assert "expired" in run["error_message"]
        assert (await api.workspace("demo"))["lock"] is None
        assert (await api.action(run["id"], "confirm")).status_code == 409


async def test_a_user_lock_holds_back_queued_runs_until_unlocked(config) -> None:  # type: ignore[no-untyped-def]
    async with running_daemon(config) as (daemon, api):
        response = await api.http.post(
            "/api/v1/workspaces/demo/actions/lock", json={"reason": "freeze"}
        )
        assert response.status_code == 200 and response.json()["data"]["lock"]["reason"] == "freeze"
        run = await api.create_run("demo")
        with trio.move_on_after(2):
            await api.wait(run["id"], "planning")
        assert (await api.run(run["id"]))["status"] == "pending"
        assert (await api.http.post("/api/v1/workspaces/demo/actions/unlock")).status_code == 200
        await api.wait(run["id"], "apply_pending")


async def test_cancelling_a_queued_run_finishes_it_through_the_funnel(config) -> None:  # type: ignore[no-untyped-def]
    async with running_daemon(config) as (daemon, api):
        first = await api.create_run("demo")
        second = await api.create_run("demo")
        await api.wait(first["id"], "apply_pending")
        assert (await api.action(second["id"], "cancel")).status_code == 202
        run = await api.wait(second["id"], "cancelled")
        assert run["error_message"] == "cancelled before it started"
        assert "run finished: cancelled" in await api.logs(second["id"])


async def test_following_a_log_streams_until_the_run_ends(config) -> None:  # type: ignore[no-untyped-def]
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo", operation="plan")
        received = b""
        with trio.fail_after(60):
            async with api.http.stream(
                "GET", f"/api/v1/runs/{run['id']}/logs", params={"follow": "true"}
            ) as response:
                async for chunk in response.aiter_bytes():
                    received += chunk
        assert b"Plan: 1 to add" in received
        assert received.rstrip().endswith(b"run finished: planned_and_finished")


async def test_a_connection_close_request_gets_its_response_and_eof(config) -> None:  # type: ignore[no-untyped-def]
    async with running_daemon(config) as (daemon, api):
        host, port = daemon.addresses[0].removeprefix("http://").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                received += chunk
        assert received.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in received.replace(
            b" ", b""
        )
        await stream.aclose()


async def test_runs_are_refused_with_503_while_the_daemon_stops(config) -> None:  # type: ignore[no-untyped-def]
    async with running_daemon(config) as (daemon, api):
        daemon.stopping = True
        response = await api.http.post("/api/v1/workspaces/demo/runs", json={})
        assert response.status_code == 503 and "not accepting runs" in response.text
        daemon.stopping = False


async def test_a_discard_shows_at_once_and_leaves_no_confirm_or_discard_to_offer(config) -> None:  # type: ignore[no-untyped-def]
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo")
        await api.wait(run["id"], "apply_pending")
        response = await api.action(run["id"], "discard", comment="not today")
        assert response.status_code == 202, response.text
        answered = response.json()["data"]
        shown = await api.run(run["id"])  # read right after the 202, before the funnel ran
        for view in (answered, shown):
            assert view["actions"] == [], view
            assert view["discard_requested_by"] == "admin"
            assert view["discard_reason"] == "not today"
            assert view["timestamps"]["discard_requested_at"] is not None
            assert view["confirmed_by"] is None
        ended = await api.wait(run["id"], "discarded")
        assert ended["confirmed_by"] is None and ended["timestamps"]["confirmed_at"] is None


async def test_a_confirm_after_a_discard_is_refused_naming_the_discard(config) -> None:  # type: ignore[no-untyped-def]
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo")
        await api.wait(run["id"], "apply_pending")
        assert (await api.action(run["id"], "discard")).status_code == 202
        response = await api.action(run["id"], "confirm")
        assert response.status_code == 409, response.text
        assert f"cannot confirm run {run['id']}: it was discarded by admin" in response.text
        assert (await api.wait(run["id"], "discarded"))["confirmed_by"] is None


async def test_a_discard_after_a_confirm_is_refused_naming_the_confirm(config) -> None:  # type: ignore[no-untyped-def]
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo")
        await api.wait(run["id"], "apply_pending")
        assert (await api.action(run["id"], "confirm")).status_code == 202
        response = await api.action(run["id"], "discard")
        assert response.status_code == 409, response.text
        assert f"cannot discard run {run['id']}: it was confirmed by admin" in response.text
        ended = await api.wait(run["id"], "applied")
        assert ended["discard_requested_by"] is None


async def test_of_a_confirm_and_a_discard_sent_together_exactly_one_is_accepted(config) -> None:  # type: ignore[no-untyped-def]
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo")
        await api.wait(run["id"], "apply_pending")
        answers: dict[str, int] = {}

        async def send(action: str) -> None:
            answers[action] = (await api.action(run["id"], action)).status_code

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, "confirm")
            nursery.start_soon(send, "discard")
        assert sorted(answers.values()) == [202, 409], answers
        winner = "confirm" if answers["confirm"] == 202 else "discard"
        ended = await api.wait(run["id"], "applied", "discarded")
        assert ended["status"] == ("applied" if winner == "confirm" else "discarded")
        assert (ended["confirmed_by"] is None) == (winner == "discard")
        assert (ended["discard_requested_by"] is None) == (winner == "confirm")


JSON_ENDPOINTS = [
    ("POST", "/api/v1/workspaces/demo/runs"),
    ("POST", "/api/v1/runs/run-nope/actions/discard"),
    ("POST", "/api/v1/workspaces/demo/actions/lock"),
    ("POST", "/api/v1/releases"),
    ("POST", "/api/v1/releases/rel-nope/actions/cancel"),
    ("POST", "/api/v1/outbox/ob-nope/actions/retry"),
]
DEEP = b"[" * 1000 + b"]" * 1000


async def test_json_nested_1000_deep_or_with_a_lone_surrogate_gets_a_400_on_every_endpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1)])
    config.path.write_text(config.path.read_text() + "\n[releases]\nenabled = true\n")
    config = load_config(config.path)
    deep_object = b'{"message": ' + DEEP + b"}"
    async with running_daemon(config) as (daemon, api):
        for method, path in JSON_ENDPOINTS:
            for body, words in [
                (DEEP, "nested deeper than 64 levels"),
                (deep_object, "nested deeper than 64 levels"),
                (b'{"message": "\\ud800"}', "lone UTF-16 surrogate"),
                (b'{"message": "\xff"}', "not UTF-8"),
            ]:
                response = await api.http.request(method, path, content=body)
                assert response.status_code == 400, (path, body[:20], response.text)
                message = response.json()["error"]["message"]
                assert words in message and "\n" not in message, (path, message)
        # A pair of surrogates is one character, and stored as such.
        pair = b'{"operation": "plan", "message": "\\ud83d\\ude00"}'
        created = await api.http.post("/api/v1/workspaces/demo/runs", content=pair)
        assert created.status_code == 201, created.text
        assert (await api.run(created.json()["data"]["id"]))["message"] == "\N{GRINNING FACE}"
        callback = "/api/v1/run-task-results/taskrs-nope/callback"
        assert (await api.http.patch(callback, content=DEEP)).status_code == 404
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_every_route_answers_a_method_it_does_not_take_with_405_and_allow(config) -> None:  # type: ignore[no-untyped-def]
    async with running_daemon(config) as (daemon, api):
        methods: dict[str, set[str]] = defaultdict(set)
        for found in create_app(daemon).url_map.iter_rules():
            methods[found.rule] |= set(found.methods or ())
        assert len(methods) > 25
        for rule, allowed in methods.items():
            path = re.sub(r"<(?:\w+:)?(\w+)>", "x", rule)
            for method in {"PUT", "DELETE", "TRACE"} - allowed:  # the http backend takes some
                response = await api.http.request(method, path)
                assert response.status_code == 405, (method, rule, response.text)
                shown = {m.strip() for m in response.headers.get("allow", "").split(",")}
                assert shown == allowed, (method, rule)


async def test_the_cluster_view_shows_the_one_daemon_owning_every_workspace(config) -> None:  # type: ignore[no-untyped-def]
    async with running_daemon(config) as (daemon, api):
        response = await api.http.get("/api/v1/cluster")
        assert response.status_code == 200, response.text
        seen = response.json()["data"]
        me = config.daemon.node_id
        [node] = seen["daemons"]
        assert seen["node_id"] == me and node["node_id"] == me and node["live"] is True
        assert node["workspaces"] == ["demo"] and seen["unowned_workspaces"] == []
        assert node["api_url"] == daemon.rt.api_url and node["left_at"] is None
        assert (await api.workspace("demo"))["owner"] == me
