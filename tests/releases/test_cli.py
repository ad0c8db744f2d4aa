"""`tfward release ...` against a real daemon on loopback: create, show (table and JSON), watch,
list, cancel, and the exit codes (0 ok, 1 release failed, 2 usage, 3 cancelled, 4 daemon
unreachable)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import trio
from harness import admin_token, running_daemon
from releases.support import FAILING, demo, release_config

from tfward.cli.main import main


async def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the command in a thread (it is synchronous httpx) while the daemon runs here."""
    capsys.readouterr()
    code = await trio.to_thread.run_sync(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_release_commands_create_watch_show_list_and_cancel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    workspaces = [
        demo(tmp_path, "dev-a"),
        demo(tmp_path, "stg"),
        demo(tmp_path, "bad"),
        demo(tmp_path, "slow", vars={"delay": 5}),
    ]
    (tmp_path / "bad" / "bad.tf").write_text(FAILING)
    async with running_daemon(release_config(tmp_path, workspaces)) as (daemon, api):
        url = daemon.addresses[0]
        monkeypatch.setenv("TFWARD_TOKEN", admin_token(daemon.config))
        code, out, err = await _cli(
            capsys, "release", "create", "--batch", "dev-a", "--batch", " stg, ",
            "--name", "first", "--var", "value=v1", "--url", url, "--watch",
        )  # fmt: skip
        assert code == 0, (code, out, err)
        last = out.split("release rel-")[-1]
        assert "first  SUCCEEDED" in last and "2 total: 2 succeeded, 0 failed" in last
        assert "rolls out variables value" in last
        release_id = "rel-" + last.split()[0]
        table = last.split("BATCH")[1].splitlines()[1:]
        rows = [line.split() for line in table if line.strip()]
        assert [row[:4] for row in rows] == [
            ["1", "succeeded", "dev-a", "succeeded"],
            ["2", "succeeded", "stg", "succeeded"],
        ]

        code, out, _ = await _cli(capsys, "release", "show", release_id, "--json", "--url", url)
        view = json.loads(out)
        assert code == 0 and view["id"] == release_id and view["counts"]["succeeded"] == 2

        code, out, _ = await _cli(capsys, "release", "list", "--url", url)
        assert code == 0 and release_id in out and "first" in out

        code, out, err = await _cli(
            capsys, "release", "create", "--batch", "bad", "--batch", "dev-a", "--url", url,
            "--watch", "--json",
        )  # fmt: skip
        assert code == 1, err
        views = [json.loads(line) for line in out.splitlines()]
        assert views[-1]["status"] == "failed" and views[-1]["counts"]["skipped"] == 1
        assert len({v["revision"] for v in views}) == len(views), "one line per change"

        code, out, _ = await _cli(capsys, "release", "show", views[-1]["id"], "--url", url)
        assert code == 1 and "FAILED" in out and "failing on purpose" in out

        code, _, err = await _cli(capsys, "release", "cancel", release_id, "--url", url)
        assert code == 2 and "it is succeeded (HTTP 409)" in err

        code, out, _ = await _cli(
            capsys, "release", "create", "--batch", "slow", "--batch", "dev-a", "--url", url
        )
        assert code == 0 and out.startswith("release rel-")
        slow_id = out.split()[1]
        code, out, _ = await _cli(capsys, "release", "cancel", slow_id, "--url", url)
        assert code == 0 and "cancel requested" in out
        code, out, _ = await _cli(capsys, "release", "show", slow_id, "--watch", "--url", url)
        assert code == 3 and "CANCELLED" in out.split("release rel-")[-1]

        code, _, err = await _cli(capsys, "release", "create", "--batch", "nope", "--url", url)
        assert code == 2 and "unknown workspaces: nope (HTTP 422)" in err
        code, _, err = await _cli(capsys, "release", "show", "rel-nope", "--url", url)
        assert code == 2 and "not found" in err
        code, _, err = await _cli(capsys, "release", "create", "--batch", ",", "--url", url)
        assert code == 2 and "name at least one workspace" in err


async def test_an_unreachable_daemon_is_exit_4_and_bad_usage_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    code, _, err = await _cli(capsys, "release", "show", "rel-x", "--url", url)
    assert code == 4 and "cannot reach the daemon" in err
    with pytest.raises(SystemExit) as exited:
        await _cli(capsys, "release", "create", "--url", url)
    assert exited.value.code == 2
    code, _, err = await _cli(
        capsys, "release", "create", "--batch", "a", "--var", "x", "--url", url
    )
    assert code == 2 and "expected NAME=VALUE" in err
