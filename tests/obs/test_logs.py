"""The daemon's own log (tfward/obs/logs.py): JSON lines with run and job context (seed M9)."""

from __future__ import annotations

import io
import json
import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio
from harness import DaemonProcess, demo_workspace, running_daemon, write_config

from tfward.obs import logs


@contextmanager
def captured(fmt: str) -> Iterator[io.StringIO]:
    """Root log records at INFO, formatted as the daemon formats them, into a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.ContextFilter())
    handler.setFormatter(logs.JsonFormatter() if fmt == "json" else logs.TextFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_a_json_line_carries_the_context_that_applies_and_nothing_else() -> None:
    with captured("json") as out:
        with logs.bound(run_id="run-1", workspace="demo"):
            logging.getLogger("tfward.test").warning("planning %s", "now")
        logging.getLogger("tfward.test").info("no context")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "planning now" and first["level"] == "warning"
    assert (first["run_id"], first["workspace"]) == ("run-1", "demo")
    assert first["logger"] == "tfward.test"
    assert "stage" not in first and "job_id" not in first and first["time"].endswith("+00:00")
    assert set(second) == {"time", "level", "logger", "message"}


def test_an_exception_travels_inside_its_json_line() -> None:
    with captured("json") as out:
        try:
            raise ValueError("bad")
        except ValueError:
            logging.getLogger("tfward.test").exception("it broke")
    [line] = out.getvalue().splitlines()
    assert "ValueError: bad" in json.loads(line)["exception"]


def test_the_text_format_puts_the_context_after_the_message() -> None:
    with captured("text") as out, logs.bound(job_id="ob-1"):
        logging.getLogger("tfward.test").info("delivered")
    assert out.getvalue().rstrip().endswith("tfward.test: delivered [job_id=ob-1]")


async def test_the_daemon_logs_a_run_with_its_run_id_workspace_and_stage(tmp_path: Path) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1)])
    with captured("json") as out:
        async with running_daemon(config) as (daemon, api):
            run = await api.create_run("demo", operation="plan")
            await api.wait(run["id"], "planned_and_finished")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    finished = [e for e in lines if e.get("run_id") == run["id"] and "finished" in e["message"]]
    assert finished and finished[0]["workspace"] == "demo" and finished[0]["stage"]


async def test_serve_logs_only_json_lines_without_library_noise_and_ends_with_stopped(
    tmp_path: Path,
) -> None:
    """`tfward serve` as a process, first start (the schema is created) to a drained SIGTERM:
    every line of its output (stderr merged in) is one JSON object."""
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1)])
    daemon = DaemonProcess(config)
    async with trio.open_nursery() as nursery:
        await daemon.start(nursery)
        async with daemon.client() as client:
            run = (await client.post("/api/v1/workspaces/demo/runs", json={})).json()["data"]
            await client.get(
                f"/api/v1/runs/{run['id']}",
                params={"wait_status": "apply_pending", "wait_timeout": "60"},
                timeout=70,
            )
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    lines = daemon.output.decode().splitlines()
    entries = [json.loads(line) for line in lines]  # a plain-text line fails here
    messages = [e["message"] for e in entries]
    assert not [m for m in messages if "setup plugin" in m or "Context impl" in m], messages
    assert [e["logger"] for e in entries if "Running on http" in e["message"]] == [
        "hypercorn.error"
    ]
    assert any(m.startswith("database schema migrated from empty to ") for m in messages)
    assert entries[-1]["message"] == "tfward stopped (received SIGTERM)", messages[-3:]
