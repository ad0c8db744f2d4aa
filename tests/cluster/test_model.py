"""The lease loop's decision (cluster/model.py), table-tested without a database or a clock:
who is live, each daemon's fair share, what it renews, takes and gives back (only idle
workspaces: drain), and that daemons prefer different workspaces."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tfward.cluster.model import Lease, Node, Plan, View, decide, fair_share, hold, live_nodes

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TTL = 15.0
WS = tuple(f"ws{i:02d}" for i in range(6))


def node(node_id: str, age: float = 0, left: bool = False) -> Node:
    beat = T0 - timedelta(seconds=age)
    return Node(node_id, "host", f"/data/{node_id}", beat, beat, left_at=T0 if left else None)


def lease(ws: str, owner: str | None, expires_in: float = 10, epoch: int = 1) -> Lease:
    return Lease(ws, owner, epoch, None if owner is None else T0 + timedelta(seconds=expires_in))


def view(nodes: list[Node], leases: list[Lease], workspaces: tuple[str, ...] = WS) -> View:
    return View(T0, tuple(nodes), {le.workspace_id: le for le in leases}, workspaces)


@pytest.mark.parametrize(
    ("workspaces", "live", "share"),
    [(20, 3, 7), (20, 1, 20), (6, 3, 2), (0, 2, 0), (5, 0, 5)],
)
def test_the_fair_share_is_the_workspaces_over_the_live_daemons_rounded_up(
    workspaces: int, live: int, share: int
) -> None:
    assert fair_share(workspaces, live) == share


def test_a_daemon_is_live_while_its_heartbeat_is_younger_than_the_ttl_and_it_has_not_left() -> None:
    nodes = [node("a"), node("b", age=TTL + 1), node("c", left=True), node("d", age=TTL - 1)]
    seen = view(nodes, [])
    assert live_nodes(seen, "me", TTL) == ("a", "d", "me")


def test_a_daemon_alone_takes_every_workspace() -> None:
    plan = decide(view([node("a")], []), "a", TTL)
    assert sorted(plan.take) == list(WS) and plan.renew == () and plan.release == ()


def test_a_daemon_takes_only_up_to_its_share_and_renews_what_it_owns() -> None:
    seen = view([node("a"), node("b"), node("c")], [lease("ws00", "a")])
    plan = decide(seen, "a", TTL)
    assert plan.renew == ("ws00",) and len(plan.take) == 1 and "ws00" not in plan.take


def test_leases_of_live_daemons_are_never_taken_but_expired_and_released_ones_are() -> None:
    seen = view(
        [node("a"), node("b")],
        [
            lease("ws00", "b"), lease("ws01", "b"),
            lease("ws02", "dead", expires_in=-1), lease("ws03", None),
        ],
    )  # fmt: skip
    plan = decide(seen, "a", TTL)
    assert set(plan.take) <= {"ws02", "ws03", "ws04", "ws05"} and len(plan.take) == 3
    assert not {"ws00", "ws01"} & set(plan.take)


def test_when_a_daemon_joins_the_others_give_back_idle_workspaces_beyond_their_share() -> None:
    seen = view([node("a"), node("b")], [lease(ws, "a") for ws in WS])
    plan = decide(seen, "a", TTL)
    assert len(plan.release) == 3 and len(plan.renew) == 3 and plan.take == ()
    assert set(plan.release) | set(plan.renew) == set(WS)


def test_a_workspace_with_a_run_in_flight_is_never_given_back() -> None:
    seen = view([node("a"), node("b")], [lease(ws, "a") for ws in WS])
    busy = frozenset({"ws00", "ws01", "ws02", "ws03", "ws04"})
    plan = decide(seen, "a", TTL, busy)
    assert plan.release == ("ws05",) and set(plan.renew) == busy


def test_when_a_daemon_dies_the_survivors_take_its_expired_leases_between_them() -> None:
    leases = [lease(ws, "a") for ws in WS[:3]] + [lease(ws, "dead", -1) for ws in WS[3:]]
    seen = view([node("a"), node("b"), node("dead", age=TTL + 5)], leases)
    assert decide(seen, "a", TTL) == Plan(renew=WS[:3])  # a has its share (3 of 6 over 2)
    assert sorted(decide(seen, "b", TTL).take) == list(WS[3:])


def test_two_daemons_starting_together_prefer_different_workspaces() -> None:
    many = tuple(f"ws{i:02d}" for i in range(20))
    seen = view([node("a"), node("b")], [], many)
    a, b = decide(seen, "a", TTL).take, decide(seen, "b", TTL).take
    assert len(a) == len(b) == 10
    assert len(set(a) & set(b)) < 10  # rendezvous order: not the same ten


def test_workspaces_no_longer_configured_are_neither_renewed_nor_taken() -> None:
    seen = view([node("a")], [lease("gone", "a"), lease("ws00", "a")], ("ws00",))
    assert decide(seen, "a", TTL) == Plan(renew=("ws00",))


def test_while_recovering_at_start_a_daemon_renews_what_it_owns_and_takes_nothing() -> None:
    seen = view([node("a")], [lease("ws00", "a"), lease("ws01", "b")])
    assert hold(seen, "a") == Plan(renew=("ws00",))
