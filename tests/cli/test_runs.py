"""`tfward plan|apply|destroy` followed live, `runs`, `run show`, `logs`, `confirm`, `discard`,
`cancel`: against a real daemon with real terraform and the demo provider."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import trio
from harness import FAKE_TERRAFORM, Api, demo_workspace, running_daemon, write_config

FAILING = 'resource "demo_thing" "bad" {\n  name = "bad"\n  fail = true\n}\n'


async def only_run(api: Api, workspace: str) -> dict[str, Any]:
    """The workspace's one run, once it exists (the CLI creates it)."""
    with trio.fail_after(30):
        while True:
            response = await api.http.get(f"/api/v1/workspaces/{workspace}/runs")
            if found := response.json()["data"]:
                return found[0]
            await trio.sleep(0.05)


async def test_apply_with_auto_approve_exits_0_and_the_state_exists(
    tmp_path: Path, tfward: Any
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=2)])
    async with running_daemon(config) as (daemon, api):
        result = await tfward(daemon)("apply", "demo", "--auto-approve")
        assert result.code == 0, result.err
        assert "Plan: 2 to add" in result.out and "Apply complete!" in result.out
        assert "applied after" in result.err and "2 added, 0 changed, 0 destroyed" in result.err
        [sv] = await api.state_versions("demo")
        assert sv["resource_count"] == 2


async def test_plan_exits_0_and_shows_the_plan_without_asking(tmp_path: Path, tfward: Any) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1)])
    async with running_daemon(config) as (daemon, api):
        result = await tfward(daemon)("plan", "demo")
        assert result.code == 0, result.err
        assert "Plan: 1 to add" in result.out
        assert "planned_and_finished" in result.err and "confirm" not in result.err
        assert await api.state_versions("demo") == []


async def test_a_failing_resource_exits_1_and_says_why(tmp_path: Path, tfward: Any) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1, extra_tf=FAILING)])
    async with running_daemon(config) as (daemon, _):
        result = await tfward(daemon)("apply", "demo", "--auto-approve")
        assert result.code == 1
        assert "failed" in result.err and "(apply): " in result.err
        assert "failing on purpose" in result.out


async def test_without_a_terminal_apply_leaves_the_run_waiting_and_says_how_to_confirm(
    tmp_path: Path, tfward: Any
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1)])
    async with running_daemon(config) as (daemon, api):
        cli = tfward(daemon)
        result = await cli("apply", "demo")
        assert result.code == 0, result.err
        run = await only_run(api, "demo")
        assert run["status"] == "apply_pending"
        assert f"`tfward confirm {run['id']}`" in result.err
        assert result.out.rstrip().endswith("[tfward] waiting for confirmation")

        confirmed = await cli("confirm", run["id"])
        assert confirmed.code == 0 and "confirmed" in confirmed.out
        followed = await cli("logs", run["id"], "-f")
        assert followed.code == 0 and "Apply complete!" in followed.out
        assert (await api.run(run["id"]))["status"] == "applied"
        again = await cli("confirm", run["id"])
        assert again.code == 2 and "it is applied (HTTP 409)" in again.err


async def test_answering_no_at_the_prompt_discards_the_run_and_exits_3(
    tmp_path: Path, tfward: Any
) -> None:
    """Asked once: the discard is recorded by the request that makes it, so the CLI, which
    reads the run right after, never sees it waiting for a decision again."""
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1)])
    async with running_daemon(config) as (daemon, api):
        result = await tfward(daemon).converse("apply", "demo", answer=b"no\n")
        assert result.code == 3, result.out
        assert "Apply these changes? [yes/no]: no" in result.out
        assert result.out.count("[yes/no]") == 1, result.out
        run = await only_run(api, "demo")
        assert run["status"] == "discarded" and run["confirmed_by"] is None
        shown = await tfward(daemon)("run", "show", run["id"])
        assert "discarded: " in shown.out and " by admin" in shown.out
        assert "confirmed:" not in shown.out
        assert "reason:    discarded by admin" in shown.out and "error:" not in shown.out


async def test_apply_on_a_terminal_shows_the_plan_asks_applies_and_exits_0(
    tmp_path: Path, tfward: Any
) -> None:
    """The acceptance: `tfward apply demo` in a second shell, answering yes."""
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=2)])
    async with running_daemon(config) as (daemon, api):
        result = await tfward(daemon).converse("apply", "demo", answer=b"yes\n")
        assert result.code == 0, result.out
        text = result.out
        plan, prompt = text.index("Plan: 2 to add"), text.index("Apply these changes? [yes/no]")
        assert plan < prompt < text.index("Apply complete! Resources: 2 added")
        assert "\r\x1b[K" in text and "planning 4/6 planning" in text  # the live status line
        [sv] = await api.state_versions("demo")
        assert sv["resource_count"] == 2


async def test_a_run_cancelled_while_followed_exits_3(tmp_path: Path, tfward: Any) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=2, delay=3)])
    async with running_daemon(config) as (daemon, api):
        outcome: dict[str, Any] = {}

        async def follow() -> None:
            outcome["result"] = await tfward(daemon)("apply", "demo", "--auto-approve")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            run = await only_run(api, "demo")
            await api.wait_stage(run["id"], "applying")
            assert (await api.action(run["id"], "cancel")).status_code == 202
        assert outcome["result"].code == 3
        assert "cancelled" in outcome["result"].err


async def test_cancel_and_then_force_cancel_say_what_each_asked_for(
    tmp_path: Path, tfward: Any
) -> None:
    """A terraform that ignores SIGINT (the fake: real terraform stops too soon to see it)
    keeps applying after the cancel, so the force-cancel finds it still running."""
    script = tmp_path / "fake-script.json"
    script.write_text(json.dumps({"apply": {"ignore_sigint": True, "sleep": 120}}))
    calls = tmp_path / "fake-calls.jsonl"
    ws = demo_workspace(tmp_path, things=1)
    ws["env"] = {**ws["env"], "FAKE_TF_SCRIPT": str(script), "FAKE_TF_CALLS": str(calls)}
    terraform = {"binary": str(FAKE_TERRAFORM), "cancel_grace": "120s"}
    config = write_config(tmp_path, [ws], terraform=terraform)
    async with running_daemon(config) as (daemon, api):
        cli = tfward(daemon)
        run = await api.create_run("demo", auto_apply=True)
        with trio.fail_after(60):  # the fake records its call once SIGINT is ignored
            while not calls.exists() or '"apply"' not in calls.read_text():
                await trio.sleep(0.05)
        cancel = await cli("cancel", run["id"])
        assert cancel.code == 0 and f"run {run['id']}: cancel requested (applying)" in cancel.out
        force = await cli("cancel", run["id"], "--force")
        assert force.code == 0, force.err
        assert force.out.startswith(f"run {run['id']}: force-cancel requested (applying)")
        assert "cancel requested (" not in force.out.replace("force-cancel requested (", "")
        assert (await api.wait(run["id"], "force_cancelled"))["status"] == "force_cancelled"


async def test_a_followed_log_whose_reader_went_away_ends_with_141_and_no_traceback(
    tmp_path: Path, tfward: Any
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1)])
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo", operation="plan")
        await api.wait(run["id"], "planned_and_finished")
        read, write = os.pipe()
        os.close(read)  # `| head` that has already gone
        command = ("logs", run["id"], "-f")
        try:
            done = await trio.run_process(
                [sys.executable, "-m", "tfward.cli.main", *tfward(daemon).argv(command)],
                stdout=write,
                capture_stderr=True,
                check=False,
                env={k: v for k, v in os.environ.items() if not k.startswith("TFWARD_")},
            )
        finally:
            os.close(write)
        assert done.returncode == 141, done.stderr.decode()
        assert b"Traceback" not in done.stderr, done.stderr.decode()


async def test_ctrl_c_while_following_leaves_the_run_alone_and_says_how_to_cancel(
    tmp_path: Path, tfward: Any
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=2, delay=1)])
    async with running_daemon(config) as (daemon, api):
        proc = tfward(daemon).spawn("apply", "demo", "--auto-approve")
        try:
            run = await only_run(api, "demo")
            await api.wait_stage(run["id"], "applying")
            proc.send_signal(signal.SIGINT)
            out, err = await trio.to_thread.run_sync(proc.communicate, None, 30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 130
        assert f"`tfward cancel {run['id']}`" in err.decode()
        assert (await api.wait(run["id"], "applied"))["status"] == "applied"


async def test_runs_and_run_show_print_tables_and_json(tmp_path: Path, tfward: Any) -> None:
    config = write_config(
        tmp_path, [demo_workspace(tmp_path, "a", things=1), demo_workspace(tmp_path, "b")]
    )
    async with running_daemon(config) as (daemon, api):
        cli = tfward(daemon)
        assert (await cli("plan", "a")).code == 0
        run = await only_run(api, "a")

        everywhere = await cli("runs")
        assert everywhere.code == 0 and run["id"] in everywhere.out
        assert everywhere.out.splitlines()[0].split()[:4] == [
            "RUN",
            "WORKSPACE",
            "OPERATION",
            "STATUS",
        ]
        listed = json.loads((await cli("runs", "a", "--json")).out)
        assert [r["id"] for r in listed] == [run["id"]]
        assert json.loads((await cli("runs", "b", "--json")).out) == []

        shown = await cli("run", "show", run["id"])
        assert "status:    planned_and_finished" in shown.out and "+1 ~0 -0" in shown.out
        as_json = json.loads((await cli("run", "show", run["id"], "--json")).out)
        assert as_json["id"] == run["id"] and as_json["status"] == "planned_and_finished"

        log = await cli("logs", run["id"])
        assert log.code == 0 and log.out == await api.logs(run["id"])


async def test_an_unknown_run_or_workspace_exits_2_and_says_where_to_look(
    tmp_path: Path, tfward: Any
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path)])
    async with running_daemon(config) as (daemon, _):
        cli = tfward(daemon)
        unknown_run = await cli("run", "show", "run-nope")
        assert unknown_run.code == 2
        assert "run run-nope not found" in unknown_run.err and "`tfward runs" in unknown_run.err
        unknown_ws = await cli("apply", "nope")
        assert unknown_ws.code == 2 and "`tfward workspaces`" in unknown_ws.err
        refused = await cli("cancel", "run-nope", "--force")
        assert refused.code == 2


async def test_apply_of_an_older_configuration_version_and_run_show_say_which(
    tmp_path: Path, tfward: Any
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1)])
    async with running_daemon(config) as (daemon, api):
        cli = tfward(daemon)
        assert (await cli("apply", "demo", "--auto-approve")).code == 0
        first = await only_run(api, "demo")
        (tmp_path / "demo" / "extra.tf").write_text(FAILING)  # the source moves on, badly
        cv = first["configuration_version_id"]
        again = await cli("apply", "demo", "--configuration-version", cv, "--auto-approve")
        assert again.code == 0, again.err
        [latest, *_] = (await api.http.get("/api/v1/workspaces/demo/runs")).json()["data"]
        shown = await cli("run", "show", latest["id"])
        failing = await cli("apply", "demo", "--auto-approve")
        run = (await api.http.get("/api/v1/workspaces/demo/runs")).json()["data"][0]
        failed = await cli("run", "show", run["id"])
    assert latest["configuration_version_id"] == cv and "No changes." in again.out
    sha = first["configuration_sha256"][:12]
    assert f"config:    {cv} (sha256 {sha}), chosen for this run" in shown.out
    assert failing.code == 1
    assert "error:     apply (permanent): terraform apply failed" in failed.out
