"""Notification messages on the wire (docs/protocols.md), and `tfward check-config
--verify-notifications` against real receivers."""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import trio
from harness import demo_workspace
from receiver import Receiver, followups_config, serving

from tfward.config import NotificationConfig
from tfward.outbox import notifications

WHEN = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)
RUN = notifications.RunFacts("run-abc", "ship it", WHEN, "api", "alice")


def test_the_generic_payload_has_exactly_the_hcp_fields(tmp_path: Path) -> None:
    config = followups_config(tmp_path, [demo_workspace(tmp_path)],
                              daemon={"public_url": "https://tf.example/"})
    body = notifications.generic_payload(
        config, "hook", "run:errored", run=RUN, run_status="failed", workspace_id="ws-1",
        workspace_name="demo", updated_at=WHEN)
    assert body == {
        "payload_version": 1,
        "notification_configuration_id": notifications.configuration_id("hook"),
        "run_url": "https://tf.example/api/v1/runs/run-abc",
        "run_id": "run-abc",
        "run_message": "ship it",
        "run_created_at": "2026-05-04T03:02:01Z",
        "run_created_by": "api",
        "workspace_id": "ws-1",
        "workspace_name": "demo",
        "organization_name": "tests",
        "notifications": [{"message": "Run Errored", "trigger": "run:errored",
                           "run_status": "failed", "run_updated_at": "2026-05-04T03:02:01Z",
                           "run_updated_by": "alice"}],
    }
    assert notifications.configuration_id("hook") != notifications.configuration_id("other")
    assert len(notifications.configuration_id("hook")) == 19


def test_the_signature_is_hmac_sha512_of_the_exact_body_bytes_keyed_with_the_token() -> None:
    destination = NotificationConfig("hook", "generic", "http://x/", token="k3y")
    body, headers = notifications.request_for(destination, {"a": 1}, delivery_id="ob-1")
    assert headers[notifications.SIGNATURE_HEADER] == hmac.new(
        b"k3y", body, hashlib.sha512).hexdigest()
    assert headers["Content-Type"] == "application/json" and headers["X-Tfward-Delivery"] == "ob-1"
    unsigned = NotificationConfig("hook", "generic", "http://x/")
    assert notifications.SIGNATURE_HEADER not in notifications.request_for(unsigned, {})[1]


def test_slack_gets_a_readable_line_with_the_run_and_its_error(tmp_path: Path) -> None:
    config = followups_config(tmp_path, [demo_workspace(tmp_path)])
    payload = notifications.generic_payload(
        config, "chat", "run:errored", run=RUN, run_status="failed", workspace_id="ws-1",
        workspace_name="demo", updated_at=WHEN)
    destination = NotificationConfig("chat", "slack", "http://x/", token="ignored")
    body, headers = notifications.request_for(destination, payload, "failed (plan): boom")
    text = json.loads(body)["text"]
    assert text.startswith("*Run Errored* in workspace `demo`: <http://")
    assert "|run-abc> (failed)" in text and text.endswith("\nfailed (plan): boom")
    assert notifications.SIGNATURE_HEADER not in headers


async def test_check_config_verify_notifications_reports_which_destinations_answered(
    tmp_path: Path,
) -> None:
    up, down = Receiver(token="tok"), Receiver(status=500)
    async with serving(up, down):
        config = followups_config(tmp_path, [demo_workspace(tmp_path)], [
            {"name": "up", "type": "generic", "url": up.at("/v"), "token": "tok"},
            {"name": "down", "type": "slack", "url": down.at("/v")},
        ])
        with trio.fail_after(60):
            done = await trio.run_process(
                [sys.executable, "-m", "tfward.cli.main", "check-config", str(config.path),
                 "--verify-notifications"], capture_stdout=True, check=False)
    out = done.stdout.decode()
    assert done.returncode == 1, out
    assert "notification up: 200 ok" in out and "notification down: FAILED" in out
    assert "answered 500" in out
    [verification] = up.received
    assert verification.signature_ok("tok")
    event = verification.payload["notifications"][0]
    assert event["trigger"] == "verification" and event["message"] == "Verification of up"
    assert verification.payload["run_id"] is None
    assert "text" in down.received[0].payload
