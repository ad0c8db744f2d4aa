"""Secrets never leave the daemon in plain text (docs/architecture.md §9): a workspace gets secrets
through `from_env` / `from_file` references and a variable terraform itself marks sensitive; after a
full plan-and-apply, a speculative plan and a notification, the test greps everything the daemon
emitted — its log records, every read endpoint's answer, the notification bodies, the database files
— for the secret values, in every form terraform and JSON write them.

Outputs the user's HCL does not mark sensitive echo a secret (issue 13, item 8), and a secret with
characters terraform escapes (`"`, `\\`, `<&>`, `é`) is listed in `sensitive`: it reaches the log
quoted by terraform (`%q`), a tfvars snippet of a type error (`\\u00e9`) and the outputs (as it is,
and through `jsonencode`) (item 9).

A third workspace reads the first one's state (`terraform_remote_state`, with terraform's trace
log on): the remote-state credential its run was given, and the first workspace's sensitive
outputs it read, are looked for everywhere too (issue 17)."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest
from harness import demo_workspace, open_store, running_daemon, write_config
from receiver import Receiver, followups_config, serving
from statebackend import basic

from tfward.config import Config
from tfward.store import states

OTHER_TERRAFORM = Path(__file__).resolve().parents[1] / "fakes" / "other_terraform.py"

FROM_ENV = "tfw-secret-from-env-7f3a9c"  # the things' `value`: terraform prints it in a plan
FROM_FILE = "tfw-secret-from-file-52be41"  # a variable terraform declares sensitive
IN_ENV = "tfw-secret-env-var-0d17e8"  # an environment variable of terraform's process
ODD = 'relsecretB-<&>"é\\n-4242'  # listed in `sensitive`; terraform escapes most of it
SECRETS = (FROM_ENV, FROM_FILE, IN_ENV, ODD)

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

# Not marked sensitive by the user: tfward's masking is all that stands between them and a reader.
output "echo" {
  value = var.value
}

output "echo_json" {
  value = jsonencode({ v = var.value })
}

variable "odd" {
  type = string
}

output "odd" {
  value = var.odd
}

output "odd_json" {
  value = jsonencode(var.odd)
}
"""

# A variable of the wrong type: terraform quotes the tfvars line holding the secret.
TYPE_ERROR_TF = """
variable "num" {
  type = number
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


def written_forms(secret: str) -> set[str]:
    """How terraform and JSON write `secret` (worked out here, independently of tfward):
    JSON with and without `\\uXXXX`, Go's JSON (`<>&` escaped), and Go's `%q` of those."""
    as_json = json.dumps(secret, ensure_ascii=False)[1:-1]
    go_json = as_json.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    quoted = [json.dumps(form, ensure_ascii=False)[1:-1] for form in (as_json, go_json)]
    return {secret, as_json, json.dumps(secret)[1:-1], go_json, *quoted}


def found_in(text: str | bytes, where: str, secrets: tuple[str, ...] = SECRETS) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [
        f"{form!r} in {where}"
        for secret in secrets
        for form in written_forms(secret)
        if form.encode() in data
    ]


def secrets_config(tmp_path: Path, hook: Receiver) -> Config:
    """`demo` gets every kind of secret (and notifies `hook`); `typo` feeds the odd secret to
    a number variable, so its plan fails quoting the tfvars line; `reader` reads demo's state
    through the http backend with real terraform behind a wrapper that prints the credential
    it was given (its log must mask it) and notes it in `reader-calls.jsonl`."""
    (tmp_path / "db_password.txt").write_text(FROM_FILE + "\n")
    (tmp_path / "api_token.txt").write_text(IN_ENV)
    workspace = demo_workspace(tmp_path, things=2, extra_tf=EXTRA_TF, notifications=["hook"])
    workspace["vars"] |= {
        "value": {"from_env": "TFW_TEST_SECRET"},
        "db_password": {"from_file": "db_password.txt"},
        "odd": ODD,
    }
    workspace["sensitive"] = ["odd"]
    workspace["env"] |= {"DEMO_API_TOKEN": {"from_file": "api_token.txt"}}
    typo = demo_workspace(
        tmp_path, "typo", things=1, extra_tf=TYPE_ERROR_TF, vars={"num": ODD}, sensitive=["num"]
    )
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
        "OTHER_TF_REAL": write_config(tmp_path, []).terraform.binary,  # the [terraform] one
        "OTHER_TF_CALLS": str(tmp_path / "reader-calls.jsonl"),
        "OTHER_TF_ECHO_CREDENTIAL": "1",  # it prints the credential: the log must mask it
        "TF_LOG": "trace",
    }
    return followups_config(
        tmp_path,
        [workspace, typo, reader],
        notifications=[{"name": "hook", "type": "generic", "url": hook.at("/hook")}],
    )


async def test_no_secret_appears_in_logs_api_answers_notifications_or_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TFW_TEST_SECRET", FROM_ENV)
    hook = Receiver()
    async with serving(hook):
        config = secrets_config(tmp_path, hook)
        data_dir = config.daemon.data_dir
        async with running_daemon(config) as (daemon, api):
            run = await api.create_run("demo")
            await api.wait(run["id"], "apply_pending")
            assert (await api.action(run["id"], "confirm")).status_code == 202
            applied = await api.wait(run["id"], "applied")
            plan = await api.create_run("demo", operation="plan")
            await api.wait(plan["id"], "planned_and_finished")
            await hook.wait_until(lambda r: any(x.trigger == "run:completed" for x in r.received))
            failed = await api.wait((await api.create_run("typo"))["id"], "failed")

            logs, typo_log = await api.logs(run["id"]), await api.logs(failed["id"])
            assert "Apply complete!" in logs  # the run really ran; its log is there to grep
            # Terraform printed it (quoted: `+ odd = "..."` in the plan, `odd = "..."` after).
            assert ["+", "odd", "=", '"***"'] in [line.split() for line in logs.splitlines()]
            assert 'odd = "***"' in logs.split("Apply complete!")[1]
            assert "a number is required" in typo_log and '"num": "***"' in typo_log
            emitted = [*await read_everything(api, applied, plan["id"])]
            emitted += [(logs, "the run's log"), (typo_log, "the type error's log")]
            emitted += [(failed["error_message"], "the type error's message")]
            read = await api.wait((await api.create_run("reader"))["id"], "applied")
            emitted += await read_reader(api, read["id"])
            calls = (tmp_path / "reader-calls.jsonl").read_text().splitlines()
            given = {json.loads(line)["credential"] for line in calls}
            # One credential, for the whole run: its `show -json` too, made during the run
            # since the run learned demo's secrets, which mask the plan JSON.
            assert len(given) == 1 and None not in given
            assert "show" in [json.loads(line)["args"][0] for line in calls]
            (credential,) = given
            revoked = await api.http.get("/api/v1/workspaces/demo/state", headers=basic(credential))
            assert revoked.status_code == 401  # it died with its run
            # While the daemon runs: its WAL holds what was written last.
            emitted += [(p.read_bytes(), f"{p.name}, running") for p in data_dir.glob("tfward.db*")]
        # The daemon has stopped: its database files are complete.

    emitted += [(r.getMessage(), f"log record {r.name}") for r in caplog.records]
    emitted += [(r.raw, f"notification to {r.path}") for r in hook.received]
    emitted += [(p.read_bytes(), p.name) for p in data_dir.glob("tfward.db*")]
    looked_for = (*SECRETS, credential)
    leaks = [leak for text, where in emitted for leak in found_in(text, where, looked_for)]
    assert leaks == []
    # ...and not because they never got there: the state, unsealed, holds the values.
    raw = state_of(config, versions_of(emitted)[0]["id"])
    assert FROM_ENV.encode() in raw and FROM_FILE.encode() in raw
    assert json.loads(raw)["outputs"]["odd"]["value"] == ODD
    # Nothing else of the run is left in plain text: its directory (with the tfvars) is gone,
    # and the state backups (plain, for `terraform state push`) are the daemon user's alone.
    assert not (data_dir / "runs" / run["id"]).exists()
    backups = [p for p in (data_dir / "state-backups").rglob("*") if p.is_file()]
    assert backups and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in backups)
    assert stat.S_IMODE((data_dir / "state-backups").stat().st_mode) == 0o700


def state_of(config: Config, sv_id: str) -> bytes:
    store = open_store(config)
    try:
        return bytes(store.run_sync(lambda c: states.get_raw(c, sv_id)))
    finally:
        store.close()


def versions_of(emitted: list[tuple[str | bytes, str]]) -> list[dict[str, str]]:
    text = next(t for t, where in emitted if where == "/api/v1/workspaces/demo/state-versions")
    return list(json.loads(text)["data"])


async def read_reader(api, run_id):  # type: ignore[no-untyped-def]
    """What the API shows of the run that read demo's state: it did read it (its state holds
    demo's ids), and its plan, log and state versions are there to grep."""
    await api.plan_json(run_id)  # an auto-applied run's comes after the run
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
    await api.plan_json(run_id)  # an auto-applied run's comes after the run
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
        shown_values = {name: out["value"] for name, out in outputs.items()}
        assert {k: shown_values[k] for k in ("echo", "echo_json", "odd", "odd_json")} == {
            "echo": "***",
            "echo_json": '{"v":"***"}',
            "odd": "***",
            "odd_json": '"***"',
        }
        answers.append((shown.text, path))
    plan = json.loads(answers[4][0])
    assert plan["resource_changes"], "the plan JSON is there, masked"
    return answers
