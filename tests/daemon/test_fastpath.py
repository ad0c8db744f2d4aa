"""The fast path of `GET /api/v1/runs/{id}` (tfward/daemon/api/fastpath.py) against the Quart
route it stands in front of: over real HTTP on the same daemon, the two answer every request
alike — status, headers and bytes — tokens and roles, unknown runs, a database that does not
read; and what the fast path does not take reaches the app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio
from harness import bearer, demo_workspace, running_daemon, with_tokens, write_config
from storagefaults import UnreadableDatabase

from tfward.daemon.service import Daemon

HEADERS_COMPARED = ("content-type", "content-length", "www-authenticate", "retry-after")


async def _both(daemon: Daemon, path: str, headers: dict[str, str]) -> list[Any]:
    """The answer of each path to the same request: (status, headers, body)."""
    answers = []
    for fast in (True, False):
        daemon.fast_path.enabled = fast
        served = daemon.fast_path.served
        async with httpx.AsyncClient(base_url=daemon.addresses[0], timeout=30) as http:
            response = await http.get(path, headers=headers)
        assert daemon.fast_path.served == served + fast  # each went the way it was sent
        shown = {k: response.headers.get(k) for k in HEADERS_COMPARED}
        answers.append((response.status_code, shown, response.content))
    daemon.fast_path.enabled = True
    return answers


async def test_the_fast_path_answers_a_get_of_a_run_exactly_as_the_route_does(
    tmp_path: Path,
) -> None:
    config = with_tokens(
        write_config(tmp_path, [demo_workspace(tmp_path)]), reader="read", ops="admin"
    )
    async with running_daemon(config) as (daemon, _):
        admin, reader = bearer("ops", "admin"), bearer("reader", "read")
        async with httpx.AsyncClient(base_url=daemon.addresses[0], headers=admin) as http:
            created = await http.post("/api/v1/workspaces/demo/runs", json={"operation": "plan"})
            run = created.json()["data"]
            path = f"/api/v1/runs/{run['id']}"
            params: dict[str, str | int] = {
                "wait_status": "planned_and_finished",
                "wait_timeout": 60,
            }
            ended = await http.get(path, params=params, timeout=70)  # it changes no more
            assert ended.json()["data"]["status"] == "planned_and_finished"
        requests = [
            (path, admin),
            (path, reader),
            (path, {}),
            (path, {"Authorization": "Bearer tfw_nobody"}),
            (path, {"Authorization": "Basic !!!"}),
            (path, {"Authorization": "Basic eDo="}),  # "x:", no password
            (path, {"Authorization": "Token abc"}),
            ("/api/v1/runs/run-nope", reader),
            ("/api/v1/runs/%2e%2e", reader),
        ]
        for url, headers in requests:
            fast, route = await _both(daemon, url, headers)
            assert fast == route, (url, headers)
        statuses = {(await _both(daemon, url, headers))[0][0] for url, headers in requests}
        assert statuses == {200, 401, 404}


async def test_a_database_that_does_not_read_is_the_same_503_on_both_paths(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path)])
    async with running_daemon(config) as (daemon, api):
        headers = dict(api.http.headers)
        with UnreadableDatabase(config.daemon.data_dir / "tfward.db", daemon.store):
            fast, route = await _both(daemon, "/api/v1/runs/run-unknown", headers)
        assert fast[0] == route[0] == 503 and fast[1]["retry-after"] == "5"
        assert fast == route
        assert b"storage degraded since" in fast[2] and b"\n" not in fast[2][:-1]


async def test_requests_the_fast_path_does_not_take_go_to_the_app_as_before(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path)])
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo", operation="plan")
        path = f"/api/v1/runs/{run['id']}"
        served = daemon.fast_path.served
        long_poll = await api.http.get(path, params={"wait_timeout": 0})
        assert long_poll.status_code == 200
        assert (await api.http.get(path, params={"wait_statuss": "x"})).status_code == 422
        assert (await api.http.head(path)).status_code == 200
        assert (await api.http.request("GET", path, content=b"{}")).status_code == 200
        host, port = daemon.addresses[0].removeprefix("http://").rsplit(":", 1)
        auth = api.http.headers["Authorization"]
        for version, extra in (("1.1", "Connection: close\r\n"), ("1.0", "")):
            with trio.fail_after(10):
                sock = await trio.open_tcp_stream(host, int(port))
                request = f"GET {path} HTTP/{version}\r\nHost: x\r\nAuthorization: {auth}\r\n"
                await sock.send_all((request + extra + "\r\n").encode())
                answer = b""
                while chunk := await sock.receive_some(65536):  # the server closes it
                    answer += chunk
                await sock.aclose()
            assert answer.split(b"\r\n", 1)[0].endswith(b"200 ") and run["id"].encode() in answer
        assert daemon.fast_path.served == served  # none of those went the fast way
        assert (await api.http.get(path)).status_code == 200
        assert daemon.fast_path.served == served + 1
