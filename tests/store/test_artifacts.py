"""Run artifacts (tfward/store/artifacts.py) on a real database (SQLite, or PostgreSQL under
TFWARD_TEST_DATABASE=postgresql): configuration snapshots, plans and their JSON, run logs read
by byte offset; and, on SQLite, migration 0011_events, which gives the chunks stored before it
their offsets."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from sqlalchemy import Connection, Integer, LargeBinary, String, column, insert, select, table

from tfward.errors import NotFound, PlanUnusable
from tfward.runs.model import Operation
from tfward.store import artifacts
from tfward.store import db as db_module
from tfward.store import runs as run_store
from tfward.store import workspaces as ws_store
from tfward.store.db import Store, sqlite_url
from tfward.store.sealing import Sealer
from tfward.store.tables import metadata, plan_artifacts


def _run(conn: Connection) -> str:
    ws_id = ws_store.sync_configured(conn, ["demo"])["demo"]
    return run_store.create_run(
        conn, workspace_id=ws_id, workspace_name="demo", operation=Operation.PLAN, auto_apply=False
    ).id


CHUNKS = [b"one\ntwo\n", b"three\n", b"four\nfive\nsix\n"]
LOG = b"".join(CHUNKS)


def test_a_log_read_from_any_line_gives_the_rest_of_it_from_there(store: Store) -> None:
    run_id = store.run_sync(_run)
    store.run_sync(lambda c: artifacts.append_log(c, run_id, 0, CHUNKS[:2]))
    store.run_sync(lambda c: artifacts.append_log(c, run_id, 2, CHUNKS[2:]))
    assert store.run_sync(lambda c: artifacts.log_end(c, run_id)) == (3, len(LOG))
    for offset in [0, *(n + 1 for n, byte in enumerate(LOG) if byte == ord("\n"))]:
        read = partial(artifacts.read_log_at, run_id=run_id, offset=offset, limit=1 << 20)
        assert store.run_sync(read) == (offset, LOG[offset:])
    assert store.run_sync(lambda c: artifacts.read_log_at(c, run_id, len(LOG) + 5, 10))[1] == b""


def test_a_configuration_is_stored_once_per_content_of_a_workspace_and_its_archive_read_back(
    store: Store,
) -> None:
    ids = store.run_sync(lambda c: ws_store.sync_configured(c, ["a", "b"]))
    first = store.run_sync(lambda c: artifacts.put_configuration(c, ids["a"], b"tgz", 2, "s1"))
    again = store.run_sync(lambda c: artifacts.put_configuration(c, ids["a"], b"xx", 9, "s1"))
    other = store.run_sync(lambda c: artifacts.put_configuration(c, ids["b"], b"tgz", 2, "s1"))
    assert again == first
    assert (first.size, first.file_count, first.sha256) == (3, 2, "s1")
    assert other.id != first.id
    assert store.run_sync(lambda c: artifacts.configuration_archive(c, first.id)) == ("s1", b"tgz")
    with pytest.raises(NotFound, match="configuration version cv-nope not found"):
        store.run_sync(lambda c: artifacts.configuration_archive(c, "cv-nope"))


def test_a_plan_reads_back_sealed_and_a_new_plan_replaces_it_with_its_json(store: Store) -> None:
    run_id = store.run_sync(_run)
    assert store.run_sync(lambda c: artifacts.get_plan_file(c, run_id)) is None
    with pytest.raises(NotFound, match=f"run {run_id} has no plan"):
        store.run_sync(lambda c: artifacts.put_plan_json(c, run_id, b"{}"))
    sha = store.run_sync(lambda c: artifacts.put_plan(c, run_id, b"plan-1", None))
    assert store.run_sync(lambda c: artifacts.get_plan_file(c, run_id)) == (b"plan-1", sha)
    store.run_sync(lambda c: artifacts.put_plan_json(c, run_id, b'{"a": 1}'))
    assert store.run_sync(lambda c: artifacts.get_plan_json(c, run_id)) == b'{"a": 1}'
    sha2 = store.run_sync(lambda c: artifacts.put_plan(c, run_id, b"plan-2", b'{"b": 2}'))
    assert store.run_sync(lambda c: artifacts.get_plan_file(c, run_id)) == (b"plan-2", sha2)
    assert store.run_sync(lambda c: artifacts.get_plan_json(c, run_id)) == b'{"b": 2}'
    stored = store.run_sync(lambda c: c.execute(select(plan_artifacts.c.plan_file)).scalar_one())
    assert b"plan-2" not in bytes(stored)  # sealed in the database
    keyless = Store(store.engine.url.render_as_string(hide_password=False))
    with pytest.raises(PlanUnusable):
        keyless.run_sync(lambda c: artifacts.get_plan_file(c, run_id))
    keyless.close()


def test_a_log_appended_in_parts_ends_where_its_last_chunk_does(store: Store) -> None:
    run_id = store.run_sync(_run)
    assert store.run_sync(lambda c: artifacts.log_end(c, run_id)) == (0, 0)
    store.run_sync(lambda c: artifacts.append_log(c, run_id, 0, [b"one\n", b"two\n"]))
    chunk = artifacts.LogChunk(b"three\n", "plan.out", 6)
    store.run_sync(lambda c: artifacts.append_log(c, run_id, 2, [chunk]))
    assert store.run_sync(lambda c: artifacts.log_end(c, run_id)) == (3, 14)
    assert store.run_sync(lambda c: artifacts.log_sources(c, run_id)) == {"plan.out": 6}


def _alembic() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(db_module.__file__).with_name("migrations")))
    return cfg


def _downgrade(store: Store, cfg: AlembicConfig, target: str) -> None:
    """Alembic's downgrade to `target`. SQLite rebuilds `runs` to drop a column (0013_speed):
    as its documentation says, with the foreign keys off, outside the transaction."""
    with store.engine.connect() as conn:
        raw: Any = conn.connection.dbapi_connection
        raw.execute("PRAGMA foreign_keys=OFF")
        with conn.begin():
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, target)
        raw.execute("PRAGMA foreign_keys=ON")


def test_migration_0011_counts_the_offsets_of_chunks_stored_before_it(tmp_path: Path) -> None:
    old = Store(sqlite_url(tmp_path / "old.db"))
    old.migrate()
    runs = [old.run_sync(_run), old.run_sync(_run)]  # as today's code stores them
    cfg = _alembic()
    _downgrade(old, cfg, "0010_storage")  # the runs stay; chunks as stored before 0011
    chunks_0010 = table(
        "run_log_chunks",
        column("run_id", String), column("seq", Integer), column("data", LargeBinary),
        column("created_at", String),
    )  # fmt: skip
    rows = [
        {"run_id": run_id, "seq": seq, "data": data, "created_at": "2026-11-01"}
        for run_id in runs
        for seq, data in enumerate(CHUNKS)
    ]
    old.run_sync(lambda c: c.execute(insert(chunks_0010), rows))
    old.migrate()
    for run_id in runs:
        read = partial(artifacts.read_log_at, run_id=run_id, offset=14, limit=100)
        assert old.run_sync(read) == (14, LOG[14:])
        assert old.run_sync(partial(artifacts.log_end, run_id=run_id)) == (3, len(LOG))

    def diff(conn: Connection) -> list[object]:
        found = compare_metadata(MigrationContext.configure(conn), metadata)
        return [d for d in found if "run_log_chunks" in repr(d)]

    assert old.run_sync(diff) == []
    old.close()


def test_a_plan_stored_before_its_json_gets_it_later_and_migration_0012_goes_both_ways(
    tmp_path: Path,
) -> None:
    """`show -json` after the run: the plan is stored first (`plan_json` NULL until
    `put_plan_json`); migration 0013_speed allows that and adds `runs.plan_json_error`, and its
    downgrade gives a plan still without JSON the document a failed `show -json` leaves."""
    store = Store(sqlite_url(tmp_path / "tfward.db"), sealer=Sealer(bytes(32)))
    store.migrate()
    run_id = store.run_sync(_run)
    store.run_sync(lambda c: artifacts.put_plan(c, run_id, b"plan", None))
    with pytest.raises(NotFound, match="has no plan JSON yet"):
        store.run_sync(lambda c: artifacts.get_plan_json(c, run_id))
    cfg = _alembic()
    _downgrade(store, cfg, "0012_web")
    assert store.run_sync(lambda c: artifacts.get_plan_json(c, run_id)) == b"null"
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    store.run_sync(lambda c: artifacts.put_plan_json(c, run_id, b'{"format_version": "1.0"}'))
    assert store.run_sync(lambda c: artifacts.get_plan_json(c, run_id)) == (
        b'{"format_version": "1.0"}'
    )

    def diff(conn: Connection) -> list[object]:
        found = compare_metadata(MigrationContext.configure(conn), metadata)
        return [d for d in found if "plan_artifacts" in repr(d) or "plan_json_error" in repr(d)]

    assert store.run_sync(diff) == []
    store.close()
