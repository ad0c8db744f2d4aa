"""The store suites' database: a migrated store on SQLite, or on PostgreSQL under
`TFWARD_TEST_DATABASE=postgresql` (tests/postgres.py), with a sealing key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import postgres
import pytest

from tfward.store.db import Store
from tfward.store.sealing import Sealer


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(postgres.database_url(tmp_path), sealer=Sealer(bytes(32)))
    store.migrate()
    yield store
    store.close()
