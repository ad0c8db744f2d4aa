"""Encryption at rest (tfward/store/sealing.py): state and plan blobs are sealed in the
database file, bound to their purpose and key, and rows from before sealing get sealed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from tfward.runs.model import Operation
from tfward.store import artifacts, states
from tfward.store import runs as run_store
from tfward.store import workspaces as ws_store
from tfward.store.db import Store, sqlite_url
from tfward.store.sealing import Sealer, SealError, is_sealed, seal_plain_rows
from tfward.store.tables import plan_artifacts, state_versions

SECRET = "hunter2-very-secret-value"
KEY = bytes(range(32))


def state_doc(serial: int) -> bytes:
    doc = {
        "version": 4,
        "serial": serial,
        "lineage": "l-1",
        "outputs": {
            "password": {"value": SECRET, "type": "string", "sensitive": True},
            "name": {"value": "shown", "type": "string"},
        },
        "resources": [],
    }
    return json.dumps(doc).encode()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "tfward.db"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    store = Store(sqlite_url(db), sealer=Sealer(KEY))
    store.migrate()
    yield store
    store.close()


def keep(store: Store, serial: int) -> tuple[str, str]:
    ws_id = store.run_sync(lambda c: ws_store.sync_configured(c, ["demo"]))["demo"]
    version = store.run_sync(
        lambda c: states.store(c, ws_id, states.parse_state(state_doc(serial)), kind="apply",
                               run_id=None)
    )  # fmt: skip
    assert version is not None
    return ws_id, version.id


def test_a_sealed_blob_opens_only_for_its_purpose_and_key() -> None:
    sealer = Sealer(KEY)
    blob = sealer.seal(b"plan bytes", "plan_file")
    assert is_sealed(blob) and b"plan bytes" not in blob
    assert sealer.open(blob, "plan_file") == b"plan bytes"
    with pytest.raises(SealError):
        sealer.open(blob, "state")
    with pytest.raises(SealError, match="secret key"):
        Sealer(bytes(32)).open(blob, "plan_file")


def test_state_and_plan_are_sealed_in_the_database_file_and_read_back_plain(
    store: Store, db: Path
) -> None:
    ws_id, sv_id = keep(store, 1)
    run = store.run_sync(
        lambda c: run_store.create_run(
            c, workspace_id=ws_id, workspace_name="demo", operation=Operation.PLAN,
            auto_apply=False, message="", targets=[], replace=[],
        )
    )  # fmt: skip
    plan_json = json.dumps({"variables": {"password": {"value": SECRET}}}).encode()
    store.run_sync(lambda c: artifacts.put_plan(c, run.id, b"PK" + SECRET.encode(), plan_json))
    store.close()

    assert SECRET.encode() not in db.read_bytes()
    assert store.run_sync(lambda c: states.get_raw(c, sv_id)) == state_doc(1)
    assert store.run_sync(lambda c: artifacts.get_plan_json(c, run.id)) == plan_json
    plan = store.run_sync(lambda c: artifacts.get_plan_file(c, run.id))
    assert plan is not None and plan[0] == b"PK" + SECRET.encode()
    # The shown outputs never held the sensitive value.
    shown = store.run_sync(lambda c: states.get(c, sv_id)).outputs
    assert shown["password"]["value"] is None and shown["name"]["value"] == "shown"


def test_without_the_key_a_sealed_state_does_not_open(store: Store, db: Path) -> None:
    _, sv_id = keep(store, 1)
    keyless = Store(sqlite_url(db))
    with pytest.raises(SealError):
        keyless.run_sync(lambda c: states.get_raw(c, sv_id))
    keyless.close()


def test_a_damaged_sealed_plan_is_a_corrupt_plan_not_an_error(store: Store) -> None:
    ws_id, _ = keep(store, 1)
    run = store.run_sync(
        lambda c: run_store.create_run(
            c, workspace_id=ws_id, workspace_name="demo", operation=Operation.PLAN,
            auto_apply=False, message="", targets=[], replace=[],
        )
    )  # fmt: skip
    plan_hash = store.run_sync(lambda c: artifacts.put_plan(c, run.id, b"PK plan", b"{}"))
    sealed = Sealer(KEY).seal(b"PK plan", "plan_file")
    damaged = sealed[:-1] + bytes([sealed[-1] ^ 1])
    store.run_sync(
        lambda c: c.execute(
            update(plan_artifacts).where(plan_artifacts.c.run_id == run.id).values(
                plan_file=damaged)
        )
    )  # fmt: skip
    problem = store.run_sync(lambda c: artifacts.plan_problem(c, run.id, plan_hash, None, None))
    assert problem == artifacts.PLAN_CORRUPT


def test_rows_written_before_sealing_are_sealed_at_start_and_read_the_same(
    store: Store, db: Path
) -> None:
    _, sv_id = keep(store, 1)
    store.run_sync(
        lambda c: c.execute(
            update(state_versions).where(state_versions.c.id == sv_id).values(state=state_doc(1))
        )
    )
    assert store.run_sync(lambda c: states.get_raw(c, sv_id)) == state_doc(1)  # plain reads
    assert store.run_sync(seal_plain_rows) == 1
    assert store.run_sync(seal_plain_rows) == 0
    store.close()
    assert SECRET.encode() not in db.read_bytes()
    assert store.run_sync(lambda c: states.get_raw(c, sv_id)) == state_doc(1)
