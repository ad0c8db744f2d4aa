"""Encryption at rest (tfward/store/sealing.py): state, state outputs and plan blobs are sealed
in the database file, bound to their purpose and key, and rows from before sealing (or from
before migration 0007 sealed the outputs) get sealed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from sqlalchemy import Connection, select, update

from tfward.runs.masking import SecretMask
from tfward.runs.model import Operation
from tfward.store import artifacts, states
from tfward.store import db as db_module
from tfward.store import runs as run_store
from tfward.store import workspaces as ws_store
from tfward.store.db import Store, sqlite_url
from tfward.store.sealing import Sealer, SealError, is_sealed, seal_plain_rows
from tfward.store.tables import metadata, plan_artifacts, state_versions

SECRET = "hunter2-very-secret-value"
UNMARKED = "echoed-from-env-s3cret"
KEY = bytes(range(32))


def state_doc(serial: int) -> bytes:
    doc = {
        "version": 4,
        "serial": serial,
        "lineage": "l-1",
        "outputs": {
            "password": {"value": SECRET, "type": "string", "sensitive": True},
            "name": {"value": "shown", "type": "string"},
            # Terraform was never told: only the workspace's secrets mask it.
            "echo": {"value": f"[{UNMARKED}]", "type": "string"},
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


def test_state_outputs_are_sealed_and_the_workspace_secrets_masked_before_they_are_stored(
    store: Store, db: Path
) -> None:
    ws_id = store.run_sync(lambda c: ws_store.sync_configured(c, ["demo"]))["demo"]
    parsed = states.parse_state(state_doc(1), SecretMask([UNMARKED]))
    version = store.run_sync(lambda c: states.store(c, ws_id, parsed, kind="apply", run_id=None))
    assert version is not None
    outputs = store.run_sync(lambda c: states.get(c, version.id)).outputs
    assert outputs["echo"]["value"] == "[***]" and outputs["password"]["value"] is None
    blob = store.run_sync(
        lambda c: c.execute(select(state_versions.c.outputs)).scalar_one()
    )
    assert is_sealed(blob) and b'"shown"' not in blob
    store.close()
    for path in db.parent.glob("tfward.db*"):
        data = path.read_bytes()
        assert UNMARKED.encode() not in data and b'"shown"' not in data, path.name
    # The state itself, sealed, still holds what terraform wrote.
    assert UNMARKED.encode() in store.run_sync(lambda c: states.get_raw(c, version.id))


def _alembic() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(db_module.__file__).with_name("migrations")))
    return cfg


def test_migration_0007_turns_plain_json_outputs_into_blobs_sealed_at_the_next_start(
    db: Path,
) -> None:
    """A database from before 0007: its JSON outputs are kept, as plain bytes, until the
    daemon (which has the key) seals them with `seal_plain_rows` at start."""
    old = Store(sqlite_url(db), sealer=Sealer(KEY))
    cfg = _alembic()
    with old.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004_run_requests")
    ws_id = old.run_sync(lambda c: ws_store.sync_configured(c, ["demo"]))["demo"]
    shown = {"name": {"value": "kept-across-the-migration", "type": "string"}}
    old.run_sync(lambda c: _insert_0004_state_version(c, ws_id, shown))
    old.migrate()
    blob = old.run_sync(lambda c: c.execute(select(state_versions.c.outputs)).scalar_one())
    assert not is_sealed(blob) and json.loads(blob) == shown
    assert old.run_sync(lambda c: states.current(c, ws_id)).outputs == shown  # type: ignore[union-attr]
    assert old.run_sync(seal_plain_rows) == 1
    blob = old.run_sync(lambda c: c.execute(select(state_versions.c.outputs)).scalar_one())
    assert is_sealed(blob)
    assert old.run_sync(lambda c: states.current(c, ws_id)).outputs == shown  # type: ignore[union-attr]
    old.close()
    assert b"kept-across-the-migration" not in db.read_bytes()


def test_migration_0007_leaves_the_state_versions_table_as_tables_py_has_it(store: Store) -> None:
    def diff(conn: Connection) -> list[object]:
        found = compare_metadata(MigrationContext.configure(conn), metadata)
        return [d for d in found if "state_versions" in repr(d)]

    assert store.run_sync(diff) == []


def _insert_0004_state_version(conn: Connection, ws_id: str, outputs: dict[str, Any]) -> None:
    """A row as schema 0004 had it (outputs a JSON column): written through a table of that
    shape, since tables.py describes the schema after 0007."""
    from sqlalchemy import JSON, Integer, LargeBinary, String, column, insert, table

    old_table = table(
        "state_versions",
        column("id", String), column("workspace_id", String), column("serial", Integer),
        column("lineage", String), column("sha256", String), column("state", LargeBinary),
        column("outputs", JSON), column("resource_count", Integer), column("kind", String),
        column("created_at", String),
    )  # fmt: skip
    conn.execute(
        insert(old_table).values(
            id="sv-old", workspace_id=ws_id, serial=1, lineage="l-1", sha256="0" * 64,
            state=state_doc(1), outputs=outputs, resource_count=0, kind="apply",
            created_at="2026-11-01T00:00:00.000000+00:00",
        )
    )  # fmt: skip
