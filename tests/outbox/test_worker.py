"""The outbox worker against real HTTP receivers on loopback, with a real SQLite store:
retries with growing intervals, dead-lettering and manual retry, bounded concurrency, order per
workspace, lease expiry, receivers that hang."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from harness import demo_workspace
from receiver import Receiver, followups_config, serving, worker_env
from sqlalchemy import Connection

from tfward.config import Config
from tfward.ids import now
from tfward.outbox import notifications
from tfward.runs.model import Operation, Run
from tfward.store import deliveries
from tfward.store import outbox as outbox_store
from tfward.store import runs as run_store

TOKEN = "notification-token-for-tests"
PAYLOAD_KEYS = {
    "payload_version", "notification_configuration_id", "run_url", "run_id", "run_message",
    "run_created_at", "run_created_by", "workspace_id", "workspace_name", "organization_name",
    "notifications",
}


def hook(url: str, **settings: Any) -> dict[str, Any]:
    return {"name": "hook", "type": "generic", "url": url, "token": TOKEN,
            "triggers": ["run:created"], "retry_interval": "200ms", **settings}


def config_for(tmp_path: Path, destinations: list[dict[str, Any]], names: tuple[str, ...] = ("a",),
               **outbox: Any) -> Config:
    workspaces = [demo_workspace(tmp_path, n, notifications=[d["name"] for d in destinations])
                  for n in names]
    return followups_config(tmp_path, workspaces, destinations, outbox or None)


def create_run(conn: Connection, ws_ids: dict[str, str], name: str, message: str = "") -> Run:
    """A pending run, as the API makes one: its `run:created` notification comes with it."""
    return run_store.create_run(conn, workspace_id=ws_ids[name], workspace_name=name,
                                operation=Operation.PLAN_AND_APPLY, auto_apply=False,
                                message=message, created_by="test")


def done_rows(kind: str, count: int) -> Any:
    def check(conn: Connection) -> list[dict[str, Any]] | None:
        rows = outbox_store.list_rows(conn, kind=kind, limit=10_000)
        finished = [r for r in rows if r["status"] in ("done", "dead")]
        return finished if len(finished) >= count else None

    return check


async def test_a_receiver_down_for_three_attempts_gets_it_on_the_fourth_with_growing_waits(
    tmp_path: Path,
) -> None:
    receiver = Receiver(fail_first=3, token=TOKEN)
    async with serving(receiver):
        config = config_for(tmp_path, [hook(receiver.at("/hook"))])
        async with worker_env(config) as env:
            run = env.store.run_sync(lambda c: create_run(c, env.rt.workspace_ids, "a", "hello"))
            await env.start_worker()
            [row] = await env.until(done_rows("deliver", 1))
            attempts = env.store.run_sync(
                lambda c: deliveries.list_attempts(c, outbox_id=row["id"]))
    assert row["status"] == "done" and row["attempts"] == 4
    assert [r.answered for r in receiver.received] == [503, 503, 503, 200]
    assert all(r.signature_ok(TOKEN) for r in receiver.received)
    # Each wait is at least the doubled interval (the scheduled waits themselves grow strictly:
    # test_policy.py); what a loaded machine adds on top only makes them longer.
    waits = [b.at - a.at for a, b in zip(receiver.received, receiver.received[1:], strict=False)]
    assert waits[0] >= 0.2 and waits[1] >= 0.4 and waits[2] >= 0.8
    assert waits[2] > waits[0]
    log = sorted(attempts, key=lambda a: a["attempt"])
    assert [(a["attempt"], a["delivered"], a["status_code"]) for a in log] == [
        (1, False, 503), (2, False, 503), (3, False, 503), (4, True, 200)]
    assert all(a["latency_ms"] >= 0 and a["created_at"] for a in log)
    assert "503" in log[0]["error"] and log[3]["error"] is None
    body = receiver.received[-1].payload
    assert set(body) == PAYLOAD_KEYS and body["payload_version"] == 1
    assert body["run_id"] == run.id and body["run_message"] == "hello"
    assert body["workspace_name"] == "a" and body["organization_name"] == "tests"
    assert body["notification_configuration_id"].startswith("nc-")
    assert body["notifications"] == [{
        "message": "Run Created", "trigger": "run:created", "run_status": "pending",
        "run_updated_at": body["notifications"][0]["run_updated_at"], "run_updated_by": "test"}]
    # Every attempt carried the same delivery id: a receiver can drop duplicates.
    assert len({r.headers["x-tfward-delivery"] for r in receiver.received}) == 1


async def test_a_receiver_that_answers_500_forever_dead_letters_the_row_until_retried(
    tmp_path: Path,
) -> None:
    receiver = Receiver(status=500)
    async with serving(receiver):
        config = config_for(tmp_path, [hook(receiver.at("/hook"), retries=2,
                                            retry_interval="50ms", token="")])
        async with worker_env(config) as env:
            env.store.run_sync(lambda c: create_run(c, env.rt.workspace_ids, "a"))
            await env.start_worker()
            [dead] = await env.until(done_rows("deliver", 1))
            assert dead["status"] == "dead" and dead["attempts"] == 3
            assert "500" in dead["last_error"]
            assert len(receiver.received) == 3
            receiver.status = 200
            retried = await env.store.write(
                lambda c: outbox_store.retry_dead(c, dead["id"], now()))
            assert retried["status"] == "queued" and retried["attempts"] == 0

            def delivered(conn: Connection) -> dict[str, Any] | None:
                row = outbox_store.get_row(conn, dead["id"])
                return row if row["status"] == "done" else None

            row = await env.until(delivered)
            log = env.store.run_sync(lambda c: deliveries.list_attempts(c, outbox_id=row["id"]))
    assert row["attempts"] == 1 and row["last_error"] is None
    assert [r.answered for r in receiver.received] == [500, 500, 500, 200]
    assert sorted(a["delivered"] for a in log) == [False, False, False, True]


async def test_two_hundred_notifications_to_a_slow_receiver_never_exceed_the_concurrency(
    tmp_path: Path,
) -> None:
    receiver = Receiver(delay=0.05)
    async with serving(receiver):
        config = config_for(tmp_path, [hook(receiver.at("/hook"))], concurrency=4)
        payload = notifications.verification_payload(config, "hook")

        def queue(conn: Connection) -> None:
            for i in range(200):
                outbox_store.enqueue(conn, "deliver", {
                    "destination": "hook", "trigger": "verification", "notification": payload,
                }, key=f"test:{i}")

        async with worker_env(config) as env:
            env.store.run_sync(queue)
            await env.start_worker()
            rows = await env.until(done_rows("deliver", 200), within=60)
    assert {r["status"] for r in rows} == {"done"}
    assert receiver.max_in_flight == 4
    assert len({r.headers["x-tfward-delivery"] for r in receiver.received}) == 200
    assert len(receiver.received) == 200


async def test_rows_of_a_workspace_run_in_order_and_never_wait_for_another_workspace(
    tmp_path: Path,
) -> None:
    slow_start, healthy = Receiver(fail_first=2), Receiver()
    async with serving(slow_start, healthy):
        destinations = [hook(slow_start.at("/a"), name="to-a", retry_interval="500ms"),
                        hook(healthy.at("/b"), name="to-b")]
        workspaces = [demo_workspace(tmp_path, "a", notifications=["to-a"]),
                      demo_workspace(tmp_path, "b", notifications=["to-b"])]
        config = followups_config(tmp_path, workspaces, destinations)
        async with worker_env(config) as env:
            ids = env.rt.workspace_ids
            runs = env.store.run_sync(lambda c: [create_run(c, ids, n, f"{n}{i}")
                                                 for i in range(3) for n in ("a", "b")])
            await env.start_worker()
            await env.until(done_rows("deliver", 6))
    a_runs = [r.id for r in runs if r.workspace == "a"]
    sent_to_a = [r.payload["run_id"] for r in slow_start.received]
    assert sent_to_a == [a_runs[0]] * 3 + a_runs[1:]
    first_ok_at_a = slow_start.answered_ok()[0].at
    assert len(healthy.received) == 3 and all(r.at < first_ok_at_a for r in healthy.received)


async def test_a_row_whose_worker_died_is_run_exactly_once_after_its_lease_runs_out(
    tmp_path: Path,
) -> None:
    receiver = Receiver()
    async with serving(receiver):
        config = config_for(tmp_path, [hook(receiver.at("/hook"))], lease="1s")
        payload = notifications.verification_payload(config, "hook")
        async with worker_env(config) as env:
            env.store.run_sync(lambda c: outbox_store.enqueue(c, "deliver", {
                "destination": "hook", "trigger": "verification", "notification": payload,
            }, key="lease-test"))
            # A first worker claims the row with a 1 s lease, then dies before running it.
            [abandoned] = await env.store.write(lambda c: outbox_store.claim(c, now(), 1, 1.0))
            claimed_at = trio.current_time()
            await env.start_worker()
            [row] = await env.until(done_rows("deliver", 1))
            stale_write = await env.store.write(lambda c: outbox_store.finish(c, abandoned, now()))
    assert row["status"] == "done" and row["attempts"] == 2
    assert len(receiver.received) == 1
    assert receiver.received[0].at - claimed_at >= 0.9
    assert stale_write is False  # the dead worker's late write cannot touch the new attempt


async def test_a_receiver_that_hangs_times_out_within_the_lease_and_is_retried(
    tmp_path: Path,
) -> None:
    receiver = Receiver(hang=True)
    async with serving(receiver):
        config = config_for(tmp_path, [hook(receiver.at("/hook"), retries=1,
                                            retry_interval="100ms")], lease="2s")
        async with worker_env(config) as env:
            env.store.run_sync(lambda c: create_run(c, env.rt.workspace_ids, "a"))
            await env.start_worker()
            [row] = await env.until(done_rows("deliver", 1))
            log = env.store.run_sync(lambda c: deliveries.list_attempts(c, outbox_id=row["id"]))
    assert row["status"] == "dead" and row["attempts"] == 2
    assert len(receiver.received) == 2
    assert all(a["error"] == "no answer within 0.8s" and a["status_code"] is None for a in log)
    assert all(700 <= a["latency_ms"] < 1000 for a in log)


async def test_a_slack_destination_gets_a_text_body_and_no_signature(tmp_path: Path) -> None:
    receiver = Receiver()
    async with serving(receiver):
        slack = {"name": "chat", "type": "slack", "url": receiver.at("/slack"),
                 "triggers": ["run:created"]}
        config = config_for(tmp_path, [slack])
        async with worker_env(config) as env:
            run = env.store.run_sync(lambda c: create_run(c, env.rt.workspace_ids, "a"))
            await env.start_worker()
            await env.until(done_rows("deliver", 1))
    [got] = receiver.received
    assert set(got.payload) == {"text"} and "Run Created" in got.payload["text"]
    assert run.id in got.payload["text"] and "`a`" in got.payload["text"]
    assert "x-tfe-notification-signature" not in got.headers


async def test_destinations_receive_only_their_triggers_and_jobs_of_unknown_kinds_die(
    tmp_path: Path,
) -> None:
    receiver = Receiver()
    async with serving(receiver):
        config = config_for(tmp_path, [hook(receiver.at("/hook"), triggers=["run:errored"])])
        async with worker_env(config) as env:
            env.store.run_sync(lambda c: create_run(c, env.rt.workspace_ids, "a"))
            env.store.run_sync(lambda c: outbox_store.enqueue(c, "mystery", {}, key="mystery"))
            await env.start_worker()
            [notify] = await env.until(done_rows("notify", 1))
            [mystery] = await env.until(done_rows("mystery", 1))
            delivers = env.store.run_sync(lambda c: outbox_store.list_rows(c, kind="deliver"))
    assert notify["status"] == "done" and delivers == [] and receiver.received == []
    assert mystery["status"] == "dead" and "unknown outbox job kind" in mystery["last_error"]


async def test_rows_done_and_attempts_older_than_keep_are_pruned_and_nothing_else(
    tmp_path: Path,
) -> None:
    receiver = Receiver(status=500, token=TOKEN)
    async with serving(receiver):
        config = config_for(tmp_path, [hook(receiver.at("/hook"), retries=1)], keep="2s")
        async with worker_env(config) as env:
            env.store.run_sync(lambda c: create_run(c, env.rt.workspace_ids, "a"))
            await env.start_worker()
            finished = await env.until(done_rows("deliver", 1))
            # The notify row is done (it queued the delivery), the delivery dead after 2 tries.
            assert {r["kind"]: r["status"] for r in finished + (await env.until(
                done_rows("notify", 1)))} == {"deliver": "dead", "notify": "done"}  # fmt: skip

            def pruned(conn: Connection) -> list[dict[str, Any]] | None:
                rows = outbox_store.list_rows(conn, limit=100)
                attempts = deliveries.list_attempts(conn)
                return rows if not attempts and len(rows) == 1 else None

            [kept] = await env.until(pruned, within=30)
    assert kept["kind"] == "deliver" and kept["status"] == "dead"  # waits for an operator
