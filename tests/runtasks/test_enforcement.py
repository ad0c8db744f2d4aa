"""What a stage's results mean for the run (pure decisions), and which tasks run at a stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfward.config import RunTaskAttachment, RunTaskConfig, parse_config
from tfward.ids import now
from tfward.runtasks.coordinator import StageOutcome
from tfward.runtasks.enforcement import STAGE_MARGIN, Enforcement, enforce, tasks_at
from tfward.store.tasks import TaskResult


def _result(name: str, status: str, enforcement: str, message: str = "why") -> TaskResult:
    when = now()
    return TaskResult(
        id=f"taskrs-{name}", run_id="run-1", workspace_id="ws-1", task_name=name,
        stage="post_plan", enforcement=enforcement, status=status, message=message, url=None,
        outcomes=[], token_jti=None, token_expires_at=None, token_revoked_at=when,
        created_at=when, updated_at=when, last_progress_at=None,
    )  # fmt: skip


def _outcome(stage: str, *results: tuple[str, str, str]) -> StageOutcome:
    return StageOutcome(stage, tuple(_result(*r) for r in results))


@pytest.mark.parametrize(
    ("outcome", "block", "warnings", "attention"),
    [
        (_outcome("post_plan", ("a", "passed", "mandatory")), None, (), None),
        (_outcome("pre_plan", ("a", "failed", "mandatory")), "a: failed: why", (), None),
        (_outcome("pre_apply", ("a", "timeout", "mandatory"), ("b", "webhook_error", "mandatory")),
         "a: timeout: why; b: webhook_error: why", (), None),
        (_outcome("post_plan", ("a", "failed", "advisory")), None,
         ("advisory run task at post_plan: a: failed: why",), None),
        (_outcome("post_plan", ("a", "passed", "mandatory"), ("b", "timeout", "advisory"),
                  ("c", "failed", "mandatory")),
         "c: failed: why", ("advisory run task at post_plan: b: timeout: why",), None),
        (_outcome("post_apply", ("a", "failed", "mandatory")), None,
         ("mandatory run task after the apply: a: failed: why",),
         "a mandatory run task failed after the apply: a: failed: why"),
        (_outcome("post_apply", ("a", "webhook_error", "advisory")), None,
         ("advisory run task at post_apply: a: webhook_error: why",), None),
    ],
    ids=[
        "a-pass-is-silent",
        "a-mandatory-failure-blocks",
        "every-blocking-result-is-named",
        "an-advisory-failure-only-warns",
        "the-most-restrictive-result-wins",
        "after-the-apply-a-mandatory-failure-warns-and-notifies",
        "after-the-apply-an-advisory-failure-warns",
    ],
)  # fmt: skip
def test_a_stage_outcome_becomes_a_block_a_warning_or_nothing(
    outcome: StageOutcome, block: str | None, warnings: tuple[str, ...], attention: str | None
) -> None:
    decision = enforce(outcome)
    assert (decision.block, decision.warnings, decision.attention) == (block, warnings, attention)
    assert len(decision.log_lines) == len(outcome.results)


def test_a_task_removed_from_the_config_blocks_when_it_was_mandatory() -> None:
    decision = enforce(_outcome("pre_plan"), [("gone", "mandatory"), ("old", "advisory")])
    assert decision == Enforcement(
        log_lines=(
            "run task gone: not configured any more (mandatory, pre_plan)",
            "run task old: not configured any more (advisory, pre_plan)",
        ),
        warnings=("advisory run task at pre_plan: old: not configured any more",),
        block="gone: not configured any more",
    )


def test_only_the_tasks_attached_at_a_stage_run_there(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    config = parse_config(
        """
        [[run_task]]
        name = "scan"
        url = "http://127.0.0.1:9/scan"
        timeout = "2s"
        retries = 0

        [[workspace]]
        name = "a"
        source = "ws"
        """,
        tmp_path / "tfward.toml",
    )
    attachments = (
        RunTaskAttachment("scan", ("post_plan",), "advisory"),
        RunTaskAttachment("removed", ("post_plan",), "mandatory"),
    )
    found = tasks_at(config, attachments, "post_plan")
    assert [(a.task.name, a.enforcement) for a in found.attached] == [("scan", "advisory")]
    assert found.missing == (("removed", "mandatory"),)
    assert tasks_at(config, attachments, "pre_plan").attached == ()
    # The stage may wait for the delivery (2 s connect + 2 s read + 2 s write) and the timeout.
    assert found.budget() == 2 + 6 + STAGE_MARGIN
    assert tasks_at(config, (), "post_plan").budget() == 0.0
    assert isinstance(found.attached[0].task, RunTaskConfig)
