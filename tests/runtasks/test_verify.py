"""`tfward check-config --verify-run-tasks`: the HCP verification call to every task."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio
from harness import REPO, demo_workspace
from taskservice import TaskService, closed_url, task_table, write_task_config


async def _check(config_path: Path) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [
            sys.executable,
            "-m",
            "tfward.cli.main",
            "check-config",
            str(config_path),
            "--verify-run-tasks",
        ],
        cwd=REPO,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def test_every_task_answering_the_test_call_passes(
    tmp_path: Path, task_service: TaskService
) -> None:
    task_service.behaviour["scan"] = "never"
    config = write_task_config(
        tmp_path, [demo_workspace(tmp_path)], [task_table(task_service, "scan")]
    )
    done = await _check(config.path)
    assert done.returncode == 0, done.stderr.decode()
    assert "run task scan: 200 ok" in done.stdout.decode()
    (request,) = task_service.received
    assert request.signature_ok
    assert (request.payload["access_token"], request.payload["stage"]) == ("test-token", "test")


async def test_a_task_that_does_not_answer_200_fails_the_check(
    tmp_path: Path, task_service: TaskService
) -> None:
    task_service.behaviour.update({"ok": "never", "broken": "error"})
    tasks = [
        task_table(task_service, "ok"),
        task_table(task_service, "broken"),
        {**task_table(task_service, "gone"), "url": closed_url()},
    ]
    config = write_task_config(tmp_path, [demo_workspace(tmp_path)], tasks)
    done = await _check(config.path)
    out = done.stdout.decode()
    assert done.returncode == 1, out
    assert "run task ok: 200 ok" in out
    assert "run task broken: the task service answered 500, not 200 (after 1 attempt)" in out
    assert "run task gone: ConnectError" in out
