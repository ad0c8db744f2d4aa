"""Secrets never leave the daemon in plain text (docs/architecture.md §9): a workspace gets secrets
through `from_env` / `from_file` references and a variable terraform itself marks sensitive; after a
full plan-and-apply, a speculative plan and a notification, the test greps everything the daemon
emitted — its log records, every read endpoint's answer, the notification bodies, the database files
— for the secret values. A second workspace reads the first one's state (`terraform_remote_state`,
with terraform's trace log on): the remote-state credential its run was given, and the first
workspace's sensitive outputs it read, are looked for everywhere too."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest
from harness import demo_workspace, open_store, running_daemon, write_config
from receiver import Receiver, followups_config, serving
from statebackend import basic

from tfward.store import states

OTHER_TERRAFORM = Path(__file__).resolve().parents[1] / "fakes" / "other_terraform.py"

FROM_ENV = "tfw-secret-from-env-7f3a9c"  # the things' `value`: terraform prints it in a plan
FROM_FILE = "tfw-secret-from-file-52be41"  # a variable terraform declares sensitive
IN_ENV = "tfw-secret-env-var-0d17e8"  # an environment variable of terraform's process
SECRETS = (FROM_ENV, FROM_FILE, IN_ENV)

EXTRA_TF = """
variable "db_password" {
  type      = string
  sensitive = true
}

output "db_password" {
  value     = var.db_password
  sensitive = true
}

output "first_value" {
  value     = demo_thing.this[0].value
  sensitive = true
}
"""


READS_DEMO = """
variable "tfward_url" {
  type = string
}

data "terraform_remote_state" "demo" {
  backend = "http"
  config = {
    address = "${var.tfward_url}/api/v1/workspaces/demo/state"
  }
}

output "demo_ids" {
  value = data.terraform_remote_state.demo.outputs.ids
}
"""


def found_in(text: str | bytes, where: str, secrets: tuple[str, ...] = SECRETS) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [f"{secret} in {where}" for secret in secrets if secret.encode() in data]


async def test_no_secret_appears_in_logs_api_answers_notifications_or_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TFW_TEST_SECRET", FROM_ENV)
    (tmp_path / "db_password.txt").write_text(FROM_FILE + "\n")
    (tmp_path / "api_token.txt").write_text(IN_ENV)
    workspace = demo_workspace(tmp_path, things=2, extra_tf=EXTRA_TF)
    workspace["vars"] |= {
        "value": {"from_env": "TFW_TEST_SECRET"},
        "db_password": {"from_file": "db_password.txt"},
    }
    workspace["env"] |= {"DEMO_API_TOKEN": {"from_file": "api_token.txt"}}
    real = write_config(tmp_path, []).terraform.binary  # the [terraform] one
    calls = tmp_path / "reader-calls.jsonl"
    reader = demo_workspace(
        tmp_path,
        "reader",
        things=0,
        extra_tf=READS_DEMO,
        remote_state_from=["demo"],
        auto_apply=True,
        terraform_binary=str(OTHER_TERRAFORM),  # real terraform that notes its credential
    )
    reader["env"] |= {
        "OTHER_TF_REAL": real,
        "OTHER_TF_CALLS": str(calls),
        "OTHER_TF_ECHO_CREDENTIAL": "1",  # it prints the credential: the log must mask it
        "TF_LOG": "trace",
    }
    hook = Receiver()
    async with serving(hook):
        workspace["notifications"] = ["hook"]
        config = followups_config(
            tmp_path,
            [workspace, reader],
            notifications=[{"name": "hook", "type": "generic", "url": hook.at("/hook")}],
        )
        async with running_daemon(config) as (daemon, api):
            run = await api.create_run("demo")
            await api.wait(run["id"], "apply_pending")
            assert (await api.action(run["id"], "confirm")).status_code == 202
            applied = await api.wait(run["id"], "applied")
            plan = await api.create_run("demo", operation="plan")
            await api.wait(plan["id"], "planned_and_finished")
            await hook.wait_until(lambda r: any(x.trigger == "run:completed" for x in r.received))

            logs = await api.logs(run["id"])
            assert "Apply complete!" in logs  # the run really ran; its log is there to grep
            emitted = [*await read_everything(api, applied, plan["id"])]
            emitted.append((logs, "the run's log"))
            read = await api.wait((await api.create_run("reader"))["id"], "applied")
            emitted += await read_reader(api, read["id"])
            given = {json.loads(line)["credential"] for line in calls.read_text().splitlines()}
            assert len(given) == 1 and None not in given  # one credential, for the whole run
            (credential,) = given
            revoked = await api.http.get("/api/v1/workspaces/demo/state", headers=basic(credential))
            assert revoked.status_code == 401  # it died with its run
        # The daemon has stopped: its database files are complete.

    looked_for = (*SECRETS, credential)
    leaks: list[str] = []
    for text, where in emitted:
        leaks += found_in(text, where, looked_for)
    for record in caplog.records:
        leaks += found_in(record.getMessage(), f"log record {record.name}", looked_for)
    for received in hook.received:
        leaks += found_in(received.raw, f"notification to {received.path}", looked_for)
    data_dir = config.daemon.data_dir
    for path in data_dir.glob("tfward.db*"):
        leaks += found_in(path.read_bytes(), path.name, looked_for)
    assert not leaks
    # ...and not because they never got there: the state, unsealed, holds both values.
    store = open_store(config)
    try:
        sv_id = versions_of(emitted)[0]["id"]
        raw = store.run_sync(lambda c: states.get_raw(c, sv_id))
    finally:
        store.close()
    assert FROM_ENV.encode() in raw and FROM_FILE.encode() in raw
    # Nothing else of the run is left in plain text: its directory (with the tfvars) is gone,
    # and the state backups (plain, for `terraform state push`) are the daemon user's alone.
    assert not (data_dir / "runs" / run["id"]).exists()
    backups = [p for p in (data_dir / "state-backups").rglob("*") if p.is_file()]
    assert backups and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in backups)
    assert stat.S_IMODE((data_dir / "state-backups").stat().st_mode) == 0o700


def versions_of(emitted: list[tuple[str, str]]) -> list[dict[str, str]]:
    text = next(t for t, where in emitted if where == "/api/v1/workspaces/demo/state-versions")
    return list(json.loads(text)["data"])


async def read_reader(api, run_id):  # type: ignore[no-untyped-def]
    """What the API shows of the run that read demo's state: it did read it (its state holds
    demo's ids), and its plan, log and state versions are there to grep."""
    answers = []
    for path in (
        f"/api/v1/runs/{run_id}",
        f"/api/v1/runs/{run_id}/plan",
        f"/api/v1/runs/{run_id}/logs",
        "/api/v1/workspaces/reader",
        "/api/v1/workspaces/reader/state-versions",
    ):
        response = await api.http.get(path)
        assert response.status_code == 200, (path, response.text)
        answers.append((response.text, path))
    versions = json.loads(answers[-1][0])["data"]
    assert versions[0]["outputs"]["demo_ids"]["value"][0].startswith("thing-demo-0-")
    assert "[TRACE]" in answers[2][0]  # terraform's trace log is in the run's log
    assert "other terraform: TF_HTTP_PASSWORD=***" in answers[2][0]
    return answers


async def read_everything(api, applied, plan_id):  # type: ignore[no-untyped-def]
    """(answer text, what it was) for every read endpoint a `read` token can call."""
    run_id = applied["id"]
    paths = [
        "/api/v1/workspaces",
        "/api/v1/workspaces/demo",
        "/api/v1/workspaces/demo/runs",
        f"/api/v1/runs/{run_id}",
        f"/api/v1/runs/{run_id}/plan",
        f"/api/v1/runs/{plan_id}/plan",
        f"/api/v1/runs/{plan_id}/logs",
        f"/api/v1/runs/{run_id}/task-results",
        "/api/v1/workspaces/demo/state-versions",
        "/api/v1/workspaces/demo/configuration-versions",
        "/api/v1/outbox",
        "/api/v1/notifications/deliveries",
        "/api/v1/workspaces/demo/resources",
        "/api/v1/resources",
        "/api/v1/recovery",
        "/metrics",
    ]
    answers = []
    for path in paths:
        response = await api.http.get(path)
        assert response.status_code == 200, (path, response.text)
        answers.append((response.text, path))
    versions = json.loads(answers[8][0])["data"]
    assert versions, "the apply stored a state"
    for version in versions:
        path = f"/api/v1/state-versions/{version['id']}"
        shown = await api.http.get(path)
        outputs = shown.json()["data"]["outputs"]
        assert outputs["db_password"] == {"type": "string", "sensitive": True, "value": None}
        answers.append((shown.text, path))
    plan = json.loads(answers[4][0])
    assert plan["resource_changes"], "the plan JSON is there, masked"
    return answers
