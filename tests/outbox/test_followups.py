"""Follow-ups of applies and stored states through the real daemon, with real terraform: run
triggers chained A -> B -> C, the resource inventory, drift found behind terraform's back and
cleared by the next apply."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import Api, demo_workspace, running_daemon, until, write_config
from receiver import Receiver, followups_config, serving
from sqlalchemy import update

from tfward.daemon.service import Daemon
from tfward.store import outbox as outbox_store
from tfward.store.tables import outbox


async def runs_of(api: Api, workspace: str) -> list[dict[str, Any]]:
    response = await api.http.get(f"/api/v1/workspaces/{workspace}/runs")
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def triggered_by(api: Api, daemon: Daemon, workspace: str, source: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        found = [r for r in await runs_of(api, workspace) if r["source_run_id"] == source]
        return found[0] if found else None

    return dict(await until(daemon, check))


async def test_an_apply_triggers_runs_down_a_chain_of_workspaces_once_each(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, [
        demo_workspace(tmp_path, "a", things=1, auto_apply=True, triggers_runs_in=["b"]),
        demo_workspace(tmp_path, "b", things=1, triggers_runs_in=["c"],
                       auto_apply_run_trigger=True),
        demo_workspace(tmp_path, "c", things=1),
    ])
    async with running_daemon(config) as (daemon, api):
        source = (await api.create_run("a", message="ship it"))["id"]
        await api.wait(source, "applied")
        b_run = await triggered_by(api, daemon, "b", source)
        assert b_run["operation"] == "plan_and_apply" and b_run["auto_apply"] is True
        assert b_run["created_by"] == "run-trigger:a" and source in b_run["message"]
        await api.wait(b_run["id"], "applied")
        c_run = await triggered_by(api, daemon, "c", b_run["id"])
        assert c_run["auto_apply"] is False  # c does not set auto_apply_run_trigger
        await api.wait(c_run["id"], "apply_pending")
        assert (await api.action(c_run["id"], "confirm")).status_code == 202
        await api.wait(c_run["id"], "applied")

        # The job run again (as after a crash) finds its run and creates no second one.
        def requeue(conn: Any) -> None:
            conn.execute(update(outbox).where(outbox.c.kind == "run_trigger")
                         .values(status="queued"))

        await daemon.store.write(requeue)

        async def all_done() -> bool:
            rows = await daemon.store.read(
                lambda c: outbox_store.list_rows(c, kind="run_trigger"))
            return len(rows) == 2 and all(r["status"] == "done" for r in rows)

        await until(daemon, all_done)
        # An apply that changes nothing triggers nothing.
        again = (await api.create_run("a"))["id"]
        await api.wait(again, "planned_and_finished")
        b_runs, c_runs = await runs_of(api, "b"), await runs_of(api, "c")
        a_state = await api.state_versions("a")
    assert [r["source_run_id"] for r in b_runs] == [source]
    assert [r["source_run_id"] for r in c_runs] == [b_run["id"]]
    assert len(a_state) == 1


async def test_the_inventory_follows_every_stored_state_including_destroy_and_rollback(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=2, auto_apply=True)])
    async with running_daemon(config) as (daemon, api):

        async def synced(serial: int) -> Any:
            async def check() -> list[dict[str, Any]] | None:
                ws = await api.workspace("demo")
                if (ws["inventory"] or {}).get("serial") != serial:
                    return None
                response = await api.http.get("/api/v1/workspaces/demo/resources")
                return [ws["inventory"], response.json()["data"]]

            return await until(daemon, check)

        await api.wait((await api.create_run("demo"))["id"], "applied")
        [first] = await api.state_versions("demo")
        status, resources = await synced(first["serial"])
        stored = {json.loads(p.read_text())["id"] for p in (tmp_path / "demo-store").iterdir()}
        by_type = (await api.http.get("/api/v1/resources", params={"type": "demo_thing"})).json()
        other = (await api.http.get("/api/v1/resources", params={"type": "aws_vpc"})).json()

        await api.wait((await api.create_run("demo", operation="destroy"))["id"], "applied")
        _, after_destroy = await synced((await api.state_versions("demo"))[0]["serial"])
        rollback = await api.http.post(
            f"/api/v1/workspaces/demo/state-versions/{first['id']}/rollback")
        assert rollback.status_code == 201, rollback.text
        status_back, after_rollback = await synced(rollback.json()["data"]["serial"])
    assert status["status"] == "synced" and status["state_version_id"] == first["id"]
    assert [r["address"] for r in resources] == ["demo_thing.this[0]", "demo_thing.this[1]"]
    assert {r["id"] for r in resources} == stored
    assert all(r["provider"] == "example.com/tfward/demo" and r["mode"] == "managed"
               and r["type"] == "demo_thing" and r["workspace"] == "demo" for r in resources)
    assert [r["index"] for r in resources] == [0, 1]
    assert by_type["data"] == resources and other["data"] == []
    assert after_destroy == []
    assert [r["address"] for r in after_rollback] == ["demo_thing.this[0]", "demo_thing.this[1]"]
    assert status_back["status"] == "synced"


async def test_drift_made_behind_terraforms_back_is_found_notified_and_cleared_by_an_apply(
    tmp_path: Path,
) -> None:
    receiver = Receiver()
    async with serving(receiver):
        ws = demo_workspace(tmp_path, things=2, auto_apply=True, drift_check="1s",
                            notifications=["hook"])
        config = followups_config(tmp_path, [ws], [{
            "name": "hook", "type": "generic", "url": receiver.at("/drift"),
            "triggers": ["assessment:drifted", "run:completed"]}])
        async with running_daemon(config) as (daemon, api):
            applied = (await api.create_run("demo"))["id"]
            await api.wait(applied, "applied")
            store = tmp_path / "demo-store"
            things = sorted(store.iterdir(), key=lambda p: json.loads(p.read_text())["name"])
            changed = json.loads(things[0].read_text())
            changed["value"] = "edited by hand"
            things[0].write_text(json.dumps(changed))
            things[1].unlink()

            async def drifted() -> dict[str, Any] | None:
                found = (await api.workspace("demo"))["drift"]
                return found if found["drifted"] else None

            drift = await until(daemon, drifted)
            await receiver.wait_until(
                lambda r: any(x.trigger == "assessment:drifted" for x in r.answered_ok()))
            fix = (await api.create_run("demo", message="put it back"))["id"]
            await api.wait(fix, "applied")

            async def cleared() -> dict[str, Any] | None:
                found = (await api.workspace("demo"))["drift"]
                return None if found["drifted"] else found

            after = await until(daemon, cleared)
            checks = [r for r in await runs_of(api, "demo") if r["refresh_only"]]
    assert drift["addresses"] == ["demo_thing.this[0]", "demo_thing.this[1]"]
    assert drift["check_run_id"] in {c["id"] for c in checks}
    assert all(c["operation"] == "plan" and c["created_by"] == "drift-check" for c in checks)
    assert after["cleared_by_run_id"] == fix and after["addresses"] == []
    alerts = [r for r in receiver.received if r.trigger == "assessment:drifted"]
    assert len(alerts) == 1
    assert alerts[0].payload["notifications"][0]["message"].startswith("Drift detected in 2")
    completed = {r.payload["run_id"] for r in receiver.received if r.trigger == "run:completed"}
    assert applied in completed and not completed & {c["id"] for c in checks}
