"""Notifications through the real daemon: run outcomes reach real receivers on loopback, every
attempt is in the delivery log, dead rows are retried through the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from harness import Api, any_change, demo_workspace, running_daemon
from receiver import Receiver, followups_config, serving

from tfward.config import Config, load_config

TOKEN = "s3cret-notification-token"


def destination(url: str, *triggers: str, **settings: Any) -> dict[str, Any]:
    return {"name": "hook", "type": "generic", "url": url, "token": TOKEN,
            "triggers": list(triggers), "retry_interval": "200ms", **settings}


async def outbox(api: Api, **params: str) -> list[dict[str, Any]]:
    response = await api.http.get("/api/v1/outbox", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def attempts(api: Api, **params: str) -> list[dict[str, Any]]:
    response = await api.http.get("/api/v1/notifications/deliveries", params=params)
    assert response.status_code == 200, response.text
    return sorted(response.json()["data"], key=lambda a: a["attempt"])


async def pending_run(api: Api, workspace: str) -> str:
    """A run that stays pending: the workspace is locked by a user first (no terraform)."""
    response = await api.http.post(f"/api/v1/workspaces/{workspace}/actions/lock")
    assert response.status_code == 200, response.text
    return str((await api.create_run(workspace))["id"])


async def test_a_run_outcome_reaches_a_receiver_that_was_down_for_three_attempts(
    tmp_path: Path,
) -> None:
    receiver = Receiver(fail_first=3, token=TOKEN)
    async with serving(receiver):
        ws = demo_workspace(tmp_path, things=1, notifications=["hook"])
        config = followups_config(
            tmp_path, [ws], [destination(receiver.at("/tfe"), "run:completed")])
        async with running_daemon(config) as (daemon, api):
            run = await api.create_run("demo", operation="plan", message="speculative")
            await api.wait(run["id"], "planned_and_finished")
            [got] = await receiver.wait_for_ok(1)
            # The receiver answered; the daemon records that (and the attempt) just after.
            [row] = await _wait_rows(api, daemon, kind="deliver", status="done")
            log = await attempts(api, run_id=run["id"])
    assert [r.answered for r in receiver.received] == [503, 503, 503, 200]
    assert got.signature_ok(TOKEN) and got.trigger == "run:completed"
    assert got.payload["run_id"] == run["id"] and got.payload["workspace_name"] == "demo"
    assert got.payload["notifications"][0]["run_status"] == "planned_and_finished"
    assert [(a["attempt"], a["delivered"], a["status_code"]) for a in log] == [
        (1, False, 503), (2, False, 503), (3, False, 503), (4, True, 200)]
    assert all(a["destination"] == "hook" and a["workspace"] == "demo" for a in log)
    assert row["status"] == "done" and row["attempts"] == 4 and "idempotency_key" not in row


async def test_cancelled_runs_notify_run_cancelled_and_failed_runs_run_errored(
    tmp_path: Path,
) -> None:
    receiver = Receiver(token=TOKEN)
    failing = 'resource "demo_thing" "bad" {\n  name = "bad"\n  fail = true\n}\n'
    async with serving(receiver):
        workspaces = [
            demo_workspace(tmp_path, "calm", things=1, notifications=["hook"]),
            demo_workspace(tmp_path, "broken", things=0, extra_tf=failing, auto_apply=True,
                           notifications=["hook"]),
        ]
        config = followups_config(tmp_path, workspaces, [
            destination(receiver.at("/tfe"), "run:cancelled", "run:errored")])
        async with running_daemon(config) as (daemon, api):
            cancelled = await pending_run(api, "calm")
            assert (await api.action(cancelled, "cancel")).status_code == 202
            await api.wait(cancelled, "cancelled")
            failed = (await api.create_run("broken"))["id"]
            await api.wait(failed, "failed")
            got = await receiver.wait_for_ok(2)
    by_run = {r.payload["run_id"]: r.payload["notifications"][0] for r in got}
    assert by_run[cancelled]["trigger"] == "run:cancelled"
    assert by_run[cancelled]["message"] == "Run Cancelled"
    assert by_run[cancelled]["run_status"] == "cancelled"
    assert by_run[failed]["trigger"] == "run:errored"
    assert by_run[failed]["message"] == "Run Errored" and by_run[failed]["run_status"] == "failed"
    assert len(receiver.received) == 2


async def test_a_dead_row_is_listed_and_can_be_retried_through_the_api_only_when_dead(
    tmp_path: Path,
) -> None:
    receiver = Receiver(status=500)
    async with serving(receiver):
        ws = demo_workspace(tmp_path, things=1, notifications=["hook"])
        config = followups_config(tmp_path, [ws], [
            destination(receiver.at("/tfe"), "run:created", retries=1, retry_interval="50ms")])
        async with running_daemon(config) as (daemon, api):
            run_id = await pending_run(api, "demo")
            await receiver.wait_until(lambda r: len(r.received) == 2)
            [dead] = await _wait_rows(api, daemon, status="dead", kind="deliver")
            assert dead["attempts"] == 2 and "500" in dead["last_error"]
            assert dead["run_id"] == run_id and dead["workspace"] == "demo"
            [done] = await outbox(api, kind="notify", status="done")
            refused = await api.http.post(f"/api/v1/outbox/{done['id']}/actions/retry")
            unknown = await api.http.post("/api/v1/outbox/ob-nope/actions/retry")
            bad_status = await api.http.get("/api/v1/outbox", params={"status": "lost"})
            receiver.status = 200
            retried = await api.http.post(f"/api/v1/outbox/{dead['id']}/actions/retry")
            assert retried.status_code == 202, retried.text
            assert retried.json()["data"]["status"] == "queued"
            await receiver.wait_for_ok(1)
            [row] = await _wait_rows(api, daemon, status="done", kind="deliver")
            log = await attempts(api, outbox_id=dead["id"])
            again = await api.http.post(f"/api/v1/outbox/{dead['id']}/actions/retry")
    assert refused.status_code == 409 and "only dead rows" in refused.json()["error"]["message"]
    assert unknown.status_code == 404 and bad_status.status_code == 422
    assert again.status_code == 409
    assert row["id"] == dead["id"] and row["attempts"] == 1
    assert [(a["attempt"], a["status_code"]) for a in log] == [(1, 200), (1, 500), (2, 500)]


def release_notification_config(tmp_path: Path, receiver: Receiver, slack: Receiver) -> Config:
    """Releases on; dev-a names destinations a, b; dev-b names a, quiet (no release trigger)
    and chat (Slack); other (never in a release) names c."""
    workspaces = [
        demo_workspace(tmp_path, "dev-a", things=1, notifications=["a", "b"]),
        demo_workspace(tmp_path, "dev-b", things=1, notifications=["a", "quiet", "chat"]),
        demo_workspace(tmp_path, "other", things=1, notifications=["c"]),
    ]
    releases = ["release:completed", "release:failed"]
    config = followups_config(tmp_path, workspaces, [
        {**destination(receiver.at("/a"), *releases), "name": "a"},
        {**destination(receiver.at("/b"), *releases), "name": "b"},
        {**destination(receiver.at("/c"), *releases), "name": "c"},
        {**destination(receiver.at("/quiet"), "run:errored"), "name": "quiet"},
        {"name": "chat", "type": "slack", "url": slack.at("/chat"), "triggers": releases},
    ])  # fmt: skip
    config.path.write_text(config.path.read_text() + "\n[releases]\nenabled = true\n")
    return load_config(config.path)


async def test_a_release_end_reaches_each_destination_of_its_workspaces_once(
    tmp_path: Path,
) -> None:
    """Destinations named by the release's workspaces (dev-a: a, b; dev-b: a, quiet, chat) get
    `release:completed` once each, if they want it (quiet does not); one named only by a
    workspace outside the release (c) gets nothing."""
    receiver, slack = Receiver(token=TOKEN), Receiver()  # Slack's requests carry no signature
    async with serving(receiver, slack):
        config = release_notification_config(tmp_path, receiver, slack)
        async with running_daemon(config) as (daemon, api):
            created = await api.http.post(
                "/api/v1/releases", json={"name": "roll", "batches": [["dev-a"], ["dev-b"]]}
            )
            assert created.status_code == 201, created.text
            release = created.json()["data"]
            got = await receiver.wait_for_ok(2, within=120)
            [chat] = await slack.wait_for_ok(1)
            [notify] = [
                row for row in await _wait_rows(api, daemon, kind="notify", status="done")
                if row["payload"]["trigger"] == "release:completed"
            ]
            deliveries = [
                row["payload"]["destination"] for row in await outbox(api, kind="deliver")
                if row["payload"]["trigger"] == "release:completed"
            ]
            view = (await api.http.get(f"/api/v1/releases/{release['id']}")).json()["data"]
    assert view["status"] == "succeeded" and notify["workspace"] is None
    assert sorted(deliveries) == ["a", "b", "chat"]
    assert sorted(r.path for r in got) == ["/a", "/b"]
    # Nothing to c, nothing to quiet, nothing twice.
    assert len(receiver.received) == 2 and len(slack.received) == 1
    generic = next(r for r in got if r.path == "/a")
    assert generic.signature_ok(TOKEN) and generic.headers["x-tfward-delivery"]
    body = generic.payload
    assert body["notifications"][0] == {
        "message": "Release Completed", "trigger": "release:completed", "run_status": None,
        "run_updated_at": body["notifications"][0]["run_updated_at"], "run_updated_by": "admin",
    }  # fmt: skip
    assert (body["run_id"], body["workspace_name"], body["workspace_id"]) == (None, None, None)
    assert body["release"] == {
        "id": release["id"], "name": "roll", "status": "succeeded",
        "url": f"{config.daemon.public_url}/api/v1/releases/{release['id']}", "error": None,
        "rollout": "the current source", "workspaces": ["dev-a", "dev-b"], "created_by": "admin",
        "counts": {"total": 2, "succeeded": 2, "failed": 0, "skipped": 0, "cancelled": 0},
    }  # fmt: skip
    text = chat.payload["text"]
    assert text.startswith(f"*Release Completed*: release `roll` <{body['release']['url']}|")
    assert text.endswith(f"|{release['id']}> (succeeded)\nrelease roll succeeded")


async def _wait_rows(api: Api, daemon: Any, **params: str) -> list[dict[str, Any]]:
    """Until the outbox has rows matching `params` (woken by the daemon's commits)."""
    with trio.fail_after(30), any_change(daemon.store) as changed:
        while True:
            rows = await outbox(api, **params)
            if rows:
                return rows
            with trio.move_on_after(0.5):
                await changed.wait()
