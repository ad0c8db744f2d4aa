"""The routes of the OpenAPI document (openapi.py), grouped as the route modules group them.

One `p.add` per method and rule: the rule is written as in the route module (`<name>`), its
path and query parameters (query.py's table), security and 401/403 answers are filled in by
`Paths.add`. What is listed in
`errors` is what the handler itself answers; the error body is always the `Error` schema.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .openapi_schemas import RUN_ACTIONS, Schema, array, ref

if TYPE_CHECKING:
    from .openapi import Paths

TEXT = "text/plain"
OBJECT: Schema = {"type": "object"}
STRING: Schema = {"type": "string"}


def data(schema: Schema) -> Schema:
    """The `{"data": ...}` envelope of every successful JSON answer."""
    return {"type": "object", "required": ["data"], "properties": {"data": schema}}


def listed(name: str) -> Schema:
    return data(array(ref(name)))


WS = "/api/v1/workspaces"
RUNS = f"{WS}/<name>/runs"
RUN = "/api/v1/runs/<run_id>"
SV = "/api/v1/state-versions/<sv_id>"
CV = "/api/v1/configuration-versions"
RESULT = "/api/v1/run-task-results/<result_id>"
RELEASE = "/api/v1/releases/<release_id>"


def service(p: Paths) -> None:
    p.add("GET", "/healthz", "healthz", "Liveness", tag="service", ok=data(ref("Health")))
    p.add("GET", "/metrics", "metrics", "Prometheus metrics", tag="service", ok=STRING, media=TEXT)
    p.add("GET", "/api/v1/openapi.json", "openapi", "This document", tag="service", ok=OBJECT)
    p.add(
        "GET",
        "/api/v1/recovery",
        "recovery",
        "What recovery did when this daemon started",
        tag="service",
        ok=data(ref("RecoveryReport")),
    )
    p.add(
        "GET",
        "/api/v1/cluster",
        "show_cluster",
        "The daemons sharing this database, their heartbeats and what each owns",
        tag="service",
        ok=data(ref("Cluster")),
    )


def workspaces(p: Paths) -> None:
    p.add("GET", WS, "list_workspaces", "List workspaces", tag="workspaces", ok=listed("Workspace"))
    p.add(
        "GET",
        f"{WS}/<name>",
        "show_workspace",
        "Show a workspace: lock, current run, queue, latest state, inventory, drift",
        tag="workspaces",
        ok=data(ref("Workspace")),
        errors=[404],
    )
    p.add(
        "POST",
        f"{WS}/<name>/actions/<action>",
        "lock_action",
        "Lock, unlock or force-unlock a workspace",
        tag="workspaces",
        ok=data(ref("Workspace")),
        errors=[400, 404, 409, 422],
        body="LockAction",
        actions=("lock", "unlock", "force-unlock"),
    )


def inventory(p: Paths) -> None:
    p.add(
        "GET",
        f"{WS}/<name>/resources",
        "workspace_resources",
        "The resources of the workspace's newest synced state",
        tag="inventory",
        ok=listed("Resource"),
        errors=[404],
    )
    p.add(
        "GET",
        "/api/v1/resources",
        "all_resources",
        "The resources of every workspace",
        tag="inventory",
        ok=listed("Resource"),
        errors=[404],
    )


def runs(p: Paths) -> None:
    p.add(
        "POST",
        RUNS,
        "create_run",
        "Queue a run",
        tag="runs",
        ok=data(ref("Run")),
        status=201,
        errors=[400, 404, 422, 503],
        body="CreateRun",
        notes="`operation` defaults to `plan_and_apply`, `auto_apply` to the workspace's "
        "setting. `configuration_version_id` (one of the workspace's own) makes the run apply "
        "that older configuration instead of a new snapshot of the source; another's is 422. "
        "503 while the daemon stops.",
    )
    p.add(
        "GET",
        RUNS,
        "list_runs",
        "List a workspace's runs, newest first",
        tag="runs",
        ok=listed("Run"),
        errors=[404],
    )
    p.add(
        "GET",
        RUN,
        "show_run",
        "Show a run",
        tag="runs",
        ok=data(ref("Run")),
        errors=[404],
    )
    p.add(
        "POST",
        f"{RUN}/actions/<action>",
        "run_action",
        "Confirm, discard, cancel or force-cancel a run",
        tag="runs",
        ok=data(ref("Run")),
        status=202,
        errors=[400, 404, 409, 422],
        body="RunAction",
        actions=RUN_ACTIONS,
        notes="409 with the reason when the run's state refuses the action.",
    )
    p.add(
        "GET",
        f"{RUN}/plan",
        "plan_json",
        "The plan as `terraform show -json` wrote it",
        tag="runs",
        ok=OBJECT,
        errors=[404],
        notes="Masked. `null` when `show -json` failed (the run's `plan_json_error` says why). "
        "404 for a run without a plan, and until the plan JSON of an auto-applied run that "
        "nothing reviewed is made, after the run (the outbox job `plan_json`).",
    )
    p.add(
        "GET",
        f"{RUN}/logs",
        "logs",
        "The run's log",
        tag="runs",
        ok=STRING,
        media=TEXT,
        errors=[404],
    )


def state(p: Paths) -> None:
    p.add(
        "GET",
        f"{WS}/<name>/state-versions",
        "list_state_versions",
        "List a workspace's state versions",
        tag="state",
        ok=listed("StateVersion"),
        errors=[404],
    )
    p.add(
        "GET",
        SV,
        "show_state_version",
        "Show a state version (sensitive outputs are null, secrets masked)",
        tag="state",
        ok=data(ref("StateVersion")),
        errors=[404],
    )
    p.add(
        "GET",
        f"{SV}/download",
        "download_state_version",
        "The raw state file",
        tag="state",
        ok=OBJECT,
        errors=[404],
        notes="The state holds secrets in plain text, as terraform writes it.",
    )
    p.add(
        "POST",
        f"{WS}/<name>/state-versions/<sv_id>/rollback",
        "rollback",
        "Make an older state version current again",
        tag="state",
        ok=data(ref("StateVersion")),
        status=201,
        errors=[404, 409],
        notes="409 while a run holds the lock, or when the version is already current.",
    )
    p.add(
        "GET",
        f"{WS}/<name>/configuration-versions",
        "list_configuration_versions",
        "List a workspace's configuration versions",
        tag="state",
        ok=listed("ConfigurationVersion"),
        errors=[404],
    )
    p.add(
        "GET",
        f"{CV}/<a>/diff/<b>",
        "diff_configuration_versions",
        "A unified diff per file between two configuration versions",
        tag="state",
        ok=data(ref("ConfigurationDiff")),
        errors=[404],
    )


def run_tasks(p: Paths) -> None:
    for method in ("PATCH", "POST"):
        p.add(
            method,
            f"{RESULT}/callback",
            f"task_callback_{method.lower()}",
            "A run task service reports progress or its verdict",
            tag="run-tasks",
            ok=data(ref("TaskResult")),
            errors=[401, 403, 404, 409, 422, 503],
            document="TaskResultCallback",
            notes="404 for an unknown result, then the token is checked; 409 once the result "
            "is final; a malformed body is 422.",
        )
    p.add(
        "GET",
        RESULT,
        "show_task_result",
        "Show a run task result",
        tag="run-tasks",
        ok=data(ref("TaskResult")),
        errors=[404],
    )
    p.add(
        "GET",
        f"{RUN}/task-results",
        "run_task_results",
        "List a run's run task results",
        tag="run-tasks",
        ok=listed("TaskResult"),
        errors=[404],
    )
    p.add(
        "GET",
        f"{RESULT}/plan-json",
        "task_plan_json",
        "The plan JSON, for the task service",
        tag="run-tasks",
        ok=OBJECT,
        errors=[401, 403, 404, 503],
    )
    p.add(
        "GET",
        f"{RESULT}/resource-changes",
        "task_resource_changes",
        "The plan's resource changes, for the task service",
        tag="run-tasks",
        ok=data(array(OBJECT)),
        errors=[401, 403, 404, 503],
    )
    p.add(
        "GET",
        f"{CV}/<cv_id>/download",
        "download_configuration",
        "The configuration archive, for a run task service",
        tag="run-tasks",
        ok={"type": "string", "contentMediaType": "application/gzip"},
        media="application/gzip",
        errors=[401, 403, 404, 503],
    )


def releases(p: Paths) -> None:
    p.add(
        "POST",
        "/api/v1/releases",
        "create_release",
        "Roll a change out over workspaces, batch after batch",
        tag="releases",
        ok=data(ref("Release")),
        status=201,
        errors=[400, 404, 422, 503],
        body="CreateRelease",
        notes="503 unless `[releases] enabled = true`, and while the daemon stops; 404 for an "
        "unknown `configuration_version_id`.",
    )
    p.add(
        "GET",
        "/api/v1/releases",
        "list_releases",
        "List releases, newest first",
        tag="releases",
        ok=listed("Release"),
        errors=[422],
    )
    p.add(
        "GET",
        RELEASE,
        "show_release",
        "Show a release",
        tag="releases",
        ok=data(ref("Release")),
        errors=[404],
    )
    p.add(
        "POST",
        f"{RELEASE}/actions/<action>",
        "release_action",
        "Cancel a release",
        tag="releases",
        ok=data(ref("Release")),
        status=202,
        errors=[400, 404, 409, 422],
        body="NoFields",
        actions=["cancel"],
    )


def outbox(p: Paths) -> None:
    counts = {"type": "object", "additionalProperties": {"type": "integer"}}
    rows = listed("OutboxRow")
    rows["required"].append("meta")
    rows["properties"]["meta"] = {"type": "object", "properties": {"counts": counts}}
    p.add(
        "GET",
        "/api/v1/outbox",
        "list_outbox",
        "List follow-up jobs, with counts by status",
        tag="outbox",
        ok=rows,
        errors=[422],
    )
    p.add(
        "GET",
        "/api/v1/outbox/<row_id>",
        "show_outbox",
        "Show an outbox row",
        tag="outbox",
        ok=data(ref("OutboxRow")),
        errors=[404],
    )
    p.add(
        "POST",
        "/api/v1/outbox/<row_id>/actions/<action>",
        "outbox_action",
        "Retry a dead outbox row",
        tag="outbox",
        ok=data(ref("OutboxRow")),
        status=202,
        errors=[400, 404, 409, 422],
        body="NoFields",
        actions=["retry"],
        notes="409 unless the row is dead.",
    )
    p.add(
        "GET",
        "/api/v1/notifications/deliveries",
        "list_deliveries",
        "List notification delivery attempts, newest first",
        tag="outbox",
        ok=listed("Delivery"),
    )


def audit(p: Paths) -> None:
    p.add(
        "GET",
        "/api/v1/audit",
        "list_audit",
        "The audit trail of admin actions, newest first",
        tag="audit",
        ok=listed("AuditEvent"),
        notes="Force-unlock, force-cancel, state rollback, raw state download, outbox retry, "
        "release create and cancel, config reload: who (the token's name; `signal` for a "
        "reload), when, what, and the outcome (`ok`, or `refused` with the reason).",
    )


SECTIONS: tuple[Callable[[Paths], None], ...] = (
    service,
    workspaces,
    inventory,
    runs,
    state,
    run_tasks,
    releases,
    outbox,
    audit,
)
