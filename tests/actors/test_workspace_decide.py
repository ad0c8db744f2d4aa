"""The workspace actor's pure decision (`decide` and `_resume` in tfward/actors/workspace.py):
which run starts when, and which run gets which signal."""

from __future__ import annotations

import pytest

from tfward.actors.handle import Decision
from tfward.actors.workspace import (
    RETIRED,
    Action,
    ActorState,
    Cancel,
    Decide,
    Effect,
    FinishQueued,
    LockChanged,
    Message,
    Retire,
    RunEnded,
    Signal,
    Start,
    Stop,
    Submitted,
    _resume,
    decide,
)


def replay(state: ActorState, *messages: Message) -> tuple[ActorState, list[list[Effect]]]:
    """Feed messages one by one; return the final state and the effects of each message."""
    effects: list[list[Effect]] = []
    for msg in messages:
        state, out = decide(state, msg)
        effects.append(out)
    return state, effects


BUSY = ActorState(queue=("run-b", "run-c"), active="run-a", speculative=frozenset({"run-s"}))


# One message, one state: what the actor decides. (state before, message, state after, effects)
DECISIONS = [
    pytest.param(
        ActorState(),
        Submitted("run-a", False),
        ActorState(active="run-a"),
        [Start("run-a", False)],
        id="a-run-submitted-to-an-idle-workspace-starts-at-once",
    ),
    pytest.param(
        ActorState(active="run-a"),
        Submitted("run-b", False),
        ActorState(queue=("run-b",), active="run-a"),
        [],
        id="a-run-submitted-while-another-is-active-waits",
    ),
    pytest.param(
        ActorState(queue=("run-b",), active="run-a"),
        Submitted("run-c", False),
        ActorState(queue=("run-b", "run-c"), active="run-a"),
        [],
        id="a-later-run-queues-behind-earlier-ones",
    ),
    pytest.param(
        ActorState(queue=("run-b",), active="run-a"),
        Submitted("run-s", True),
        ActorState(queue=("run-b",), active="run-a", speculative=frozenset({"run-s"})),
        [Start("run-s", True)],
        id="a-speculative-run-starts-at-once-even-when-the-workspace-is-busy",
    ),
    pytest.param(
        ActorState(user_locked=True),
        Submitted("run-s", True),
        ActorState(user_locked=True, speculative=frozenset({"run-s"})),
        [Start("run-s", True)],
        id="a-speculative-run-starts-even-when-a-user-locked-the-workspace",
    ),
    pytest.param(
        ActorState(user_locked=True),
        Submitted("run-a", False),
        ActorState(queue=("run-a",), user_locked=True),
        [],
        id="a-user-lock-keeps-a-submitted-run-waiting",
    ),
    pytest.param(
        BUSY,
        RunEnded("run-a", False),
        ActorState(queue=("run-c",), active="run-b", speculative=frozenset({"run-s"})),
        [Start("run-b", False)],
        id="a-run-that-ends-lets-the-next-in-line-start",
    ),
    pytest.param(
        BUSY,
        RunEnded("run-a", True),
        ActorState(queue=("run-b", "run-c"), active="run-a", speculative=frozenset({"run-s"})),
        [Start("run-a", False)],
        id="a-requeued-run-goes-back-to-the-head-and-starts-again-first",
    ),
    pytest.param(
        ActorState(queue=("run-b",), active="run-a", user_locked=True),
        RunEnded("run-a", True),
        ActorState(queue=("run-a", "run-b"), user_locked=True),
        [],
        id="a-requeued-run-waits-at-the-head-while-a-user-holds-the-lock",
    ),
    pytest.param(
        BUSY,
        RunEnded("run-s", False),
        ActorState(queue=("run-b", "run-c"), active="run-a"),
        [],
        id="a-speculative-run-that-ends-starts-nothing-because-it-held-no-slot",
    ),
    pytest.param(
        BUSY, RunEnded("run-zzz", False), BUSY, [], id="the-end-of-an-unknown-run-changes-nothing"
    ),
    pytest.param(
        BUSY,
        Cancel("run-c"),
        ActorState(queue=("run-b",), active="run-a", speculative=frozenset({"run-s"})),
        [FinishQueued("run-c")],
        id="cancel-of-a-queued-run-finishes-it-and-takes-it-out-of-the-queue",
    ),
    pytest.param(
        BUSY,
        Cancel("run-c", force=True),
        ActorState(queue=("run-b",), active="run-a", speculative=frozenset({"run-s"})),
        [FinishQueued("run-c")],
        id="force-cancel-of-a-queued-run-also-finishes-it",
    ),
    pytest.param(
        ActorState(queue=("run-a", "run-b"), user_locked=True),
        Cancel("run-a"),
        ActorState(queue=("run-b",), user_locked=True),
        [FinishQueued("run-a")],
        id="cancel-of-the-head-while-locked-starts-nothing",
    ),
    pytest.param(
        BUSY,
        Cancel("run-a"),
        BUSY,
        [Signal("run-a", Action.CANCEL)],
        id="cancel-of-the-active-run-signals-it",
    ),
    pytest.param(
        BUSY,
        Cancel("run-a", force=True),
        BUSY,
        [Signal("run-a", Action.FORCE_CANCEL)],
        id="force-cancel-of-the-active-run-signals-it",
    ),
    pytest.param(
        BUSY,
        Cancel("run-s"),
        BUSY,
        [Signal("run-s", Action.CANCEL)],
        id="cancel-of-a-speculative-run-signals-it",
    ),
    pytest.param(BUSY, Cancel("run-zzz"), BUSY, [], id="cancel-of-an-unknown-run-does-nothing"),
    pytest.param(
        BUSY,
        Decide("run-a", Decision.CONFIRM),
        BUSY,
        [Signal("run-a", Action.CONFIRM)],
        id="confirm-of-the-active-run-signals-it",
    ),
    pytest.param(
        BUSY,
        Decide("run-a", Decision.DISCARD, "not today"),
        BUSY,
        [Signal("run-a", Action.DISCARD, "not today")],
        id="discard-of-the-active-run-signals-it-with-the-reason",
    ),
    pytest.param(
        BUSY,
        Decide("run-b", Decision.CONFIRM),
        BUSY,
        [],
        id="confirm-of-a-run-still-in-the-queue-does-nothing",
    ),
    pytest.param(
        BUSY,
        LockChanged(True),
        ActorState(
            queue=("run-b", "run-c"),
            active="run-a",
            speculative=frozenset({"run-s"}),
            user_locked=True,
        ),
        [],
        id="a-user-lock-leaves-the-active-run-alone",
    ),
    pytest.param(
        ActorState(queue=("run-a", "run-b"), user_locked=True),
        LockChanged(False),
        ActorState(queue=("run-b",), active="run-a"),
        [Start("run-a", False)],
        id="unlocking-releases-the-queue-head",
    ),
    pytest.param(
        BUSY,
        Stop(drain=True),
        ActorState(
            queue=("run-b", "run-c"),
            active="run-a",
            speculative=frozenset({"run-s"}),
            stopping=True,
        ),
        [Signal("run-a", Action.DRAIN), Signal("run-s", Action.DRAIN)],
        id="stop-with-drain-signals-drain-to-every-running-run",
    ),
    pytest.param(
        BUSY,
        Stop(drain=False),
        ActorState(
            queue=("run-b", "run-c"),
            active="run-a",
            speculative=frozenset({"run-s"}),
            stopping=True,
        ),
        [Signal("run-a", Action.SHUTDOWN), Signal("run-s", Action.SHUTDOWN)],
        id="stop-without-drain-signals-shutdown-to-every-running-run",
    ),
    pytest.param(
        ActorState(queue=("run-a",), user_locked=True),
        Stop(),
        ActorState(queue=("run-a",), user_locked=True, stopping=True),
        [],
        id="stop-of-an-actor-with-nothing-running-signals-nothing",
    ),
]


@pytest.mark.parametrize(("before", "message", "after", "effects"), DECISIONS)
def test_the_actor_decides_what_to_start_and_which_run_to_signal(
    before: ActorState, message: Message, after: ActorState, effects: list[Effect]
) -> None:
    assert decide(before, message) == (after, effects)


# ---- sequences ------------------------------------------------------------------------------


def test_non_speculative_runs_start_one_at_a_time_in_submission_order() -> None:
    state, _ = replay(ActorState(), *(Submitted(f"run-{i}", False) for i in range(4)))
    started = []
    for _ in range(4):
        started.append(state.active)
        assert state.active is not None
        state, _ = decide(state, RunEnded(state.active, False))
    assert started == ["run-0", "run-1", "run-2", "run-3"]
    assert state == ActorState()


def test_speculative_runs_never_take_the_slot_of_the_queue() -> None:
    state, effects = replay(
        ActorState(),
        Submitted("run-s1", True),
        Submitted("run-a", False),
        Submitted("run-s2", True),
        Submitted("run-b", False),
    )
    assert effects == [
        [Start("run-s1", True)],
        [Start("run-a", False)],
        [Start("run-s2", True)],
        [],
    ]
    assert (state.active, state.queue, state.speculative) == (
        "run-a",
        ("run-b",),
        frozenset({"run-s1", "run-s2"}),
    )


def test_a_user_lock_blocks_starting_until_unlocked_then_the_queue_drains_in_order() -> None:
    state, effects = replay(
        ActorState(),
        LockChanged(True),
        Submitted("run-a", False),
        Submitted("run-b", False),
        LockChanged(False),
        RunEnded("run-a", False),
        RunEnded("run-b", False),
    )
    assert effects == [[], [], [], [Start("run-a", False)], [Start("run-b", False)], []]
    assert state == ActorState()


def test_after_stop_nothing_starts_any_more() -> None:
    state, effects = replay(
        BUSY,
        Stop(),
        Submitted("run-d", False),
        Submitted("run-s2", True),
        RunEnded("run-a", False),
        LockChanged(False),
    )
    assert effects[1:] == [[], [], [], []]
    assert state.active is None
    assert "run-s2" not in state.speculative


def test_a_run_requeued_during_stop_is_not_put_back_in_the_queue() -> None:
    state, effects = replay(
        ActorState(queue=("run-b",), active="run-a"), Stop(), RunEnded("run-a", True)
    )
    assert effects == [[Signal("run-a", Action.DRAIN)], []]
    assert (state.queue, state.active) == (("run-b",), None)


@pytest.mark.parametrize(
    ("state", "done"),
    [
        pytest.param(ActorState(), False, id="idle-and-not-stopping"),
        pytest.param(ActorState(stopping=True), True, id="stopping-with-nothing-running"),
        pytest.param(
            ActorState(queue=("run-a",), stopping=True), True, id="stopping-with-runs-still-queued"
        ),
        pytest.param(
            ActorState(active="run-a", stopping=True), False, id="stopping-with-an-active-run"
        ),
        pytest.param(
            ActorState(speculative=frozenset({"run-s"}), stopping=True),
            False,
            id="stopping-with-a-speculative-run",
        ),
    ],
)
def test_the_actor_is_done_only_when_stopping_and_nothing_runs(
    state: ActorState, done: bool
) -> None:
    assert state.done is done


def test_the_actor_becomes_done_when_the_last_running_run_ends_after_stop() -> None:
    state, _ = replay(BUSY, Stop())
    state, _ = decide(state, RunEnded("run-a", False))
    assert not state.done
    state, _ = decide(state, RunEnded("run-s", False))
    assert state.done


# ---- retiring (the workspace was removed from the config) ------------------------------------

RETIRING = ActorState(
    active="run-a", speculative=frozenset({"run-s"}), stopping=True, retiring=True
)


@pytest.mark.parametrize(
    ("before", "message", "after", "effects"),
    [
        pytest.param(
            BUSY,
            Retire(),
            RETIRING,
            [FinishQueued("run-b", RETIRED), FinishQueued("run-c", RETIRED)],
            id="retire-cancels-the-queued-runs-and-lets-the-running-ones-finish",
        ),
        pytest.param(
            RETIRING,
            Submitted("run-d", False),
            RETIRING,
            [FinishQueued("run-d", RETIRED)],
            id="a-run-submitted-to-a-retiring-workspace-is-cancelled",
        ),
        pytest.param(
            RETIRING,
            Submitted("run-s2", True),
            RETIRING,
            [FinishQueued("run-s2", RETIRED)],
            id="a-speculative-run-submitted-to-a-retiring-workspace-is-cancelled",
        ),
        pytest.param(
            RETIRING,
            Cancel("run-a"),
            RETIRING,
            [Signal("run-a", Action.CANCEL)],
            id="the-active-run-of-a-retiring-workspace-can-still-be-cancelled",
        ),
        pytest.param(
            RETIRING,
            RunEnded("run-a", False),
            ActorState(speculative=frozenset({"run-s"}), stopping=True, retiring=True),
            [],
            id="nothing-starts-after-the-active-run-of-a-retiring-workspace-ends",
        ),
        pytest.param(
            RETIRING,
            RunEnded("run-a", True),
            ActorState(speculative=frozenset({"run-s"}), stopping=True, retiring=True),
            [FinishQueued("run-a", RETIRED)],
            id="a-run-requeued-while-the-workspace-retires-is-cancelled-like-the-queued-ones",
        ),
    ],
)
def test_a_retiring_workspace_cancels_what_waits_and_lets_what_runs_finish(
    before: ActorState, message: Message, after: ActorState, effects: list[Effect]
) -> None:
    assert decide(before, message) == (after, effects)


def test_a_retiring_workspace_is_done_once_its_running_runs_end() -> None:
    state, _ = replay(BUSY, Retire(), RunEnded("run-a", False))
    assert not state.done
    state, _ = decide(state, RunEnded("run-s", False))
    assert state.done


# ---- _resume --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "after", "effects"),
    [
        pytest.param(ActorState(), ActorState(), [], id="nothing-left-over-starts-nothing"),
        pytest.param(
            ActorState(queue=("run-a", "run-b"), speculative=frozenset({"run-s2", "run-s1"})),
            ActorState(
                queue=("run-b",), active="run-a", speculative=frozenset({"run-s1", "run-s2"})
            ),
            [Start("run-s1", True), Start("run-s2", True), Start("run-a", False)],
            id="speculative-runs-start-then-the-queue-head",
        ),
        pytest.param(
            ActorState(queue=("run-a",), speculative=frozenset({"run-s"}), user_locked=True),
            ActorState(queue=("run-a",), speculative=frozenset({"run-s"}), user_locked=True),
            [Start("run-s", True)],
            id="a-user-lock-holds-the-queue-but-not-speculative-runs",
        ),
    ],
)
def test_resume_starts_what_was_left_pending(
    state: ActorState, after: ActorState, effects: list[Effect]
) -> None:
    assert _resume(state) == (after, effects)
