"""The body of a run-task request, field for field as HCP Terraform sends it (docs/protocols.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tfward.ids import rfc3339
from tfward.runs.model import Run

PLAN_STAGES = ("post_plan", "pre_apply", "post_apply")


@dataclass(frozen=True, slots=True)
class Links:
    """Where task services reach the daemon: `[daemon] public_url`, and the organization."""

    public_url: str
    organization: str

    def callback(self, result_id: str) -> str:
        return f"{self.public_url}/api/v1/run-task-results/{result_id}/callback"

    def plan_json(self, result_id: str) -> str:
        return f"{self.public_url}/api/v1/run-task-results/{result_id}/plan-json"

    def run(self, run_id: str) -> str:
        return f"{self.public_url}/api/v1/runs/{run_id}"

    def workspace(self, name: str) -> str:
        return f"{self.public_url}/api/v1/workspaces/{name}"

    def configuration(self, cv_id: str) -> str:
        return f"{self.public_url}/api/v1/configuration-versions/{cv_id}/download"


def request_body(
    links: Links,
    *,
    run: Run,
    workspace_id: str,
    stage: str,
    result_id: str,
    enforcement: str,
    access_token: str,
) -> dict[str, Any]:
    cv = run.configuration_version_id
    return {
        "payload_version": 1,
        "stage": stage,
        "access_token": access_token,
        "capabilities": {"outcomes": True},
        "task_result_id": result_id,
        "task_result_callback_url": links.callback(result_id),
        "task_result_enforcement_level": enforcement,
        "run_id": run.id,
        "run_message": run.message,
        "run_created_at": rfc3339(run.created_at),
        "run_created_by": run.created_by or "tfward",
        "run_app_url": links.run(run.id),
        "workspace_id": workspace_id,
        "workspace_name": run.workspace,
        # The configuration snapshot is the workspace directory itself: its root.
        "workspace_working_directory": "",
        "workspace_app_url": links.workspace(run.workspace),
        "organization_name": links.organization,
        "is_speculative": run.is_speculative,
        "configuration_version_id": cv,
        "configuration_version_download_url": links.configuration(cv) if cv else None,
        **({"plan_json_api_url": links.plan_json(result_id)} if stage in PLAN_STAGES else {}),
        "vcs_repo_url": None,
        "vcs_branch": None,
        "vcs_commit_hash": None,
        "vcs_commit_url": None,
        "vcs_pull_request_url": None,
    }


def verification_body(links: Links, task_name: str) -> dict[str, Any]:
    """The test call HCP makes when a task is configured: `access_token` is "test-token"."""
    return {
        "payload_version": 1,
        "stage": "test",
        "access_token": "test-token",
        "capabilities": {"outcomes": True},
        "task_result_id": "taskrs-test",
        "task_result_callback_url": links.callback("taskrs-test"),
        "task_result_enforcement_level": "test",
        "run_id": "run-test",
        "run_message": f"verification of run task {task_name}",
        "run_created_at": None,
        "run_created_by": "tfward",
        "run_app_url": links.run("run-test"),
        "workspace_id": "ws-test",
        "workspace_name": "test",
        "workspace_working_directory": "",
        "workspace_app_url": links.workspace("test"),
        "organization_name": links.organization,
        "is_speculative": False,
        "configuration_version_id": None,
        "configuration_version_download_url": None,
        "vcs_repo_url": None,
        "vcs_branch": None,
        "vcs_commit_hash": None,
        "vcs_commit_url": None,
        "vcs_pull_request_url": None,
    }
