"""What a stage's run-task results mean for the run: pure decisions, applied by the pipeline.

- any mandatory `failed` / `timeout` / `webhook_error` blocks the run (`failed`,
  `error_kind = run_task`), except at `post_apply`: an applied run stays applied, the failure
  becomes a warning and a `run:needs_attention` notification;
- advisory failures add a warning to the run;
- every result gets a line in the run log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tfward.config import Config, RunTaskAttachment

from .coordinator import Attached, StageOutcome, describe, stage_budget

POST_APPLY = "post_apply"
# Time for the database writes around a stage's deliveries and waits.
STAGE_MARGIN = 10.0


@dataclass(frozen=True, slots=True)
class Enforcement:
    log_lines: tuple[str, ...]
    warnings: tuple[str, ...]
    block: str | None = None  # the run fails with this message
    attention: str | None = None  # the run stays as it is; notify with this message


@dataclass(frozen=True, slots=True)
class StageTasks:
    """The tasks a workspace attaches at a stage; `missing`: attached but no longer in the
    config (a reload removed them), with their enforcement."""

    attached: tuple[Attached, ...]
    missing: tuple[tuple[str, str], ...] = ()

    def budget(self) -> float:
        """How long the stage may take: the slowest task's delivery and timeout, plus margin."""
        if not self.attached:
            return 0.0
        return stage_budget([a.task for a in self.attached]) + STAGE_MARGIN


def tasks_at(config: Config, attachments: Sequence[RunTaskAttachment], stage: str) -> StageTasks:
    attached: list[Attached] = []
    missing: list[tuple[str, str]] = []
    for attachment in attachments:
        if stage not in attachment.stages:
            continue
        try:
            attached.append(Attached(config.run_task(attachment.task), attachment.enforcement))
        except KeyError:
            missing.append((attachment.task, attachment.enforcement))
    return StageTasks(tuple(attached), tuple(missing))


def enforce(outcome: StageOutcome, missing: Sequence[tuple[str, str]] = ()) -> Enforcement:
    stage = outcome.stage
    lines = [f"run task {describe(r)} ({r.enforcement}, {stage})" for r in outcome.results]
    blocking = [describe(r) for r in outcome.blocking]
    advisory = [describe(r) for r in outcome.advisory_failures]
    for name, enforcement in missing:
        text = f"{name}: not configured any more"
        lines.append(f"run task {text} ({enforcement}, {stage})")
        (blocking if enforcement == "mandatory" else advisory).append(text)
    warnings = [f"advisory run task at {stage}: {text}" for text in advisory]
    if not blocking:
        return Enforcement(tuple(lines), tuple(warnings))
    text = "; ".join(blocking)
    if stage == POST_APPLY:
        warnings += [f"mandatory run task after the apply: {item}" for item in blocking]
        return Enforcement(
            tuple(lines),
            tuple(warnings),
            attention=f"a mandatory run task failed after the apply: {text}",
        )
    return Enforcement(tuple(lines), tuple(warnings), block=text)
