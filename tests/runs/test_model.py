"""The run state machine (tfward/runs/model.py): every action from every status, and the fields
each accepted transition records."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tfward.errors import InvalidTransition
from tfward.runs import model
from tfward.runs.model import (
    APPLY_STAGES,
    PLAN_STAGES,
    TERMINAL,
    ErrorKind,
    Operation,
    ResourceChanges,
    Run,
    Stage,
    Status,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(minutes=5)
EXPIRES = T0 + timedelta(hours=1)
RUN_ID = "run-abcdefghijklmnop"
CHANGES = ResourceChanges(add=2, change=1)


def _pending(*, operation: Operation = Operation.PLAN_AND_APPLY, auto_apply: bool = False) -> Run:
    return Run(
        id=RUN_ID,
        workspace="demo",
        operation=operation,
        auto_apply=auto_apply,
        status=Status.PENDING,
        created_at=T0,
        status_changed_at=T0,
    )


def _planning(**kwargs: object) -> Run:
    return model.start_planning(_pending(**kwargs), T0)  # type: ignore[arg-type]


def _finish_plan(run: Run, *, has_changes: bool = True) -> Run:
    return model.plan_finished(
        run,
        T0,
        changes=CHANGES if has_changes else ResourceChanges(),
        has_changes=has_changes,
        plan_hash="sha-plan",
        expires_at=EXPIRES,
    )


def _apply_pending() -> Run:
    return _finish_plan(_planning())


def _confirmed() -> Run:
    return model.confirm(_apply_pending(), T0, by="alice", lock_holder=RUN_ID)


def _applying(stage: Stage = Stage.RESTORING_PLAN) -> Run:
    run = model.begin_apply(_confirmed(), T0)
    return run if stage is Stage.RESTORING_PLAN else model.enter_stage(run, stage)


def _finished(status: Status) -> Run:
    if status is Status.DISCARDED:
        return model.finish(model.discard(_apply_pending(), T0, by="alice"), T0, status)
    if status in (Status.APPLIED, Status.APPLIED_STATE_ERROR):
        return model.finish(_applying(), T0, status)
    if status is Status.CANCELLED:
        return model.finish(model.cancel(_pending(), T0), T0, status)
    return model.finish(_planning(), T0, status)


# A run in every status, reached through the transitions themselves. `apply_pending` comes twice:
# before and after its confirmation, which decides most of what it accepts.
VARIANTS: dict[str, Callable[[], Run]] = {
    "pending": _pending,
    "planning": _planning,
    "apply_pending": _apply_pending,
    "apply_pending_confirmed": _confirmed,
    "applying": _applying,
    **{str(s): functools.partial(_finished, s) for s in sorted(TERMINAL)},
}


def _plan_finished_as(
    operation: Operation, auto_apply: bool, has_changes: bool
) -> Callable[[Run], Run]:
    def act(run: Run) -> Run:
        run = dataclasses.replace(run, operation=operation, auto_apply=auto_apply)
        return _finish_plan(run, has_changes=has_changes)

    return act


def _enter(stage: Stage) -> Callable[[Run], Run]:
    return lambda run: model.enter_stage(run, stage)


def _finish_as(status: Status) -> Callable[[Run], Run]:
    return lambda run: model.finish(run, LATER, status)


ACTIONS: dict[str, Callable[[Run], Run]] = {
    "start_planning": lambda r: model.start_planning(r, LATER),
    **{f"enter_stage:{s}": _enter(s) for s in Stage},
    "plan_finished:speculative": _plan_finished_as(Operation.PLAN, False, True),
    "plan_finished:no_changes": _plan_finished_as(Operation.PLAN_AND_APPLY, False, False),
    "plan_finished:changes_auto_apply": _plan_finished_as(Operation.PLAN_AND_APPLY, True, True),
    "plan_finished:changes": _plan_finished_as(Operation.PLAN_AND_APPLY, False, True),
    "confirm": lambda r: model.confirm(r, LATER, by="bob", lock_holder=r.id),
    "confirm:expired_plan": lambda r: model.confirm(r, EXPIRES, by="bob", lock_holder=r.id),
    "confirm:lock_held_by_another_run": lambda r: model.confirm(
        r, LATER, by="bob", lock_holder="run-other"
    ),
    "confirm:lock_not_held": lambda r: model.confirm(r, LATER, by="bob", lock_holder=None),
    "begin_apply": lambda r: model.begin_apply(r, LATER),
    "discard": lambda r: model.discard(r, LATER, by="bob", reason="not today"),
    "cancel": lambda r: model.cancel(r, LATER),
    "force_cancel": lambda r: model.cancel(r, LATER, force=True),
    "requeue": lambda r: model.requeue(r, LATER, reason="daemon stopped"),
    "requeue:nothing_applied": lambda r: model.requeue(
        r, LATER, reason="stale plan", nothing_applied=True
    ),
    **{f"finish:{s}": _finish_as(s) for s in sorted(TERMINAL)},
}

NOT_FINISHED = ("pending", "planning", "apply_pending", "apply_pending_confirmed", "applying")

# Every accepted (variant, action) pair and the status it leads to; every other pair is refused.
ACCEPTED: dict[tuple[str, str], Status] = {
    ("pending", "start_planning"): Status.PLANNING,
    **{("planning", f"enter_stage:{s}"): Status.PLANNING for s in PLAN_STAGES},
    **{("applying", f"enter_stage:{s}"): Status.APPLYING for s in APPLY_STAGES},
    ("planning", "plan_finished:speculative"): Status.PLANNING,
    ("planning", "plan_finished:no_changes"): Status.PLANNING,
    ("planning", "plan_finished:changes_auto_apply"): Status.APPLYING,
    ("planning", "plan_finished:changes"): Status.APPLY_PENDING,
    ("apply_pending", "confirm"): Status.APPLY_PENDING,
    # Confirming again is idempotent, whatever the plan's age or the lock (seed M7).
    **{
        (v, a): s
        for v, s in (
            ("apply_pending_confirmed", Status.APPLY_PENDING),
            ("applying", Status.APPLYING),
        )
        for a in (
            "confirm",
            "confirm:expired_plan",
            "confirm:lock_held_by_another_run",
            "confirm:lock_not_held",
        )
    },
    ("apply_pending_confirmed", "begin_apply"): Status.APPLYING,
    # Requests: the run stays where it is until the termination funnel finishes it.
    ("apply_pending", "discard"): Status.APPLY_PENDING,
    ("pending", "cancel"): Status.PENDING,
    ("planning", "cancel"): Status.PLANNING,
    ("applying", "cancel"): Status.APPLYING,
    **{
        (v, a): Status.PENDING
        for v in ("planning", "apply_pending", "apply_pending_confirmed", "applying")
        for a in ("requeue", "requeue:nothing_applied")
    },
    **{
        (v, f"finish:{s}"): s
        for v in NOT_FINISHED
        for s in (Status.FAILED, Status.CANCELLED, Status.FORCE_CANCELLED)
    },
    ("applying", "finish:applied"): Status.APPLIED,
    ("applying", "finish:applied_state_error"): Status.APPLIED_STATE_ERROR,
    ("planning", "finish:planned_and_finished"): Status.PLANNED_AND_FINISHED,
    ("apply_pending", "finish:discarded"): Status.DISCARDED,
    ("apply_pending_confirmed", "finish:discarded"): Status.DISCARDED,
}

# What a refusal says when it is more specific than "it is <status>".
REFUSAL_REASONS: dict[tuple[str, str], str] = {
    ("apply_pending", "confirm:expired_plan"): "its plan expired at 2024-05-01T13:00:00+00:00; "
    "discard it and plan again",
    ("apply_pending", "confirm:lock_held_by_another_run"): "no longer held by this run "
    "(held by run-other)",
    ("apply_pending", "confirm:lock_not_held"): "no longer held by this run (not locked)",
    ("apply_pending_confirmed", "discard"): "it was confirmed by alice at",
    ("applying", "discard"): "it was confirmed by alice at",
    ("apply_pending", "cancel"): "it is apply_pending; discard it instead",
    ("apply_pending_confirmed", "cancel"): "confirmed and starts applying at once: cancel it then",
    ("planning", "force_cancel"): "cancel it first",
    ("applying", "force_cancel"): "cancel it first",
    **{
        (v, f"finish:{s}"): "it never applied"
        for v in ("pending", "planning", "apply_pending", "apply_pending_confirmed")
        for s in (Status.APPLIED, Status.APPLIED_STATE_ERROR)
    },
    **{
        (str(t), a): f"already finished as {t}"
        for t in TERMINAL
        for a in ACTIONS
        if a.startswith("finish:")
    },
}


KNOWN_BUGS: dict[tuple[str, str], pytest.MarkDecorator] = {}


@pytest.mark.parametrize(
    ("variant", "action"),
    [
        pytest.param(v, a, id=f"{a}-from-{v}", marks=KNOWN_BUGS.get((v, a), ()))
        for v in VARIANTS
        for a in ACTIONS
    ],
)
def test_every_action_from_every_status_is_either_accepted_or_refused_with_a_reason(
    variant: str, action: str
) -> None:
    run = VARIANTS[variant]()
    expected = ACCEPTED.get((variant, action))
    if expected is not None:
        assert ACTIONS[action](run).status is expected
        return
    with pytest.raises(InvalidTransition) as refused:
        ACTIONS[action](run)
    message = str(refused.value)
    assert run.id in message
    assert REFUSAL_REASONS.get((variant, action), str(run.status)) in message


def test_the_accepted_table_names_only_real_statuses_and_actions() -> None:
    # Guards the table above against typos that would silently turn a case into a refusal.
    assert {v for v, _ in ACCEPTED} <= VARIANTS.keys()
    assert {a for _, a in ACCEPTED} <= ACTIONS.keys()
    assert {v for v, _ in REFUSAL_REASONS} <= VARIANTS.keys()
    assert not ACCEPTED.keys() & REFUSAL_REASONS.keys()


# ---- start_planning and stages --------------------------------------------------------------


def test_start_planning_enters_fetching_and_records_the_start() -> None:
    run = model.start_planning(_pending(), LATER)
    assert (run.status, run.stage, run.started_at, run.status_changed_at) == (
        Status.PLANNING,
        Stage.FETCHING,
        LATER,
        LATER,
    )


def test_entering_a_stage_keeps_the_status_and_its_change_time() -> None:
    run = model.enter_stage(_planning(), Stage.INIT)
    assert (run.status, run.stage, run.status_changed_at) == (Status.PLANNING, Stage.INIT, T0)


@pytest.mark.parametrize("stage", APPLY_STAGES, ids=str)
def test_a_planning_run_refuses_an_apply_stage(stage: Stage) -> None:
    with pytest.raises(InvalidTransition, match=f"planning: stage {stage} does not belong there"):
        model.enter_stage(_planning(), stage)


@pytest.mark.parametrize("stage", PLAN_STAGES, ids=str)
def test_an_applying_run_refuses_a_plan_stage(stage: Stage) -> None:
    with pytest.raises(InvalidTransition, match=f"applying: stage {stage} does not belong there"):
        model.enter_stage(_applying(), stage)


# ---- plan_finished --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "auto_apply", "has_changes"),
    [
        pytest.param(Operation.PLAN, False, True, id="speculative-with-changes"),
        pytest.param(Operation.PLAN, True, True, id="speculative-even-with-auto-apply"),
        pytest.param(Operation.PLAN_AND_APPLY, False, False, id="no-changes"),
        pytest.param(Operation.PLAN_AND_APPLY, True, False, id="no-changes-with-auto-apply"),
    ],
)
def test_a_plan_that_will_not_be_applied_stays_planning_with_its_results_recorded(
    operation: Operation, auto_apply: bool, has_changes: bool
) -> None:
    before = _planning(operation=operation, auto_apply=auto_apply)
    run = _finish_plan(before, has_changes=has_changes)
    assert not model.needs_apply(run)
    assert (run.status, run.stage, run.status_changed_at) == (Status.PLANNING, Stage.FETCHING, T0)
    assert (run.has_changes, run.plan_hash, run.planned_at) == (has_changes, "sha-plan", T0)
    assert run.plan_expires_at is None and run.confirmed_at is None


def test_a_plan_with_changes_waits_for_confirmation_until_it_expires() -> None:
    run = model.plan_finished(
        _planning(),
        LATER,
        changes=CHANGES,
        has_changes=True,
        plan_hash="sha-plan",
        expires_at=EXPIRES,
    )
    assert (run.status, run.stage, run.status_changed_at) == (Status.APPLY_PENDING, None, LATER)
    assert (run.changes, run.plan_hash, run.planned_at, run.plan_expires_at) == (
        CHANGES,
        "sha-plan",
        LATER,
        EXPIRES,
    )
    assert run.confirmed_at is None
    assert model.allowed_actions(run) == ("confirm", "discard")


def test_a_plan_with_changes_and_auto_apply_goes_straight_to_applying_confirmed_by_auto_apply() -> (
    None
):
    run = model.plan_finished(
        _planning(auto_apply=True),
        LATER,
        changes=CHANGES,
        has_changes=True,
        plan_hash="sha-plan",
        expires_at=EXPIRES,
    )
    assert (run.status, run.stage) == (Status.APPLYING, Stage.RESTORING_PLAN)
    assert (run.confirmed_at, run.confirmed_by, run.apply_started_at) == (
        LATER,
        "auto-apply",
        LATER,
    )
    assert run.plan_expires_at is None


# ---- confirm and begin_apply ----------------------------------------------------------------


def test_confirm_records_who_confirmed_and_when() -> None:
    run = model.confirm(_apply_pending(), LATER, by="bob", lock_holder=RUN_ID)
    assert (run.status, run.confirmed_at, run.confirmed_by) == (Status.APPLY_PENDING, LATER, "bob")
    assert model.allowed_actions(run) == ()


def test_a_second_confirm_returns_the_run_unchanged_and_keeps_the_first_confirmation() -> None:
    first = model.confirm(_apply_pending(), LATER, by="bob", lock_holder=RUN_ID)
    second = model.confirm(first, LATER + timedelta(minutes=1), by="carol", lock_holder=None)
    assert second is first


def test_confirm_refuses_a_plan_at_the_very_moment_it_expires() -> None:
    with pytest.raises(InvalidTransition, match="its plan expired at"):
        model.confirm(_apply_pending(), EXPIRES, by="bob", lock_holder=RUN_ID)


def test_confirm_accepts_a_plan_just_before_it_expires() -> None:
    run = model.confirm(
        _apply_pending(), EXPIRES - timedelta(microseconds=1), by="bob", lock_holder=RUN_ID
    )
    assert run.confirmed_by == "bob"


def test_begin_apply_starts_a_confirmed_run_at_restoring_plan() -> None:
    run = model.begin_apply(_confirmed(), LATER)
    assert (run.status, run.stage, run.apply_started_at, run.status_changed_at) == (
        Status.APPLYING,
        Stage.RESTORING_PLAN,
        LATER,
        LATER,
    )
    assert run.confirmed_by == "alice"


def test_begin_apply_refuses_an_unconfirmed_run() -> None:
    with pytest.raises(InvalidTransition, match="cannot begin applying"):
        model.begin_apply(_apply_pending(), LATER)


# ---- discard --------------------------------------------------------------------------------


def test_discard_before_confirmation_records_the_request_and_the_funnel_finishes_it() -> None:
    run = model.discard(_apply_pending(), LATER, by="bob", reason="not today")
    assert (run.status, run.discard_requested_at, run.discard_requested_by, run.finished_at) == (
        Status.APPLY_PENDING,
        LATER,
        "bob",
        None,
    )
    assert model.allowed_actions(run) == ()
    final = model.finish(run, LATER, Status.DISCARDED, error_message=run.discard_reason)
    assert (final.status, final.finished_at, final.error_message) == (
        Status.DISCARDED,
        LATER,
        "not today",
    )


def test_a_repeated_discard_keeps_the_first_request() -> None:
    first = model.discard(_apply_pending(), LATER, by="bob")
    assert model.discard(first, LATER + timedelta(minutes=1), by="carol") is first


def test_discard_after_confirmation_is_refused_naming_who_confirmed() -> None:
    with pytest.raises(InvalidTransition, match="confirmed by alice at .* and is about to apply"):
        model.discard(_confirmed(), LATER, by="bob")


def test_confirm_after_a_discard_is_refused_naming_who_discarded() -> None:
    discarded = model.discard(_apply_pending(), T0, by="bob")
    with pytest.raises(InvalidTransition, match="it was discarded by bob at"):
        model.confirm(discarded, LATER, by="alice", lock_holder=RUN_ID)


def test_no_action_a_caller_takes_makes_a_run_terminal() -> None:
    # Only `finish` (the termination funnel's) ends a run: requests leave the status alone.
    for variant, make in VARIANTS.items():
        for name, action in ACTIONS.items():
            if name.startswith("finish:"):
                continue
            try:
                after = action(make())
            except InvalidTransition:
                continue
            assert not after.status.is_terminal, (variant, name)


# ---- cancel and force-cancel ----------------------------------------------------------------


def test_cancel_of_a_pending_run_records_the_request_for_its_actor_to_finish() -> None:
    run = model.cancel(_pending(), LATER)
    assert (run.status, run.finished_at, run.cancel_requested_at) == (
        Status.PENDING,
        None,
        LATER,
    )
    assert model.allowed_actions(run) == ()


@pytest.mark.parametrize("variant", ["planning", "applying"])
def test_cancel_of_an_active_run_only_records_the_request(variant: str) -> None:
    before = VARIANTS[variant]()
    run = model.cancel(before, LATER)
    assert run == dataclasses.replace(before, cancel_requested_at=LATER)
    assert model.allowed_actions(run) == ("force-cancel",)


@pytest.mark.parametrize("variant", ["planning", "applying"])
def test_a_repeated_cancel_keeps_the_first_request(variant: str) -> None:
    first = model.cancel(VARIANTS[variant](), LATER)
    assert model.cancel(first, LATER + timedelta(minutes=1)) is first


def test_cancel_of_a_run_awaiting_confirmation_is_refused_with_a_hint_to_discard() -> None:
    with pytest.raises(InvalidTransition, match="it is apply_pending; discard it instead"):
        model.cancel(_apply_pending(), LATER)


@pytest.mark.parametrize("variant", ["planning", "applying"])
def test_force_cancel_is_refused_until_a_cancel_was_requested(variant: str) -> None:
    with pytest.raises(InvalidTransition, match="cancel it first"):
        model.cancel(VARIANTS[variant](), LATER, force=True)


@pytest.mark.parametrize("variant", ["planning", "applying"])
def test_force_cancel_after_cancel_records_the_force_request(variant: str) -> None:
    cancelled = model.cancel(VARIANTS[variant](), T0)
    run = model.cancel(cancelled, LATER, force=True)
    assert run == dataclasses.replace(cancelled, force_cancel_requested_at=LATER)
    assert model.allowed_actions(run) == ()


def test_a_repeated_force_cancel_keeps_the_first_request() -> None:
    forced = model.cancel(model.cancel(_planning(), T0), LATER, force=True)
    assert model.cancel(forced, LATER + timedelta(minutes=1), force=True) is forced


def test_force_cancel_of_a_pending_run_is_refused() -> None:
    with pytest.raises(InvalidTransition, match="cannot force-cancel run .*: it is pending"):
        model.cancel(_pending(), LATER, force=True)


# ---- requeue --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "before",
    [
        pytest.param(_planning, id="planning"),
        pytest.param(_apply_pending, id="apply_pending"),
        pytest.param(_confirmed, id="apply_pending_confirmed"),
        pytest.param(lambda: _applying(Stage.RESTORING_PLAN), id="applying-restoring_plan"),
        pytest.param(lambda: _applying(Stage.PRE_APPLY), id="applying-pre_apply"),
        pytest.param(lambda: model.cancel(_applying(), T0), id="applying-cancel-requested"),
    ],
)
def test_requeue_forgets_the_plan_and_its_confirmation_and_notes_the_reason(
    before: Callable[[], Run],
) -> None:
    run = model.requeue(before(), LATER, reason="daemon stopped")
    assert (run.status, run.stage, run.status_changed_at) == (Status.PENDING, None, LATER)
    assert (run.has_changes, run.changes, run.plan_hash, run.planned_at, run.plan_expires_at) == (
        None,
        ResourceChanges(),
        None,
        None,
        None,
    )
    assert (run.confirmed_at, run.confirmed_by, run.apply_started_at) == (None, None, None)
    assert (run.cancel_requested_at, run.force_cancel_requested_at) == (None, None)
    assert run.warnings == ("re-planned: daemon stopped",)
    assert model.start_planning(run, LATER).status is Status.PLANNING


def test_requeue_keeps_earlier_warnings() -> None:
    run = model.requeue(model.add_warning(_planning(), "slow"), LATER, reason="stale plan")
    assert run.warnings == ("slow", "re-planned: stale plan")


@pytest.mark.parametrize("stage", [Stage.APPLYING, Stage.SAVING_STATE, Stage.POST_APPLY], ids=str)
def test_requeue_is_refused_once_terraform_may_have_applied(stage: Stage) -> None:
    with pytest.raises(InvalidTransition, match="terraform may have applied already"):
        model.requeue(_applying(stage), LATER, reason="daemon stopped")


def test_requeue_from_the_applying_stage_is_allowed_when_nothing_was_applied() -> None:
    run = model.requeue(_applying(Stage.APPLYING), LATER, reason="stale plan", nothing_applied=True)
    assert run.status is Status.PENDING


# ---- finish ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", sorted(set(Status) - TERMINAL), ids=str)
def test_finish_refuses_a_status_that_is_not_terminal(status: Status) -> None:
    with pytest.raises(InvalidTransition, match=f"as {status}: not a terminal status"):
        model.finish(_applying(), LATER, status)


def test_finish_records_the_outcome_and_clears_the_stage() -> None:
    run = model.finish(
        _applying(Stage.APPLYING),
        LATER,
        Status.FAILED,
        error_kind=ErrorKind.APPLY,
        error_message="boom",
    )
    assert (run.status, run.stage, run.finished_at, run.status_changed_at) == (
        Status.FAILED,
        None,
        LATER,
        LATER,
    )
    assert (run.error_kind, run.error_message) == (ErrorKind.APPLY, "boom")
    assert model.allowed_actions(run) == ()


@pytest.mark.parametrize("status", sorted(TERMINAL), ids=str)
def test_a_run_is_never_finished_twice(status: Status) -> None:
    with pytest.raises(InvalidTransition, match=f"already finished as {status}"):
        model.finish(_finished(status), LATER, Status.FAILED)


# ---- allowed_actions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("run", "actions"),
    [
        pytest.param(_pending(), ("cancel",), id="pending"),
        pytest.param(_planning(), ("cancel",), id="planning"),
        pytest.param(model.cancel(_planning(), T0), ("force-cancel",), id="planning-cancelling"),
        pytest.param(
            model.cancel(model.cancel(_planning(), T0), T0, force=True),
            (),
            id="planning-force-cancelling",
        ),
        pytest.param(_apply_pending(), ("confirm", "discard"), id="apply_pending"),
        pytest.param(_confirmed(), (), id="apply_pending-confirmed"),
        pytest.param(_applying(), ("cancel",), id="applying"),
        pytest.param(model.cancel(_applying(), T0), ("force-cancel",), id="applying-cancelling"),
        pytest.param(
            model.cancel(model.cancel(_applying(), T0), T0, force=True),
            (),
            id="applying-force-cancelling",
        ),
        *[pytest.param(_finished(s), (), id=str(s)) for s in sorted(TERMINAL)],
    ],
)
def test_allowed_actions_name_what_the_api_would_accept(run: Run, actions: tuple[str, ...]) -> None:
    assert tuple(model.allowed_actions(run)) == actions


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_allowed_actions_agree_with_the_transitions(variant: str) -> None:
    run = VARIANTS[variant]()
    by_name: dict[str, Callable[[Run], Run]] = {
        "cancel": ACTIONS["cancel"],
        "force-cancel": ACTIONS["force_cancel"],
        "confirm": ACTIONS["confirm"],
        "discard": ACTIONS["discard"],
    }
    for name, act in by_name.items():
        accepted = True
        try:
            changed = act(run)
        except InvalidTransition:
            accepted = False
        else:
            accepted = changed is not run  # an idempotent no-op is not a button to offer
        assert accepted == (name in model.allowed_actions(run)), name
