"""State versions (tfward/store/states.py) on a real SQLite file: serial and lineage
rules, no-op re-uploads, and rollback."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tfward.errors import NotFound, StateRejected
from tfward.store import states
from tfward.store import workspaces as ws_store
from tfward.store.db import Store

LINEAGE = "0c8a6a3e-5d0a-4b7e-9d2e-1f1f1f1f1f1f"


@pytest.fixture
def ws(store: Store) -> dict[str, str]:
    return store.run_sync(lambda c: ws_store.sync_configured(c, ["demo", "other"]))


def state_doc(serial: int, *, lineage: str = LINEAGE, things: int = 1, **extra: Any) -> bytes:
    doc = {
        "version": 4,
        "terraform_version": "1.0.3",
        "serial": serial,
        "lineage": lineage,
        "outputs": {"count": {"value": things, "type": "number"}},
        "resources": [
            {
                "mode": "managed",
                "type": "demo_thing",
                "name": "a",
                "provider": "demo",
                "instances": [
                    {"index_key": i, "attributes": {"id": f"t{i}"}} for i in range(things)
                ],
            },
            {
                "mode": "data",
                "type": "demo_info",
                "name": "d",
                "provider": "demo",
                "instances": [{"attributes": {}}],
            },
        ],
        **extra,
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def put(store: Store, ws_id: str, raw: bytes, *, kind: str = "apply") -> states.StateVersion | None:
    return store.run_sync(
        lambda c: states.store(c, ws_id, states.parse_state(raw), kind=kind, run_id=None)
    )


def test_the_first_state_of_a_workspace_is_stored_as_current(
    store: Store, ws: dict[str, str]
) -> None:
    raw = state_doc(1, things=3)
    version = put(store, ws["demo"], raw)
    assert version is not None
    assert (version.serial, version.lineage, version.resource_count, version.kind) == (
        1,
        LINEAGE,
        3,
        "apply",
    )
    assert version.outputs == {"count": {"value": 3, "type": "number"}}
    assert store.run_sync(lambda c: states.current(c, ws["demo"])) == version
    assert store.run_sync(lambda c: states.current_raw(c, ws["demo"])) == raw
    assert store.run_sync(lambda c: states.get_raw(c, version.id)) == raw


def test_a_workspace_without_state_has_no_current_version(store: Store, ws: dict[str, str]) -> None:
    assert store.run_sync(lambda c: states.current(c, ws["demo"])) is None
    assert store.run_sync(lambda c: states.current_raw(c, ws["demo"])) is None


def test_storing_the_same_content_twice_is_a_no_op(store: Store, ws: dict[str, str]) -> None:
    first = put(store, ws["demo"], state_doc(1))
    assert put(store, ws["demo"], state_doc(1)) is None
    assert store.run_sync(lambda c: states.list_versions(c, ws["demo"])) == [first]


def test_a_newer_serial_of_the_same_lineage_becomes_current(
    store: Store, ws: dict[str, str]
) -> None:
    put(store, ws["demo"], state_doc(1))
    newer = put(store, ws["demo"], state_doc(5, things=2))
    assert newer is not None
    assert store.run_sync(lambda c: states.current(c, ws["demo"])) == newer
    assert [v.serial for v in store.run_sync(lambda c: states.list_versions(c, ws["demo"]))] == [
        5,
        1,
    ]


@pytest.mark.parametrize(
    ("serial", "things"),
    [pytest.param(2, 1, id="lower-serial"), pytest.param(3, 7, id="equal-serial-other-content")],
)
def test_a_serial_that_does_not_move_forward_is_refused(
    store: Store, ws: dict[str, str], serial: int, things: int
) -> None:
    put(store, ws["demo"], state_doc(3))
    with pytest.raises(
        StateRejected, match=f"state serial {serial} is not newer than the current serial 3"
    ):
        put(store, ws["demo"], state_doc(serial, things=things))
    assert store.run_sync(lambda c: states.current(c, ws["demo"])).serial == 3  # type: ignore[union-attr]


def test_a_state_of_another_lineage_is_refused(store: Store, ws: dict[str, str]) -> None:
    put(store, ws["demo"], state_doc(3))
    with pytest.raises(
        StateRejected, match=f"state lineage other-lineage differs from the workspace's {LINEAGE}"
    ):
        put(store, ws["demo"], state_doc(9, lineage="other-lineage"))


def test_workspaces_keep_their_states_apart(store: Store, ws: dict[str, str]) -> None:
    put(store, ws["demo"], state_doc(3))
    other = put(store, ws["other"], state_doc(1, lineage="other-lineage"))
    assert other is not None and other.workspace_id == ws["other"]
    assert store.run_sync(lambda c: states.current(c, ws["demo"])).serial == 3  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not json at all", id="not-json"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param(b"[1, 2]", id="a-json-list"),
        pytest.param(b"null", id="json-null"),
        pytest.param(b'{"lineage": "x"}', id="no-serial"),
        pytest.param(b'{"serial": 1}', id="no-lineage"),
        pytest.param(b'{"serial": "one", "lineage": "x"}', id="serial-not-a-number"),
    ],
)
def test_something_that_is_not_a_terraform_state_is_refused(raw: bytes) -> None:
    with pytest.raises(StateRejected, match="not a terraform state file"):
        states.parse_state(raw)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"serial": 1, "lineage": "x", "resources": {"a": 1}}', id="resources-a-map"),
        pytest.param(
            b'{"serial": 1, "lineage": "x", "resources": [1]}', id="resource-not-an-object"
        ),
        pytest.param(
            b'{"serial": 1, "lineage": "x", "resources": [{"mode": "managed", "instances": 3}]}',
            id="instances-not-a-list",
        ),
    ],
)
def test_a_json_document_with_malformed_resources_is_refused_as_not_a_state(raw: bytes) -> None:
    with pytest.raises(StateRejected):
        states.parse_state(raw)


def test_the_resource_count_counts_managed_instances_only() -> None:
    assert states.parse_state(state_doc(1, things=4)).resource_count == 4


# ---- rollback -------------------------------------------------------------------------------


def test_rollback_makes_a_new_current_version_with_the_old_content_and_the_next_serial(
    store: Store, ws: dict[str, str]
) -> None:
    first = put(store, ws["demo"], state_doc(1, things=1))
    put(store, ws["demo"], state_doc(4, things=2))
    put(store, ws["demo"], state_doc(7, things=3))
    assert first is not None

    rolled = store.run_sync(lambda c: states.rollback(c, ws["demo"], first.id))

    assert (rolled.serial, rolled.lineage, rolled.kind, rolled.rolled_back_from) == (
        8,
        LINEAGE,
        "rollback",
        first.id,
    )
    assert rolled.resource_count == 1 and rolled.outputs == first.outputs
    assert store.run_sync(lambda c: states.current(c, ws["demo"])) == rolled
    content = json.loads(store.run_sync(lambda c: states.current_raw(c, ws["demo"])))  # type: ignore[arg-type]
    assert content == {**json.loads(state_doc(1, things=1)), "serial": 8}
    # The old version itself is untouched.
    assert store.run_sync(lambda c: states.get_raw(c, first.id)) == state_doc(1, things=1)


def test_rollback_to_a_version_of_another_workspace_is_refused(
    store: Store, ws: dict[str, str]
) -> None:
    put(store, ws["demo"], state_doc(1))
    foreign = put(store, ws["other"], state_doc(1, lineage="other-lineage"))
    assert foreign is not None
    with pytest.raises(NotFound, match="does not belong to this workspace"):
        store.run_sync(lambda c: states.rollback(c, ws["demo"], foreign.id))
    assert [v.serial for v in store.run_sync(lambda c: states.list_versions(c, ws["demo"]))] == [1]


def test_rollback_to_an_unknown_version_is_refused(store: Store, ws: dict[str, str]) -> None:
    with pytest.raises(NotFound, match="state version sv-nope not found"):
        store.run_sync(lambda c: states.rollback(c, ws["demo"], "sv-nope"))


# ---- who wrote it, and the check before writing -----------------------------------------------


def test_a_state_posted_to_the_http_backend_records_its_kind_and_who_wrote_it(
    store: Store, ws: dict[str, str]
) -> None:
    version = store.run_sync(
        lambda c: states.store(
            c,
            ws["demo"],
            states.parse_state(state_doc(1)),
            kind=states.StateKind.HTTP_BACKEND,
            run_id=None,
            created_by="ops",
        )
    )
    assert version is not None
    assert (version.kind, version.created_by) == ("http-backend", "ops")
    assert store.run_sync(lambda c: states.current(c, ws["demo"])) == version


def test_the_check_before_storing_tells_the_current_content_from_a_refusal(
    store: Store, ws: dict[str, str]
) -> None:
    check = states.check
    assert store.run_sync(lambda c: check(c, ws["demo"], states.parse_state(state_doc(1)))) is None
    current = put(store, ws["demo"], state_doc(2))
    same = store.run_sync(lambda c: check(c, ws["demo"], states.parse_state(state_doc(2))))
    assert same == current
    with pytest.raises(StateRejected, match="not newer"):
        store.run_sync(lambda c: check(c, ws["demo"], states.parse_state(state_doc(1))))
    assert store.run_sync(lambda c: check(c, ws["demo"], states.parse_state(state_doc(3)))) is None


def test_a_rollback_records_who_asked_for_it(store: Store, ws: dict[str, str]) -> None:
    first = put(store, ws["demo"], state_doc(1))
    put(store, ws["demo"], state_doc(2, things=2))
    assert first is not None
    rolled = store.run_sync(lambda c: states.rollback(c, ws["demo"], first.id, created_by="root"))
    assert (rolled.kind, rolled.created_by) == ("rollback", "root")
