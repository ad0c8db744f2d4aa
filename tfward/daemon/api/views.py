"""How objects look in API responses. Secrets never appear here."""

from __future__ import annotations

from typing import Any

from tfward.config import Config
from tfward.ids import rfc3339
from tfward.runs.masking import SecretMask
from tfward.runs.model import Run, allowed_actions
from tfward.store.artifacts import ConfigurationVersion
from tfward.store.states import StateVersion
from tfward.store.workspaces import Lock


def run_view(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "workspace": run.workspace,
        "operation": str(run.operation),
        "auto_apply": run.auto_apply,
        "is_speculative": run.is_speculative,
        "message": run.message,
        "targets": list(run.targets),
        "replace": list(run.replace),
        "status": str(run.status),
        "stage": run.stage and str(run.stage),
        "error_kind": run.error_kind and str(run.error_kind),
        "error_message": run.error_message,
        # transient: the same run again may well work; permanent: something must change first.
        "error_class": run.error_class and str(run.error_class),
        "has_changes": run.has_changes,
        "resource_changes": {
            "add": run.changes.add,
            "change": run.changes.change,
            "destroy": run.changes.destroy,
        },
        "plan_hash": run.plan_hash,
        # Why the run has no plan JSON: `show -json` failed for a speculative plan, or after
        # an auto-applied run nothing reviewed (docs/architecture.md §3).
        "plan_json_error": run.plan_json_error,
        "configuration_version_id": run.configuration_version_id,
        "configuration_sha256": run.configuration_sha256,
        # Chosen when the run was created (or by a release), not a new snapshot of the source.
        "configuration_pinned": run.pinned_configuration_version_id is not None,
        "created_by": run.created_by,
        "confirmed_by": run.confirmed_by,
        # A discard is recorded by its request; the run ends `discarded` soon after.
        "discard_requested_by": run.discard_requested_by,
        "discard_reason": run.discard_reason,
        # Run triggers: the applied run that queued this one; drift checks are refresh-only.
        "source_run_id": run.source_run_id,
        "refresh_only": run.refresh_only,
        "warnings": list(run.warnings),
        "actions": list(allowed_actions(run)),
        "timestamps": {
            "created_at": rfc3339(run.created_at),
            "started_at": rfc3339(run.started_at),
            "planned_at": rfc3339(run.planned_at),
            "plan_expires_at": rfc3339(run.plan_expires_at),
            "confirmed_at": rfc3339(run.confirmed_at),
            "discard_requested_at": rfc3339(run.discard_requested_at),
            "apply_started_at": rfc3339(run.apply_started_at),
            "finished_at": rfc3339(run.finished_at),
            "cancel_requested_at": rfc3339(run.cancel_requested_at),
            "force_cancel_requested_at": rfc3339(run.force_cancel_requested_at),
            "status_changed_at": rfc3339(run.status_changed_at),
        },
    }


def lock_view(lock: Lock | None) -> dict[str, Any] | None:
    if lock is None:
        return None
    terraform = lock.terraform
    return {
        "run_id": lock.run_id,
        "locked_by": lock.locked_by,
        "reason": lock.reason,
        "locked_at": rfc3339(lock.locked_at),
        "message": lock.describe(),
        # A lock taken through terraform's http backend: its lock ID and lock info.
        "lock_id": terraform and terraform.id,
        "operation": terraform and terraform.operation,
        "who": terraform and terraform.who,
        "info": terraform and terraform.info,
    }


def secret_mask(config: Config, workspace: str) -> SecretMask:
    """The workspace's secret values, as the API masks them in what it shows. A workspace no
    longer configured has none: what was masked when its state was stored stays masked."""
    try:
        return SecretMask(config.workspace(workspace).sensitive_values())
    except KeyError:
        return SecretMask()


def state_version_view(sv: StateVersion, mask: SecretMask) -> dict[str, Any]:
    """A state version with its outputs: terraform's sensitive ones null, the workspace's
    secrets masked in the rest (`mask`, from `secret_mask`; with the settings of now, so a
    value made sensitive after the state was stored is masked too)."""
    return {
        "id": sv.id,
        "serial": sv.serial,
        "lineage": sv.lineage,
        "sha256": sv.sha256,
        "kind": sv.kind,
        "run_id": sv.run_id,
        "rolled_back_from": sv.rolled_back_from,
        "resource_count": sv.resource_count,
        "created_at": rfc3339(sv.created_at),
        "created_by": sv.created_by,
        # Sensitive outputs come back null, secrets masked (docs/architecture.md §9).
        "outputs": {
            name: {
                "type": out.get("type"),
                "sensitive": bool(out.get("sensitive")),
                "value": None if out.get("sensitive") else mask.value(out.get("value")),
            }
            for name, out in sv.outputs.items()
        },
    }


def configuration_version_view(cv: ConfigurationVersion) -> dict[str, Any]:
    return {
        "id": cv.id,
        "sha256": cv.sha256,
        "size": cv.size,
        "file_count": cv.file_count,
        "created_at": rfc3339(cv.created_at),
    }
