"""The run pipeline (tfward/actors/pipeline.py) with real terraform: `[daemon]
max_concurrent_runs` bounds the terraform processes of all workspaces together. Processes are
counted from outside, by a shim in front of terraform that logs each start and end in order
(tests/shim.py)."""

from __future__ import annotations

from pathlib import Path

from harness import demo_workspace, running_daemon, write_config
from shim import counting_terraform


async def test_never_more_terraform_processes_run_than_max_concurrent_runs(
    tmp_path: Path,
) -> None:
    terraform = counting_terraform(tmp_path)
    names = ["w1", "w2", "w3"]
    workspaces = [
        demo_workspace(tmp_path, name, things=2, vars={"delay": 1}, auto_apply=True)
        for name in names
    ]
    config = write_config(
        tmp_path,
        workspaces,
        daemon={"max_concurrent_runs": 1},
        terraform={"binary": str(terraform.binary)},
    )
    async with running_daemon(config) as (daemon, api):
        ids = [(await api.create_run(name))["id"] for name in names]
        runs = [await api.wait(run_id, "applied", timeout=120) for run_id in ids]
    # The three runs were in flight together (each started before any ended), so only the
    # limit kept their terraform processes apart.
    started = max(r["timestamps"]["started_at"] for r in runs)
    assert started < min(r["timestamps"]["finished_at"] for r in runs)
    assert terraform.started("apply") == 3 and terraform.most_at_once() == 1
