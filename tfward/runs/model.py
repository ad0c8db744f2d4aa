"""The run and its state machine, as pure code.

Every status or stage change of a run is one of the functions below: each takes a `Run` and
returns a new `Run`, or raises `InvalidTransition` with a reason an API client can read.
Persistence loads a run, applies one transition and saves it in one short transaction; no other
module assigns a status string.

Only `finish` returns a terminal run, and only the termination funnel calls it (the store's
`save` refuses a terminal run; `save_final` is the funnel's). Actions a caller takes — cancel,
discard — are *requests* recorded on the run (`cancel_requested_at`, `discard_requested_at`);
the run stays where it is until the funnel ends it, so nothing can make a run terminal past
the funnel (docs/architecture.md §4).

Status and stage (docs/architecture.md §3):

    pending ──start_planning──> planning ──plan_finished──> apply_pending ──begin_apply──> applying
       │  ^                        │  │                        │    │                      │
       │  └──────requeue───────────┘  └─(no changes / plan)─> planned_and_finished         │
       │                             (auto_apply + changes) ─────────────────────────────> applying
       └─cancel─> cancelled            discard / expire ──> discarded                        │
                                                                                             v
               finish(): applied | applied_state_error | failed | cancelled | force_cancelled
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tfward.errors import InvalidTransition


class Status(enum.StrEnum):
    PENDING = "pending"
    PLANNING = "planning"
    APPLY_PENDING = "apply_pending"
    APPLYING = "applying"
    PLANNED_AND_FINISHED = "planned_and_finished"
    APPLIED = "applied"
    APPLIED_STATE_ERROR = "applied_state_error"
    FAILED = "failed"
    CANCELLED = "cancelled"
    FORCE_CANCELLED = "force_cancelled"
    DISCARDED = "discarded"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {
        Status.PLANNED_AND_FINISHED,
        Status.APPLIED,
        Status.APPLIED_STATE_ERROR,
        Status.FAILED,
        Status.CANCELLED,
        Status.FORCE_CANCELLED,
        Status.DISCARDED,
    }
)
# A run in one of these has a terraform process (or our own work) in flight.
ACTIVE = frozenset({Status.PLANNING, Status.APPLYING})


class Stage(enum.StrEnum):
    FETCHING = "fetching"
    INIT = "init"
    PRE_PLAN = "pre_plan"
    PLANNING = "planning"
    SAVING_PLAN = "saving_plan"
    POST_PLAN = "post_plan"
    RESTORING_PLAN = "restoring_plan"
    PRE_APPLY = "pre_apply"
    APPLYING = "applying"
    SAVING_STATE = "saving_state"
    POST_APPLY = "post_apply"


PLAN_STAGES = (
    Stage.FETCHING,
    Stage.INIT,
    Stage.PRE_PLAN,
    Stage.PLANNING,
    Stage.SAVING_PLAN,
    Stage.POST_PLAN,
)
APPLY_STAGES = (
    Stage.RESTORING_PLAN,
    Stage.PRE_APPLY,
    Stage.APPLYING,
    Stage.SAVING_STATE,
    Stage.POST_APPLY,
)
# Stages that must never be interrupted by a daemon shutdown (seed C1).
CRITICAL_STAGES = frozenset({Stage.APPLYING, Stage.SAVING_STATE, Stage.SAVING_PLAN})


class Operation(enum.StrEnum):
    PLAN = "plan"
    PLAN_AND_APPLY = "plan_and_apply"
    DESTROY = "destroy"


class ErrorKind(enum.StrEnum):
    CONFIG = "config"
    INIT = "init"
    PLAN = "plan"
    APPLY = "apply"
    STATE = "state"
    RUN_TASK = "run_task"
    TIMEOUT = "timeout"
    LOCK = "lock"
    INTERNAL = "internal"
    INTERRUPTED = "interrupted"
    HOOK = "hook"  # a script hook failed or timed out (docs/architecture.md §3)
    # The daemon running the apply died, and its run directory is out of reach of the one
    # that took the workspace over: the state may lack what terraform created since the last
    # stored version; the workspace stays locked (docs/architecture.md §15).
    OWNER_LOST = "owner_lost"


class ErrorClass(enum.StrEnum):
    """Whether a failure would likely go away if the same run were tried again
    (runs/classify.py decides; `terraform init` is retried when it is transient)."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class ResourceChanges:
    add: int = 0
    change: int = 0
    destroy: int = 0

    @property
    def any(self) -> bool:
        return bool(self.add or self.change or self.destroy)


@dataclass(frozen=True, slots=True)
class Run:
    """One run, as the state machine sees it. Timestamps are timezone-aware UTC."""

    id: str
    workspace: str
    operation: Operation
    auto_apply: bool
    status: Status
    created_at: datetime
    stage: Stage | None = None
    message: str = ""
    targets: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    created_by: str | None = None
    error_kind: ErrorKind | None = None
    error_message: str | None = None
    error_class: ErrorClass | None = None
    has_changes: bool | None = None
    changes: ResourceChanges = field(default_factory=ResourceChanges)
    plan_hash: str | None = None
    configuration_version_id: str | None = None
    configuration_sha256: str | None = None  # of that version, read with the run (not saved)
    started_at: datetime | None = None
    planned_at: datetime | None = None
    plan_expires_at: datetime | None = None
    confirmed_at: datetime | None = None
    confirmed_by: str | None = None
    apply_started_at: datetime | None = None
    finished_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    force_cancel_requested_at: datetime | None = None
    warnings: tuple[str, ...] = ()
    status_changed_at: datetime | None = None
    # Set on runs a release creates: the item it executes, and what the release rolls out
    # (a configuration version of this workspace to apply instead of a fresh snapshot, and
    # variables that override the workspace's).
    release_item_id: str | None = None
    pinned_configuration_version_id: str | None = None
    variable_overrides: Mapping[str, Any] | None = None
    # The run whose apply queued this one (run triggers); a refresh-only plan (drift check).
    source_run_id: str | None = None
    refresh_only: bool = False
    # A discard asked for and recorded by the request that made it; the funnel finishes the run.
    discard_requested_at: datetime | None = None
    discard_requested_by: str | None = None
    discard_reason: str | None = None
    # Why the run has no plan JSON: `terraform show -json` failed for a speculative plan, or
    # after an auto-applied run that nothing reviewed (docs/architecture.md §3).
    plan_json_error: str | None = None

    @property
    def is_speculative(self) -> bool:
        return self.operation is Operation.PLAN


def _to(run: Run, now: datetime, status: Status, **changes: object) -> Run:
    return dataclasses.replace(run, status=status, status_changed_at=now, **changes)  # type: ignore[arg-type]


def _refuse(run: Run, action: str) -> InvalidTransition:
    return InvalidTransition(f"cannot {action} run {run.id}: it is {run.status}")


def start_planning(run: Run, now: datetime) -> Run:
    if run.status is not Status.PENDING:
        raise _refuse(run, "start planning")
    return _to(run, now, Status.PLANNING, stage=Stage.FETCHING, started_at=now)


def enter_stage(run: Run, stage: Stage) -> Run:
    """Move to a stage of the run's current phase."""
    allowed = PLAN_STAGES if run.status is Status.PLANNING else APPLY_STAGES
    if run.status not in ACTIVE or stage not in allowed:
        raise InvalidTransition(
            f"run {run.id} is {run.status}: stage {stage} does not belong there"
        )
    return dataclasses.replace(run, stage=stage)


def plan_finished(
    run: Run,
    now: datetime,
    *,
    changes: ResourceChanges,
    has_changes: bool,
    plan_hash: str,
    expires_at: datetime,
    plan_json_error: str | None = None,
) -> Run:
    """Record a finished plan. The run becomes `apply_pending` when someone must confirm, or
    `applying` when it applies by itself; a plan that will not be applied stays `planning` for
    the termination funnel to finish as `planned_and_finished` (see `needs_apply`).
    `plan_json_error`: a speculative plan whose `show -json` failed says so."""
    if run.status is not Status.PLANNING:
        raise _refuse(run, "finish planning")
    recorded = dataclasses.replace(
        run,
        changes=changes,
        has_changes=has_changes,
        plan_hash=plan_hash,
        planned_at=now,
        plan_json_error=plan_json_error,
    )
    if not needs_apply(recorded):
        return recorded
    if run.auto_apply:
        return _to(
            recorded,
            now,
            Status.APPLYING,
            stage=Stage.RESTORING_PLAN,
            apply_started_at=now,
            confirmed_at=now,
            confirmed_by="auto-apply",
        )
    return _to(recorded, now, Status.APPLY_PENDING, stage=None, plan_expires_at=expires_at)


def plan_json_stored(run: Run, changes: ResourceChanges) -> Run:
    """The plan JSON that `show -json` made after the run is stored: the change counts are the
    JSON's from now on (until then they came from terraform's `Plan:` line). Any status: the
    run has usually ended (docs/architecture.md §3)."""
    if run.plan_hash is None:
        raise InvalidTransition(f"run {run.id} has no plan: there is no plan JSON to store")
    return dataclasses.replace(run, changes=changes, plan_json_error=None)


def plan_json_failed(run: Run, error: str) -> Run:
    """`show -json` after the run failed: the run says why it has no plan JSON (nothing
    waited for it: docs/architecture.md §3)."""
    if run.plan_hash is None:
        raise InvalidTransition(f"run {run.id} has no plan: there is no plan JSON to fail")
    return dataclasses.replace(run, plan_json_error=error)


def needs_apply(run: Run) -> bool:
    return not run.is_speculative and bool(run.has_changes)


def confirm(run: Run, now: datetime, *, by: str | None, lock_holder: str | None) -> Run:
    """Accept the plan. Idempotent: confirming a confirmed run returns it unchanged (seed M7).

    Refused when the plan has expired or the workspace lock is no longer held by this run."""
    if run.confirmed_at is not None and run.status in (Status.APPLY_PENDING, Status.APPLYING):
        return run
    if run.status is not Status.APPLY_PENDING:
        raise _refuse(run, "confirm")
    if run.discard_requested_at is not None:
        raise InvalidTransition(
            f"cannot confirm run {run.id}: it was discarded by {run.discard_requested_by} at "
            f"{run.discard_requested_at.isoformat()}"
        )
    if run.plan_expires_at is not None and now >= run.plan_expires_at:
        raise InvalidTransition(
            f"cannot confirm run {run.id}: its plan expired at "
            f"{run.plan_expires_at.isoformat()}; discard it and plan again"
        )
    if lock_holder != run.id:
        holder = f"held by {lock_holder}" if lock_holder else "not locked"
        raise InvalidTransition(
            f"cannot confirm run {run.id}: the workspace lock is no longer held by this run "
            f"({holder})"
        )
    return dataclasses.replace(run, confirmed_at=now, confirmed_by=by)


def begin_apply(run: Run, now: datetime) -> Run:
    """A confirmed `apply_pending` run starts applying (the actor calls this, not the API)."""
    if run.status is not Status.APPLY_PENDING or run.confirmed_at is None:
        raise _refuse(run, "begin applying")
    return _to(run, now, Status.APPLYING, stage=Stage.RESTORING_PLAN, apply_started_at=now)


def discard(run: Run, now: datetime, *, by: str | None, reason: str | None = None) -> Run:
    """Record a discard of an `apply_pending` run not yet confirmed. Idempotent. The run stays
    `apply_pending` until the termination funnel finishes it as `discarded`; from now on a
    confirm is refused, so the first of confirm and discard wins; the refusal names the
    confirm also once the apply has begun."""
    confirmed = run.confirmed_at is not None and run.status in (
        Status.APPLY_PENDING,
        Status.APPLYING,
    )
    if run.status is not Status.APPLY_PENDING and not confirmed:
        raise _refuse(run, "discard")
    if run.discard_requested_at is not None:
        return run
    if run.confirmed_at is not None:
        doing = "is applying" if run.status is Status.APPLYING else "is about to apply"
        raise InvalidTransition(
            f"cannot discard run {run.id}: it was confirmed by {run.confirmed_by} at "
            f"{run.confirmed_at.isoformat()} and {doing}"
        )
    return dataclasses.replace(
        run, discard_requested_at=now, discard_requested_by=by, discard_reason=reason
    )


def cancel(run: Run, now: datetime, *, force: bool = False) -> Run:
    """Record a request to stop a pending or active run. The run stays where it is: its actor
    finishes a pending one, or interrupts terraform, and the termination funnel makes it
    terminal. Force-cancel is allowed only after a cancel was requested."""
    if force:
        if run.status not in ACTIVE:
            raise _refuse(run, "force-cancel")
        if run.cancel_requested_at is None:
            raise InvalidTransition(f"cannot force-cancel run {run.id}: cancel it first")
        if run.force_cancel_requested_at is not None:
            return run
        return dataclasses.replace(run, force_cancel_requested_at=now)
    if run.status not in ACTIVE and run.status is not Status.PENDING:
        hint = ""
        if run.status is Status.APPLY_PENDING:
            # Confirmed, it is about to apply and can no longer be discarded.
            hint = (
                "; it is confirmed and starts applying at once: cancel it then"
                if run.confirmed_at
                else "; discard it instead"
            )
        raise InvalidTransition(f"cannot cancel run {run.id}: it is {run.status}{hint}")
    if run.cancel_requested_at is not None:
        return run
    return dataclasses.replace(run, cancel_requested_at=now)


def requeue(run: Run, now: datetime, *, reason: str, nothing_applied: bool = False) -> Run:
    """Send a run back to `pending` to be planned again (daemon shutdown while planning, a lost or
    stale plan: seed 003). Confirmation and plan results are forgotten; it must be confirmed again.
    From the `applying` stage only when terraform refused the plan (`nothing_applied`)."""
    if run.status not in (Status.PLANNING, Status.APPLY_PENDING, Status.APPLYING):
        raise _refuse(run, "requeue")
    if (
        run.status is Status.APPLYING
        and not nothing_applied
        and run.stage not in (Stage.RESTORING_PLAN, Stage.PRE_APPLY)
    ):
        raise InvalidTransition(f"cannot requeue run {run.id}: terraform may have applied already")
    return _to(
        run,
        now,
        Status.PENDING,
        stage=None,
        has_changes=None,
        changes=ResourceChanges(),
        plan_hash=None,
        planned_at=None,
        plan_expires_at=None,
        confirmed_at=None,
        confirmed_by=None,
        apply_started_at=None,
        cancel_requested_at=None,
        force_cancel_requested_at=None,
        plan_json_error=None,
        warnings=(*run.warnings, f"re-planned: {reason}"),
    )


def finish(
    run: Run,
    now: datetime,
    status: Status,
    *,
    error_kind: ErrorKind | None = None,
    error_message: str | None = None,
    error_class: ErrorClass | None = None,
) -> Run:
    """Make a run terminal. Only the termination funnel calls this."""
    if not status.is_terminal:
        raise InvalidTransition(f"cannot finish run {run.id} as {status}: not a terminal status")
    if run.status.is_terminal:
        raise InvalidTransition(f"run {run.id} already finished as {run.status}")
    if status in (Status.APPLIED, Status.APPLIED_STATE_ERROR) and run.status is not Status.APPLYING:
        raise InvalidTransition(f"run {run.id} cannot be {status}: it never applied")
    if status is Status.PLANNED_AND_FINISHED and run.status is not Status.PLANNING:
        raise InvalidTransition(f"run {run.id} cannot be {status} from {run.status}")
    if status is Status.DISCARDED and run.status is not Status.APPLY_PENDING:
        raise _refuse(run, "discard")
    return _to(
        run,
        now,
        status,
        stage=None,
        finished_at=now,
        error_kind=error_kind,
        error_message=error_message,
        error_class=error_class,
    )


def add_warning(run: Run, warning: str) -> Run:
    return dataclasses.replace(run, warnings=(*run.warnings, warning))


def allowed_actions(run: Run) -> Sequence[str]:
    """The actions the API would accept now, for clients to render buttons."""
    if run.status is Status.PENDING:
        return () if run.cancel_requested_at else ("cancel",)
    if run.status is Status.APPLY_PENDING:
        return () if run.confirmed_at or run.discard_requested_at else ("confirm", "discard")
    if run.status in ACTIVE:
        if run.cancel_requested_at is None:
            return ("cancel",)
        return () if run.force_cancel_requested_at else ("force-cancel",)
    return ()
