"""The run directory (tfward/actors/rundir.py) with real terraform: an init is kept and reused
for the same configuration, and run again for a changed one. The terraform processes are
counted from outside, by a shim in front of terraform (tests/shim.py)."""

from __future__ import annotations

from pathlib import Path

from harness import demo_workspace, running_daemon, write_config
from shim import counting_terraform


async def test_a_second_run_of_the_same_configuration_runs_no_init_and_a_changed_one_does(
    tmp_path: Path,
) -> None:
    terraform = counting_terraform(tmp_path)
    ws = demo_workspace(tmp_path, things=1)
    config = write_config(tmp_path, [ws], terraform={"binary": str(terraform.binary)})
    async with running_daemon(config) as (daemon, api):

        async def plan() -> str:
            run = await api.create_run("demo", operation="plan")
            await api.wait(run["id"], "planned_and_finished")
            return await api.logs(run["id"])

        await plan()
        assert (terraform.started("init"), terraform.started("plan")) == (1, 1)
        second = await plan()
        assert (terraform.started("init"), terraform.started("plan")) == (1, 2)
        assert "init reused: this configuration was initialised before" in second

        (Path(ws["source"]) / "extra.tf").write_text('output "extra" {\n  value = 1\n}\n')
        changed = await plan()
        assert (terraform.started("init"), terraform.started("plan")) == (2, 3)
        assert "init reused" not in changed
        await plan()  # the changed configuration's init is kept in turn
        assert (terraform.started("init"), terraform.started("plan")) == (2, 4)
