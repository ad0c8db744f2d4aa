"""Workspaces and their locks (tfward/store/workspaces.py) on a real SQLite file,
including the exact wording HCP clients match on."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection

from tfward.errors import NotFound, WorkspaceLocked
from tfward.runs.model import Operation
from tfward.store import runs as run_store
from tfward.store import workspaces as ws_store
from tfward.store.db import Store


@pytest.fixture
def ws_id(store: Store) -> str:
    return store.run_sync(lambda c: ws_store.sync_configured(c, ["demo"]))["demo"]


def new_run(store: Store, ws_id: str) -> str:
    return store.run_sync(
        lambda c: (
            run_store.create_run(
                c,
                workspace_id=ws_id,
                workspace_name="demo",
                operation=Operation.PLAN_AND_APPLY,
                auto_apply=False,
            ).id
        )
    )


@pytest.fixture
def run_a(store: Store, ws_id: str) -> str:
    return new_run(store, ws_id)


@pytest.fixture
def run_b(store: Store, ws_id: str) -> str:
    return new_run(store, ws_id)


def lock(
    store: Store,
    ws_id: str,
    *,
    run_id: str | None = None,
    by: str = "tfward",
    reason: str | None = None,
) -> ws_store.Lock:
    return store.run_sync(
        lambda c: ws_store.acquire_lock(c, ws_id, run_id=run_id, by=by, reason=reason)
    )


def holder(store: Store, ws_id: str) -> ws_store.Lock | None:
    return store.run_sync(lambda c: ws_store.get_lock(c, ws_id))


# ---- configured workspaces ------------------------------------------------------------------


def test_sync_creates_the_configured_workspaces_and_returns_their_ids(store: Store) -> None:
    ids = store.run_sync(lambda c: ws_store.sync_configured(c, ["b", "a"]))
    assert set(ids) == {"a", "b"} and all(i.startswith("ws-") for i in ids.values())
    assert store.run_sync(ws_store.list_workspaces) == [
        (ids["a"], "a", True),
        (ids["b"], "b", True),
    ]
    assert store.run_sync(lambda c: ws_store.workspace_id(c, "a")) == ids["a"]


def test_a_workspace_removed_from_the_config_keeps_its_row_and_id_when_it_comes_back(
    store: Store,
) -> None:
    first = store.run_sync(lambda c: ws_store.sync_configured(c, ["a", "b"]))
    assert store.run_sync(lambda c: ws_store.sync_configured(c, ["a"])) == {"a": first["a"]}
    assert store.run_sync(ws_store.list_workspaces) == [
        (first["a"], "a", True),
        (first["b"], "b", False),
    ]
    assert store.run_sync(lambda c: ws_store.sync_configured(c, ["a", "b"])) == first
    assert store.run_sync(ws_store.list_workspaces)[1] == (first["b"], "b", True)


def test_an_unknown_workspace_name_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="workspace 'nope' not found"):
        store.run_sync(lambda c: ws_store.workspace_id(c, "nope"))


# ---- acquiring ------------------------------------------------------------------------------


def test_an_unlocked_workspace_has_no_lock(store: Store, ws_id: str) -> None:
    assert holder(store, ws_id) is None


def test_a_run_takes_the_lock_and_taking_it_again_is_a_no_op(
    store: Store, ws_id: str, run_a: str
) -> None:
    first = lock(store, ws_id, run_id=run_a)
    assert lock(store, ws_id, run_id=run_a) == first
    assert holder(store, ws_id) == first
    assert first.run_id == run_a


def test_a_user_takes_the_lock_with_a_reason_and_taking_it_again_is_a_no_op(
    store: Store, ws_id: str
) -> None:
    first = lock(store, ws_id, by="alice", reason="freeze for the audit")
    assert lock(store, ws_id, by="alice", reason="another reason") == first
    assert holder(store, ws_id) == first
    assert (first.run_id, first.locked_by, first.reason) == (None, "alice", "freeze for the audit")


@pytest.mark.parametrize(
    ("first", "second", "wording"),
    [
        pytest.param(
            {"run_id": "A"},
            {"run_id": "B"},
            "The workspace is locked by Run {A}",
            id="run-blocked-by-another-run",
        ),
        pytest.param(
            {"run_id": "A"},
            {"by": "alice"},
            "The workspace is locked by Run {A}",
            id="user-blocked-by-a-run",
        ),
        pytest.param(
            {"by": "alice"},
            {"run_id": "A"},
            "The workspace is locked by User alice",
            id="run-blocked-by-a-user",
        ),
        pytest.param(
            {"by": "alice"},
            {"by": "bob"},
            "The workspace is locked by User alice",
            id="user-blocked-by-another-user",
        ),
    ],
)
def test_a_conflicting_lock_is_refused_with_the_hcp_wording(
    store: Store,
    ws_id: str,
    run_a: str,
    run_b: str,
    first: dict[str, str],
    second: dict[str, str],
    wording: str,
) -> None:
    runs = {"A": run_a, "B": run_b}
    held = lock(store, ws_id, **{k: runs.get(v, v) for k, v in first.items()})
    with pytest.raises(WorkspaceLocked) as refused:
        lock(store, ws_id, **{k: runs.get(v, v) for k, v in second.items()})
    assert str(refused.value) == wording.format(A=run_a)
    assert holder(store, ws_id) == held


def test_a_user_named_like_the_run_that_holds_the_lock_does_not_hold_it(
    store: Store, ws_id: str, run_a: str
) -> None:
    lock(store, ws_id, run_id=run_a, by="alice")
    with pytest.raises(WorkspaceLocked, match=f"^The workspace is locked by Run {run_a}$"):
        lock(store, ws_id, by="alice")


def test_locks_of_different_workspaces_are_independent(store: Store, run_a: str) -> None:
    ids = store.run_sync(lambda c: ws_store.sync_configured(c, ["demo", "other"]))
    lock(store, ids["demo"], run_id=run_a)
    assert lock(store, ids["other"], by="alice").locked_by == "alice"


# ---- releasing ------------------------------------------------------------------------------


def test_the_holding_run_releases_its_lock(store: Store, ws_id: str, run_a: str) -> None:
    lock(store, ws_id, run_id=run_a)
    assert store.run_sync(lambda c: ws_store.release_lock(c, ws_id, run_id=run_a)) is True
    assert holder(store, ws_id) is None


def test_the_holding_user_releases_their_lock(store: Store, ws_id: str) -> None:
    lock(store, ws_id, by="alice")
    assert store.run_sync(lambda c: ws_store.release_lock(c, ws_id, by="alice")) is True
    assert holder(store, ws_id) is None


def test_releasing_an_unlocked_workspace_reports_that_nothing_was_released(
    store: Store, ws_id: str
) -> None:
    assert store.run_sync(lambda c: ws_store.release_lock(c, ws_id, by="alice")) is False


@pytest.mark.parametrize(
    ("held_by", "released_by", "wording"),
    [
        pytest.param(
            {"run_id": "A"}, {"run_id": "B"}, "The workspace is locked by Run {A}", id="another-run"
        ),
        pytest.param(
            {"run_id": "A"},
            {"by": "alice"},
            "The workspace is locked by Run {A}",
            id="a-user-releasing-a-run-lock",
        ),
        pytest.param(
            {"by": "alice"},
            {"by": "bob"},
            "The workspace is locked by User alice",
            id="another-user",
        ),
        pytest.param(
            {"by": "alice"},
            {"run_id": "A"},
            "The workspace is locked by User alice",
            id="a-run-releasing-a-user-lock",
        ),
        pytest.param(
            {"by": "alice"}, {}, "The workspace is locked by User alice", id="nobody-in-particular"
        ),
    ],
)
def test_release_by_someone_who_does_not_hold_the_lock_is_refused(
    store: Store,
    ws_id: str,
    run_a: str,
    run_b: str,
    held_by: dict[str, str],
    released_by: dict[str, str],
    wording: str,
) -> None:
    runs = {"A": run_a, "B": run_b}
    held = lock(store, ws_id, **{k: runs.get(v, v) for k, v in held_by.items()})
    kwargs: dict[str, Any] = {k: runs.get(v, v) for k, v in released_by.items()}
    with pytest.raises(WorkspaceLocked) as refused:
        store.run_sync(lambda c: ws_store.release_lock(c, ws_id, **kwargs))
    assert str(refused.value) == (
        wording.format(A=run_a) + "; only its holder can unlock it (or force-unlock)"
    )
    assert holder(store, ws_id) == held


@pytest.mark.parametrize(
    "held_by", [pytest.param("run", id="run-lock"), pytest.param("user", id="user-lock")]
)
def test_force_release_removes_whatever_holds_the_lock(
    store: Store, ws_id: str, run_a: str, held_by: str
) -> None:
    lock(store, ws_id, **({"run_id": run_a} if held_by == "run" else {"by": "alice"}))
    assert store.run_sync(lambda c: ws_store.release_lock(c, ws_id, by="bob", force=True)) is True
    assert holder(store, ws_id) is None
    assert lock(store, ws_id, by="bob").locked_by == "bob"


def test_a_lock_taken_inside_a_larger_transaction_is_kept_when_that_transaction_commits(
    store: Store, ws_id: str, run_a: str
) -> None:
    # acquire_lock uses a savepoint; the caller's transaction decides.
    def tx(conn: Connection) -> None:
        ws_store.acquire_lock(conn, ws_id, run_id=run_a, by="tfward")
        with pytest.raises(WorkspaceLocked):
            ws_store.acquire_lock(conn, ws_id, run_id=None, by="alice")

    store.run_sync(tx)
    assert holder(store, ws_id).run_id == run_a  # type: ignore[union-attr]


# ---- terraform's lock (the http backend) ----------------------------------------------------

TF_A = ws_store.LockInfo("id-a", "OperationTypeApply", "ops@host", "")
TF_B = ws_store.LockInfo("id-b", "OperationTypePlan", "ops@host", "")


def tf_lock(store: Store, ws_id: str, info: ws_store.LockInfo, by: str = "ops") -> ws_store.Lock:
    return store.run_sync(
        lambda c: ws_store.acquire_lock(c, ws_id, run_id=None, by=by, terraform=info)
    )


def test_a_terraform_lock_is_a_user_lock_that_keeps_its_lock_id_and_info(
    store: Store, ws_id: str
) -> None:
    taken = tf_lock(store, ws_id, TF_A)
    assert holder(store, ws_id) == taken
    assert (taken.run_id, taken.locked_by, taken.terraform) == (None, "ops", TF_A)
    assert taken.describe() == "The workspace is locked by User ops"
    assert tf_lock(store, ws_id, TF_A) == taken  # the same lock ID again: a no-op


def test_a_second_terraform_of_the_same_user_is_refused_the_lock(store: Store, ws_id: str) -> None:
    tf_lock(store, ws_id, TF_A)
    with pytest.raises(WorkspaceLocked, match="^The workspace is locked by User ops$"):
        tf_lock(store, ws_id, TF_B)
    # ...and so is terraform, when the user holds a lock taken without it.
    store.run_sync(lambda c: ws_store.release_lock(c, ws_id, lock_id="id-a"))
    lock(store, ws_id, by="ops")
    with pytest.raises(WorkspaceLocked):
        tf_lock(store, ws_id, TF_A)


def test_only_the_lock_id_releases_a_terraform_lock(store: Store, ws_id: str) -> None:
    tf_lock(store, ws_id, TF_A)
    with pytest.raises(WorkspaceLocked, match="only its holder can unlock it"):
        store.run_sync(lambda c: ws_store.release_lock(c, ws_id, lock_id="id-b"))
    assert store.run_sync(lambda c: ws_store.release_lock(c, ws_id, lock_id="id-a")) is True
    assert holder(store, ws_id) is None


@pytest.mark.parametrize(
    ("held", "writer", "refusal"),
    [
        pytest.param(None, None, None, id="unlocked-without-an-id"),
        pytest.param("terraform", "id-a", None, id="the-holders-lock-id"),
        pytest.param("terraform", None, "only the holder may write", id="locked-without-an-id"),
        pytest.param("terraform", "id-b", "only the holder may write", id="another-lock-id"),
        pytest.param("user", None, "no terraform lock ID: unlock it first", id="a-user-lock"),
        pytest.param("run", "id-a", "locked by Run", id="a-run-lock"),
        pytest.param(None, "id-a", "not locked under lock ID id-a", id="a-lock-gone-since"),
    ],
)
def test_who_may_write_the_state_while_the_workspace_is_locked_or_not(
    store: Store, ws_id: str, run_a: str, held: str | None, writer: str | None, refusal: str | None
) -> None:
    if held == "terraform":
        tf_lock(store, ws_id, TF_A)
    elif held == "user":
        lock(store, ws_id, by="ops")
    elif held == "run":
        lock(store, ws_id, run_id=run_a)
    if refusal is None:
        store.run_sync(lambda c: ws_store.check_writer(c, ws_id, writer))
        return
    with pytest.raises(WorkspaceLocked, match=refusal):
        store.run_sync(lambda c: ws_store.check_writer(c, ws_id, writer))
