"""Stored run logs by byte offset (tfward/store/artifacts.py) and migration 0011_events, which
gives the chunks stored before it their offsets."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from sqlalchemy import Connection, Integer, LargeBinary, String, column, insert, table

from tfward.runs.model import Operation
from tfward.store import artifacts
from tfward.store import db as db_module
from tfward.store import runs as run_store
from tfward.store import workspaces as ws_store
from tfward.store.db import Store, sqlite_url
from tfward.store.tables import metadata


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(sqlite_url(tmp_path / "tfward.db"))
    store.migrate()
    yield store
    store.close()


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


def _alembic() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(db_module.__file__).with_name("migrations")))
    return cfg


def test_migration_0011_counts_the_offsets_of_chunks_stored_before_it(tmp_path: Path) -> None:
    old = Store(sqlite_url(tmp_path / "old.db"))
    old.migrate()
    runs = [old.run_sync(_run), old.run_sync(_run)]  # as today's code stores them
    cfg = _alembic()
    with old.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0010_storage")  # the runs stay; chunks as stored before 0011
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
