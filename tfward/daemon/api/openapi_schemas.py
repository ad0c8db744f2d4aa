"""The shapes of the API's JSON as OpenAPI 3.1 (JSON Schema 2020-12) components.

openapi.py assembles the document and refers to these by name. Response objects list the
fields clients may rely on (views.py and the route modules build them) and leave
`additionalProperties` open, so adding a field is not a breaking change. Request bodies are
closed: `json_object` (body.py) refuses an unknown field with 422, and takes `null` for any
field as "not given". Enumerations are read from the models, so a new status is documented
the moment it exists.
"""

from __future__ import annotations

from typing import Any

from tfward.releases.model import ItemStatus, ReleaseStatus
from tfward.runs.model import ErrorClass, ErrorKind, Operation, Stage, Status
from tfward.runtasks.callbacks import CALLBACK_STATUSES
from tfward.store import outbox as outbox_store
from tfward.store import tasks
from tfward.store.audit import AuditAction, AuditOutcome
from tfward.store.states import StateKind

Schema = dict[str, Any]
JSON = "application/json"

STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
BOOLEAN: Schema = {"type": "boolean"}
ANY: Schema = {}  # terraform's own JSON: outputs, plan documents, outbox payloads
TIME: Schema = {"type": "string", "format": "date-time"}
RUN_ACTIONS = ("confirm", "discard", "cancel", "force-cancel")


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    if "type" in schema and isinstance(schema["type"], str):
        return {**schema, "type": [schema["type"], "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def enum(values: Any, *, null: bool = False) -> Schema:
    found = [str(v) for v in values]
    return {"type": ["string", "null"], "enum": [*found, None]} if null else {"enum": found}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def record(properties: dict[str, Schema], *, optional: tuple[str, ...] = ()) -> Schema:
    """A response object: every property required unless named in `optional`."""
    return {
        "type": "object",
        "required": [name for name in properties if name not in optional],
        "properties": properties,
    }


def body(properties: dict[str, Schema], *, required: tuple[str, ...] = ()) -> Schema:
    """A request body the handler checks field by field: unknown fields are refused."""
    return {
        "type": "object",
        "properties": {
            name: s if name in required else nullable(s) for name, s in properties.items()
        },
        "required": list(required),
        "additionalProperties": False,
    }


def times(*names: str) -> Schema:
    return record({name: nullable(TIME) for name in names})


NAMES: Schema = array({"type": "string", "minLength": 1})

_RUN: Schema = record(
    {
        "id": STRING,
        "workspace": STRING,
        "operation": enum(Operation),
        "auto_apply": BOOLEAN,
        "is_speculative": BOOLEAN,
        "message": STRING,
        "targets": array(STRING),
        "replace": array(STRING),
        "status": enum(Status),
        "stage": enum(Stage, null=True),
        "error_kind": enum(ErrorKind, null=True),
        "error_message": nullable(STRING),
        "error_class": enum(ErrorClass, null=True),
        "has_changes": nullable(BOOLEAN),
        "resource_changes": record({"add": INTEGER, "change": INTEGER, "destroy": INTEGER}),
        "plan_hash": nullable(STRING),
        "plan_json_error": nullable(STRING),
        "configuration_version_id": nullable(STRING),
        "configuration_sha256": nullable(STRING),
        "configuration_pinned": BOOLEAN,
        "created_by": nullable(STRING),
        "confirmed_by": nullable(STRING),
        "discard_requested_by": nullable(STRING),
        "discard_reason": nullable(STRING),
        "source_run_id": nullable(STRING),
        "refresh_only": BOOLEAN,
        "warnings": array(STRING),
        "actions": array(enum(RUN_ACTIONS)),
        "timestamps": times(
            "created_at",
            "started_at",
            "planned_at",
            "plan_expires_at",
            "confirmed_at",
            "discard_requested_at",
            "apply_started_at",
            "finished_at",
            "cancel_requested_at",
            "force_cancel_requested_at",
            "status_changed_at",
        ),
    }
)

_LOCK: Schema = record(
    {
        "run_id": nullable(STRING),
        "locked_by": STRING,
        "reason": nullable(STRING),
        "locked_at": TIME,
        "message": STRING,
        # Set for a lock taken through terraform's http backend.
        "lock_id": nullable(STRING),
        "operation": nullable(STRING),
        "who": nullable(STRING),
        "info": nullable(STRING),
    }
)

# Terraform's lock info, as its http backend sends it with LOCK / UNLOCK and reads it back
# from a 423 (docs/protocols.md §8).
_LOCK_INFO: Schema = {
    "type": "object",
    "required": ["ID"],
    "properties": {
        **{key: STRING for key in ("Operation", "Info", "Who", "Version", "Created", "Path")},
        "ID": {"type": "string", "minLength": 1, "maxLength": 128},
    },
}

# A state file as terraform writes it: what the http backend checks of it.
_TERRAFORM_STATE: Schema = {
    "type": "object",
    "required": ["serial", "lineage"],
    "properties": {
        "version": INTEGER,
        "serial": INTEGER,
        "lineage": STRING,
        "outputs": {"type": "object"},
        "resources": array({"type": "object"}),
    },
}

_STATE_VERSION: Schema = record(
    {
        "id": STRING,
        "serial": INTEGER,
        "lineage": STRING,
        "sha256": STRING,
        "kind": enum(StateKind),
        "run_id": nullable(STRING),
        "rolled_back_from": nullable(STRING),
        "resource_count": INTEGER,
        "created_at": TIME,
        "created_by": nullable(STRING),
        "outputs": {
            "type": "object",
            "description": (
                "Sensitive outputs have a null value; the workspace's secret values are "
                '"***" in the others.'
            ),
            "additionalProperties": record({"type": ANY, "sensitive": BOOLEAN, "value": ANY}),
        },
    }
)

_CONFIGURATION_VERSION: Schema = record(
    {"id": STRING, "sha256": STRING, "size": INTEGER, "file_count": INTEGER, "created_at": TIME}
)

_INVENTORY_SYNC: Schema = record(
    {
        "status": STRING,
        "state_version_id": nullable(STRING),
        "serial": nullable(INTEGER),
        "synced_at": nullable(TIME),
        "syncing_state_version_id": nullable(STRING),
        "started_at": nullable(TIME),
        "lease_expires_at": nullable(TIME),
        "error": nullable(STRING),
    }
)

# A workspace never checked has only the first three fields.
_DRIFT: Schema = record(
    {
        "drifted": BOOLEAN,
        "addresses": array(STRING),
        "checked_at": nullable(TIME),
        "check_run_id": nullable(STRING),
        "state_version_id": nullable(STRING),
        "detected_at": nullable(TIME),
        "cleared_at": nullable(TIME),
        "cleared_by_run_id": nullable(STRING),
    },
    optional=(
        "check_run_id",
        "state_version_id",
        "detected_at",
        "cleared_at",
        "cleared_by_run_id",
    ),
)

_WORKSPACE: Schema = record(
    {
        "id": STRING,
        "name": STRING,
        "lock": nullable(ref("Lock")),
        "owner": nullable(STRING),
        "current_run": nullable(ref("Run")),
        "queued_runs": INTEGER,
        "latest_state_version": nullable(ref("StateVersion")),
        "inventory": nullable(ref("InventorySync")),
        "drift": ref("Drift"),
    }
)

_DAEMON: Schema = record(
    {
        "node_id": STRING,
        "host": STRING,
        "data_dir": STRING,
        "pid": INTEGER,
        "api_url": nullable(STRING),
        "started_at": STRING,
        "heartbeat_at": STRING,
        "left_at": nullable(STRING),
        "live": BOOLEAN,
        "workspaces": array(STRING),
    }
)

_CLUSTER: Schema = record(
    {
        "node_id": STRING,
        "now": STRING,
        "daemons": array(ref("Daemon")),
        "unowned_workspaces": array(STRING),
    }
)

_TASK_RESULT: Schema = record(
    {
        "id": STRING,
        "run_id": STRING,
        "workspace_id": STRING,
        "task_name": STRING,
        "stage": STRING,
        "enforcement": STRING,
        "status": enum((*tasks.UNFINISHED, *tasks.FINAL)),
        "message": nullable(STRING),
        "url": nullable(STRING),
        "outcomes": array({"type": "object"}),
        "timestamps": times(
            "created_at",
            "updated_at",
            "last_progress_at",
            "token_expires_at",
            "token_revoked_at",
        ),
    }
)

_RELEASE_ITEM: Schema = record(
    {
        "id": STRING,
        "workspace": STRING,
        "status": enum(ItemStatus),
        "run_id": nullable(STRING),
        "run_status": enum(Status, null=True),
        "error": nullable(STRING),
        "started_at": nullable(TIME),
        "finished_at": nullable(TIME),
    }
)

_COUNTS = ("total", "succeeded", "failed", "skipped", "cancelled", "running", "pending")
_RELEASE: Schema = record(
    {
        "id": STRING,
        "name": STRING,
        "status": enum(ReleaseStatus),
        "error": nullable(STRING),
        "created_by": nullable(STRING),
        "rollout": record(
            {
                "kind": STRING,
                "description": STRING,
                "configuration_version_id": nullable(STRING),
                "configuration_sha256": nullable(STRING),
                "variables": nullable({"type": "object"}),
            }
        ),
        "counts": record({name: INTEGER for name in _COUNTS}),
        "current_batch": nullable(INTEGER),
        "cancel_requested": BOOLEAN,
        "actions": array(enum(["cancel"])),
        "timestamps": times("created_at", "started_at", "cancel_requested_at", "finished_at"),
        "batches": array(
            record({"batch": INTEGER, "status": STRING, "items": array(ref("ReleaseItem"))})
        ),
        "revision": {
            "type": "string",
            "description": "A digest of this view: pass it as `wait_after` to long-poll.",
        },
    }
)

_OUTBOX_ROW: Schema = record(
    {
        "id": STRING,
        "seq": INTEGER,
        "kind": STRING,
        "payload": ANY,
        "run_id": nullable(STRING),
        "workspace_id": nullable(STRING),
        "workspace": nullable(STRING),
        "status": enum(outbox_store.STATUSES),
        "attempts": INTEGER,
        "next_attempt_at": TIME,
        "lease_expires_at": nullable(TIME),
        "last_error": nullable(STRING),
        "created_at": TIME,
        "done_at": nullable(TIME),
    }
)

_DELIVERY: Schema = record(
    {
        "id": STRING,
        "outbox_id": STRING,
        "destination": STRING,
        "trigger": STRING,
        "run_id": nullable(STRING),
        "workspace_id": nullable(STRING),
        "workspace": nullable(STRING),
        "attempt": INTEGER,
        "delivered": BOOLEAN,
        "status_code": nullable(INTEGER),
        "latency_ms": INTEGER,
        "error": nullable(STRING),
        "created_at": TIME,
    }
)

_RESOURCE: Schema = record(
    {
        "workspace": STRING,
        "address": STRING,
        "type": STRING,
        "name": STRING,
        "mode": STRING,
        "module": nullable(STRING),
        "provider": STRING,
        "index": {"type": ["integer", "string", "null"]},
        "id": nullable(STRING),
        "state_version_id": STRING,
        "serial": INTEGER,
    }
)

_DIFF: Schema = record(
    {
        "from": STRING,
        "to": STRING,
        "files": array(
            record(
                {"path": STRING, "status": enum(["added", "removed", "modified"]), "diff": STRING}
            )
        ),
    }
)

_AUDIT_EVENT: Schema = record(
    {
        "id": STRING,
        "seq": INTEGER,
        "created_at": TIME,
        "actor": STRING,
        "action": enum(AuditAction),
        "target": STRING,
        "outcome": enum(AuditOutcome),
        "reason": nullable(STRING),
        "detail": {"type": "object"},
    }
)

_ERROR: Schema = record(
    {"error": record({"status": {"type": "integer", "minimum": 400}, "message": STRING})}
)

# The JSON:API body a task service sends (docs/protocols.md); runtasks/callbacks.py parses it.
_CALLBACK: Schema = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "object",
            "required": ["attributes"],
            "properties": {
                "type": enum(["task-results"]),
                "attributes": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {
                        "status": enum(CALLBACK_STATUSES),
                        "message": nullable(STRING),
                        "url": nullable(STRING),
                        "outcomes": ANY,
                    },
                },
                "relationships": {"type": "object"},
            },
        }
    },
}

SCHEMAS: dict[str, Schema] = {
    "Error": _ERROR,
    "Health": record(
        {
            "status": enum(["ok", "degraded", "stopping"]),
            "storage": record(
                {
                    "status": enum(["ok", "degraded"]),
                    "problem": enum(
                        ["disk_full", "read_only", "locked", "io_error", "unavailable"]
                    ),
                    "reason": {"type": "string"},
                    "since": {"type": "string"},
                },
                optional=("problem", "reason", "since"),
            ),
        }
    ),
    "RecoveryReport": {"type": "object", "additionalProperties": array(ANY)},
    "Run": _RUN,
    "Lock": _LOCK,
    "LockInfo": _LOCK_INFO,
    "TerraformState": _TERRAFORM_STATE,
    "StateVersion": _STATE_VERSION,
    "ConfigurationVersion": _CONFIGURATION_VERSION,
    "ConfigurationDiff": _DIFF,
    "InventorySync": _INVENTORY_SYNC,
    "Drift": _DRIFT,
    "Workspace": _WORKSPACE,
    "Daemon": _DAEMON,
    "Cluster": _CLUSTER,
    "TaskResult": _TASK_RESULT,
    "Release": _RELEASE,
    "ReleaseItem": _RELEASE_ITEM,
    "OutboxRow": _OUTBOX_ROW,
    "Delivery": _DELIVERY,
    "Resource": _RESOURCE,
    "AuditEvent": _AUDIT_EVENT,
    # Request bodies.
    "CreateRun": body(
        {
            "operation": enum(Operation),
            "auto_apply": BOOLEAN,
            "message": STRING,
            "targets": NAMES,
            "replace": NAMES,
            "configuration_version_id": STRING,
        }
    ),
    "LockAction": body({"reason": STRING}),
    "RunAction": body({"comment": STRING}),
    "CreateRelease": body(
        {
            "name": {"type": "string", "maxLength": 200},
            "batches": {
                "type": "array",
                "minItems": 1,
                "items": {**NAMES, "minItems": 1, "uniqueItems": True},
                "description": "Configured workspaces; each in one batch only (422 otherwise).",
            },
            "configuration_version_id": {"type": "string", "minLength": 1},
            "variables": {"type": "object"},
        },
        required=("batches",),
    ),
    "NoFields": body({}),
    "TaskResultCallback": _CALLBACK,
}
