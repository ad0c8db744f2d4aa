"""Connection settings and error translation: where the URL and token come from, that the token
is sent as `Authorization: Bearer`, and what each failure tells the user to do."""

from __future__ import annotations

import http.server
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from tfward.cli.client import EXIT_UNREACHABLE, CliError, resolve

CONFIG = '[daemon]\ndata_dir = "data"\n'


def config_with_token(root: Path, token: str | None) -> Path:
    (root / "data").mkdir(exist_ok=True)
    if token is not None:
        (root / "data" / "admin.token").write_text(token + "\n")
    path = root / "tfward.toml"
    path.write_text(CONFIG)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_url_is_the_flag_then_the_environment_then_the_default() -> None:
    env = {"TFWARD_URL": "http://env:1/", "TFWARD_TOKEN": "t"}
    assert resolve("http://flag:2", None, None, env).url == "http://flag:2"
    assert resolve(None, None, None, env).url == "http://env:1"
    assert resolve(None, None, None, {"TFWARD_TOKEN": "t"}).url == "http://127.0.0.1:8700"


def test_the_token_is_the_flag_then_the_environment_then_admin_token(tmp_path: Path) -> None:
    config = str(config_with_token(tmp_path, "from-file"))
    env = {"TFWARD_TOKEN": "from-env"}
    assert resolve(None, "from-flag", config, env).token == "from-flag"
    assert resolve(None, None, config, env).token == "from-env"
    found = resolve(None, None, config, {})
    assert found.token == "from-file" and found.token_source.endswith("admin.token")
    assert resolve(None, None, None, {"TFWARD_CONFIG": config}).token == "from-file"


def test_no_token_anywhere_is_fine_and_says_why(tmp_path: Path) -> None:
    found = resolve(None, None, str(config_with_token(tmp_path, None)), {})
    assert found.token is None and found.headers() == {}
    assert "admin.token does not exist" in found.token_source


def test_a_named_config_that_does_not_load_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(CliError) as caught:
        resolve(None, None, str(tmp_path / "missing.toml"), {})
    assert caught.value.code == 2 and "config file not found" in str(caught.value)


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers the workspace list; 401 without a token. Remembers the Authorization header."""

    seen: list[str | None] = []

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization")
        Recorder.seen.append(auth)
        body: dict[str, Any] = {"data": []} if auth else {"error": {"message": "no token"}}
        status = 200 if auth else 401
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        pass


async def test_the_token_is_sent_as_a_bearer_header(
    tmp_path: Path, fake_daemon: Any, run_main: Any
) -> None:
    config = str(config_with_token(tmp_path, "file-token"))
    Recorder.seen = []
    with fake_daemon(Recorder) as url:
        flagged = await run_main(["workspaces", "--url", url, "--token", "flag-token"])
        from_file = await run_main(["workspaces", "--json", "--url", url, "--config", config])
    assert flagged.code == 0 and from_file.code == 0 and json.loads(from_file.out) == []
    assert Recorder.seen == ["Bearer flag-token", "Bearer file-token"]


async def test_a_401_says_how_to_give_a_token(
    tmp_path: Path, fake_daemon: Any, run_main: Any
) -> None:
    config = str(config_with_token(tmp_path, None))
    with fake_daemon(Recorder) as url:
        result = await run_main(["runs", "demo", "--url", url, "--config", config])
    assert result.code == 2
    assert "--token" in result.err and "$TFWARD_TOKEN" in result.err
    assert "admin.token does not exist" in result.err


async def test_an_unreachable_daemon_exits_4_and_says_how_to_start_it(run_main: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for argv in (["workspaces"], ["apply", "demo"], ["logs", "run-x", "-f"]):
        result = await run_main([*argv, "--url", url, "--token", "x"])
        assert result.code == EXIT_UNREACHABLE, argv
        assert f"cannot reach the daemon at {url}" in result.err
        assert "is it running? start it with `tfward serve CONFIG` or `make run`" in result.err
