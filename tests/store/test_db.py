"""The trio-facing store (tfward/store/db.py): a write that meets a transient database error is
retried, and the run that made it carries on.

The error is real: another process holds SQLite's write lock (`BEGIN IMMEDIATE`) past the
store's busy timeout (10 s), so the daemon's write fails with "database is locked". The lock
is let go once the daemon has logged the retry; the run must end `applied` with its whole log.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from harness import demo_workspace, facts, running_daemon, write_config

# Holds the write lock of the database named in argv[1] until a line arrives on stdin.
HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""
# Storage health says so once per outage; the write itself waits and is tried again.
RETRY = "storage degraded since"


async def test_a_write_that_finds_the_database_locked_is_retried_and_the_run_continues(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tfward.store")
    ws = demo_workspace(tmp_path, things=2, vars={"delay": 2}, auto_apply=True)
    # SQLite's write lock, by nature: this test runs on SQLite whatever TFWARD_TEST_DATABASE says
    # (PostgreSQL's conflicts are retried the same way: tests/store/test_dialect.py).
    db = tmp_path / "data" / "tfward.db"
    config = write_config(tmp_path, [ws], daemon={"database_url": f"sqlite:///{db}"})
    async with running_daemon(config) as (daemon, api):
        run = await api.create_run("demo")
        await api.wait_stage(run["id"], "applying")
        holder = await trio.lowlevel.open_process(
            [sys.executable, "-c", HOLDER, str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert holder.stdin is not None and holder.stdout is not None
        try:
            with trio.fail_after(30):
                said = b""
                while not said.endswith(b"\n"):
                    said += await holder.stdout.receive_some()
                assert said == b"locked\n"
                # The apply goes on; its next write waits out the busy timeout and waits on.
                while not any(RETRY in r.getMessage() for r in caplog.records):
                    await trio.sleep(0.1)
        finally:
            with trio.CancelScope(shield=True):
                await holder.stdin.send_all(b"release\n")
                assert await holder.wait() == 0
        done = await api.wait(run["id"], "applied", timeout=60)
    found = await facts(daemon, run["id"])
    assert done["error_kind"] is None and found["states"][0].resource_count == 2
    assert "Apply complete!" in found["log"] and "[tfward] run finished: applied" in found["log"]
    retried = [r.getMessage() for r in caplog.records if RETRY in r.getMessage()]
    assert retried and all("database is locked" in message for message in retried)
