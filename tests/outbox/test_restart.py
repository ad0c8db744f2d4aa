"""Durability across a crash: the daemon as a real process, killed with SIGKILL while 50
notifications wait for a receiver that is down; a new daemon on the same data delivers them all,
none twice. Its stdout is JSON lines with run and job context (seed M9)."""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import trio
from harness import Api, DaemonProcess, demo_workspace
from receiver import Receiver, followups_config, serving


async def rows(api: Api, **params: str) -> list[dict[str, Any]]:
    response = await api.http.get("/api/v1/outbox", params={**params, "limit": "1000"})
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def test_fifty_undelivered_notifications_survive_kill_9_and_each_arrives_once(
    tmp_path: Path,
) -> None:
    receiver = Receiver(status=503)
    async with serving(receiver):
        ws = demo_workspace(tmp_path, things=1, notifications=["hook"])
        config = followups_config(
            tmp_path,
            [ws],
            [
                {
                    "name": "hook",
                    "type": "generic",
                    "url": receiver.at("/hook"),
                    "triggers": ["run:created"],
                    "retries": 20,
                    "retry_interval": "100ms",
                }
            ],
        )
        async with trio.open_nursery() as nursery:
            first = DaemonProcess(config)
            await first.start(nursery)
            async with first.client() as http:
                api = Api(http)
                # A user lock keeps the runs pending: their notifications are the only work.
                assert (await http.post("/api/v1/workspaces/demo/actions/lock")).status_code == 200
                run_ids = [(await api.create_run("demo", message=f"#{i}"))["id"] for i in range(50)]
                await receiver.wait_until(lambda r: len(r.received) >= 2)
                # Undelivered: a `deliver` row retrying, or a `notify` row not yet fanned out
                # (it waits behind the earlier delivery of its workspace).
                waiting = [r for r in await rows(api) if r["status"] != "done"]
            first.signal(signal.SIGKILL)
            await first.wait()
            assert len(waiting) == 50 and {r["kind"] for r in waiting} == {"notify", "deliver"}

            receiver.status = 200
            second = DaemonProcess(config)
            await second.start(nursery)
            async with second.client() as http:
                await receiver.wait_until(lambda r: len(r.answered_ok()) >= 50, within=60)
                # The receiver answered; the worker records `done` just after.
                with trio.fail_after(30):
                    delivered = await rows(Api(http), kind="deliver")
                    while {r["status"] for r in delivered} != {"done"}:
                        await trio.sleep(0.05)
                        delivered = await rows(Api(http), kind="deliver")
            second.signal(signal.SIGTERM)
            assert await second.wait() == 0
    arrived = Counter(r.payload["run_id"] for r in receiver.answered_ok())
    assert set(arrived) == set(run_ids) and set(arrived.values()) == {1}
    assert [r.payload["run_id"] for r in receiver.answered_ok()] == run_ids  # in order
    assert len(delivered) == 50 and {r["status"] for r in delivered} == {"done"}

    output = first.output.decode().splitlines()
    lines = [json.loads(line) for line in output if line.startswith("{")]
    failed = [e for e in lines if "attempt" in e["message"] and e["level"] == "warning"]
    assert failed and all(
        e["job_id"].startswith("ob-") and e["workspace"] == "demo" and e["run_id"] in run_ids
        for e in failed
    )
    assert all({"time", "level", "logger", "message"} <= set(e) for e in lines)
