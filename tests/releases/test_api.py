"""The release API's answers to bad requests (422 naming what is wrong, 404 for an unknown
configuration version, 409, 503), and the switch: with `[releases]` off the executor does not
start and creating a release is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness import running_daemon, write_config
from releases.support import demo, release_config


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"batches": [["dev-a"], ["nope", "gone"]]}, 422, "unknown workspaces: gone, nope"),
        ({"batches": [["dev-a", "stg"], ["dev-a"]]}, 422, "named more than once: dev-a"),
        (
            {"batches": [["dev-a", "nope"], ["dev-a"]]},
            422,
            "unknown workspaces: nope; workspaces named more than once: dev-a",
        ),
        ({}, 422, "field 'batches'"),
        ({"batches": []}, 422, "field 'batches'"),
        ({"batches": [[]]}, 422, "field 'batches'"),
        ({"batches": ["dev-a"]}, 422, "field 'batches'"),
        ({"batches": [["dev-a", 3]]}, 422, "field 'batches'"),
        ({"batches": [["dev-a"]], "colour": "red"}, 422, "unknown field 'colour'"),
        ({"batches": [["dev-a"]], "variables": ["x"]}, 422, "field 'variables'"),
        (
            {"batches": [["dev-a"]], "configuration_version_id": "cv-nope"},
            404,
            "configuration version cv-nope not found",
        ),
        (
            {"batches": [["dev-a"], ["stg"]], "variables": {"token": "x", "value": "y"}},
            422,
            "sensitive variables cannot be set by a release: token (in stg)",
        ),
        ({"batches": [["dev-a"]], "name": "x" * 201}, 422, "at most 200"),
    ],
    ids=[
        "unknown-workspaces",
        "a-repeated-workspace",
        "both-named-together",
        "no-batches",
        "an-empty-list",
        "an-empty-batch",
        "a-batch-that-is-not-a-list",
        "a-name-that-is-not-a-string",
        "an-unknown-field",
        "variables-not-an-object",
        "an-unknown-configuration-version",
        "a-sensitive-variable",
        "a-name-too-long",
    ],
)
async def test_a_bad_release_request_is_refused_with_what_is_wrong(
    tmp_path: Path, body: dict[str, Any], status: int, words: str
) -> None:
    workspaces = [
        demo(tmp_path, "dev-a"),
        demo(tmp_path, "stg", vars={"token": "s3cret"}, sensitive=["token"]),
    ]
    async with running_daemon(release_config(tmp_path, workspaces)) as (daemon, api):
        response = await api.http.post("/api/v1/releases", json=body)
        assert response.status_code == status, response.text
        assert words in response.json()["error"]["message"]
        assert (await api.http.get("/api/v1/releases")).json()["data"] == []


@pytest.mark.parametrize(
    ("method", "path", "status", "words"),
    [
        ("get", "/api/v1/releases/rel-nope", 404, "release rel-nope not found"),
        ("post", "/api/v1/releases/rel-nope/actions/cancel", 404, "release rel-nope not found"),
        ("post", "/api/v1/releases/rel-nope/actions/explode", 404, "unknown release action"),
        ("get", "/api/v1/releases?status=nope", 422, "query parameter 'status'"),
    ],
)
async def test_unknown_releases_and_actions_are_404(
    tmp_path: Path, method: str, path: str, status: int, words: str
) -> None:
    async with running_daemon(release_config(tmp_path, [demo(tmp_path, "dev-a")])) as (_, api):
        response = await api.http.request(method.upper(), path)
        assert response.status_code == status, response.text
        assert words in response.json()["error"]["message"]


async def test_with_releases_off_the_executor_does_not_start_and_create_is_503(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, [demo(tmp_path, "dev-a")])
    assert not config.releases.enabled
    async with running_daemon(config) as (daemon, api):
        assert daemon.releases is None
        response = await api.http.post("/api/v1/releases", json={"batches": [["dev-a"]]})
        assert response.status_code == 503
        assert "[releases] enabled = true" in response.json()["error"]["message"]
        assert (await api.http.get("/api/v1/releases")).status_code == 200


async def test_a_stopping_daemon_accepts_no_release(tmp_path: Path) -> None:
    async with running_daemon(release_config(tmp_path, [demo(tmp_path, "dev-a")])) as (
        daemon,
        api,
    ):
        daemon.stopping = True
        response = await api.http.post("/api/v1/releases", json={"batches": [["dev-a"]]})
        assert response.status_code == 503 and "not accepting" in response.text
        daemon.stopping = False
