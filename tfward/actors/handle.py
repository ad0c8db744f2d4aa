"""The workspace actor's grip on a running run: stop it (cancel, force-cancel, shutdown) and
hand it a decision (confirm, discard). Shared by the actor, the pipeline and recovery."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import trio

from .terraform import StopControl


class StopReason(enum.StrEnum):
    """Why a run's cancel scope was cancelled."""

    CANCEL = "cancel"  # a user (or a release) cancelled it; force-cancel sets `control.force`
    SHUTDOWN = "shutdown"  # the daemon is stopping


class Decision(enum.StrEnum):
    """What a person decided about a run waiting in `apply_pending`."""

    CONFIRM = "confirm"
    DISCARD = "discard"


class Phase(enum.StrEnum):
    """Where the pipeline is, as the workspace actor and shutdown need to know it."""

    PENDING = "pending"  # not started planning yet
    PLANNING = "planning"
    WAITING = "waiting"  # apply_pending: waiting for confirm, discard or plan expiry
    APPLYING = "applying"


@dataclass
class RunHandle:
    """The workspace actor's grip on a run task: how to stop it and how to tell it a decision."""

    run_id: str
    speculative: bool
    grace: float
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    stop_reason: StopReason | None = None
    control: StopControl = field(init=False)
    decided: trio.Event = field(default_factory=trio.Event)
    decision: Decision | None = None
    decision_reason: str | None = None

    def __post_init__(self) -> None:
        self.control = StopControl(self.grace)

    def cancel(self, *, force: bool) -> None:
        if self.stop_reason is None:
            self.stop_reason = StopReason.CANCEL
        if force:
            self.control.force.set()
        self.scope.cancel()

    def shutdown(self) -> None:
        if self.stop_reason is None:
            self.stop_reason = StopReason.SHUTDOWN
        self.scope.cancel()

    def decide(self, decision: Decision, reason: str | None = None) -> None:
        if self.decision is None:
            self.decision, self.decision_reason = decision, reason
            self.decided.set()
