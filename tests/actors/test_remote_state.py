"""Outputs between workspaces (actors/remote_state.py): a run's terraform reads another
workspace's state through `data "terraform_remote_state"` with `backend = "http"`, using the
credential the run was given, for the workspaces its TOML grants (`remote_state_from`) and no
others. Real daemon, real terraform, the demo provider; the consumer is queued by the
producer's apply through a run trigger, as the README advises."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from harness import Api, demo_workspace, facts, running_daemon, until, write_config
from sqlalchemy import Connection, select

from tfward.store.tables import run_credentials

# What the README tells a user to write (its `address` only: the credential comes from the
# environment tfward gives the run).
READS_NETWORK = """
variable "tfward_url" {
  type = string
}

data "terraform_remote_state" "network" {
  backend = "http"
  config = {
    address = "${var.tfward_url}/api/v1/workspaces/network/state"
  }
}

resource "demo_thing" "on_network" {
  name = "app-on-${data.terraform_remote_state.network.outputs.ids[0]}"
}

output "network_thing" {
  value = demo_thing.on_network.name
}
"""


async def test_a_granted_workspace_reads_the_producers_output_and_a_third_one_gets_403(
    tmp_path: Path,
) -> None:
    network = demo_workspace(
        tmp_path, "network", things=1, auto_apply=True, triggers_runs_in=["app"]
    )
    app = demo_workspace(
        tmp_path,
        "app",
        things=0,
        extra_tf=READS_NETWORK,
        remote_state_from=["network"],
        auto_apply_run_trigger=True,
    )
    rogue = demo_workspace(tmp_path, "rogue", things=0, extra_tf=READS_NETWORK, auto_apply=True)
    config = write_config(tmp_path, [network, app, rogue])
    async with running_daemon(config) as (daemon, api):
        produced = await api.wait((await api.create_run("network"))["id"], "applied")
        thing_id = (await api.state_versions("network"))[0]["outputs"]["ids"]["value"][0]
        # The producer's apply queued a run of the consumer (run trigger), auto-applied.
        triggered = await until(daemon, lambda: triggered_by(api, produced["id"]))
        consumed = await api.wait(triggered["id"], "applied")
        [latest, *_] = await api.state_versions("app")
        assert latest["outputs"]["network_thing"]["value"] == f"app-on-{thing_id}"
        assert latest["run_id"] == consumed["id"]

        refused = await api.wait((await api.create_run("rogue"))["id"], "failed")
        assert refused["error_kind"] == "plan"
        assert refused["error_message"] == (
            f"terraform plan failed (exit 1): run {refused['id']} of workspace rogue may not "
            "read the state of workspace 'network': it is not in remote_state_from "
            "(granted: none)"
        )
        log = await api.logs(refused["id"])
        assert "HTTP remote state endpoint invalid auth" in log  # terraform got the 403

        # Each run had its credential, scoped as its TOML says, revoked when it ended.
        for run_id, scope in ((consumed["id"], ["network"]), (refused["id"], [])):
            assert (await facts(daemon, run_id))["run"].finished_at is not None
            rows = await daemon.store.read(partial(credentials_of, run_id=run_id))
            assert [(row.scope, row.revoked_at is not None) for row in rows] == [(scope, True)]


def credentials_of(conn: Connection, run_id: str) -> list[Any]:
    return list(conn.execute(select(run_credentials).where(run_credentials.c.run_id == run_id)))


async def triggered_by(api: Api, source: str) -> dict[str, Any] | None:
    runs = (await api.http.get("/api/v1/workspaces/app/runs")).json()["data"]
    found = [r for r in runs if r["source_run_id"] == source]
    return found[0] if found else None
