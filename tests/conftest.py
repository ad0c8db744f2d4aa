"""Shared fixtures. The harness module (tests/harness.py) is importable from every test.

`make test-fast` leaves out the tests marked `slow`: the long suites of real daemons with real
terraform listed in SLOW below (the fault matrix, the soak, crash safety, the long storage
outages, the run-task stage matrix, the demo provider against terraform, terraform run by hand
against the http backend, outputs read between workspaces, the web page in a real browser,
several daemons on PostgreSQL),
marked here by path so a new test in those files is slow too. `make test` runs everything.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import harness  # importable once its folder is on the path

from tfward.store.db import Store
from tfward.store.sealing import Sealer

HERE = Path(__file__).parent
SLOW = (
    "actors/test_fault_matrix.py",
    "soak/",
    "daemon/test_crash_safety.py",
    "daemon/test_storage_outages.py",
    "runtasks/test_stage_matrix.py",
    "provider/",
    "services/test_releases.py",
    "outbox/test_followups.py",
    "outbox/test_restart.py",
    "daemon/test_backend_terraform.py",
    "actors/test_remote_state.py",
    "daemon/web/test_browser.py",
    "daemon/test_cluster.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        where = Path(str(item.path)).relative_to(HERE).as_posix()
        if where.startswith(SLOW):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A migrated store with a sealing key: SQLite, or PostgreSQL under
    `TFWARD_TEST_DATABASE=postgresql` (tests/postgres.py). A suite may define its own."""
    import postgres

    store = Store(postgres.database_url(tmp_path), sealer=Sealer(bytes(32)))
    store.migrate()
    yield store
    store.close()


@pytest.fixture(autouse=True)
def _close_stopped_stores() -> Iterator[None]:
    yield
    harness.close_stopped_stores()


def pytest_sessionfinish(session: pytest.Session) -> None:
    # The PostgreSQL server of this process (tests/postgres.py), if a test started one: its
    # postmaster detached from us and would outlive the run.
    import postgres

    postgres.stop()
