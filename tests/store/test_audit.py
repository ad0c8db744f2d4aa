"""The audit trail (tfward/store/audit.py) on a real SQLite file: the schema of migration
0008_plan, events newest first, a trace that commits or rolls back with its action, and no
way to change or delete what was written."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from tfward.store import audit
from tfward.store import workspaces as ws_store
from tfward.store.audit import Attempt, AuditAction, AuditOutcome
from tfward.store.db import Store
from tfward.store.tables import metadata

PACKAGE = Path(audit.__file__).resolve().parents[1]


def test_migration_0008_creates_exactly_the_schema_of_tables_py(store: Store) -> None:
    def diff(conn: Connection) -> list[object]:
        found = compare_metadata(MigrationContext.configure(conn), metadata)
        return [d for d in found if "audit_events" in repr(d) or "error_class" in repr(d)]

    assert store.run_sync(diff) == []


def test_events_come_back_newest_first_and_by_action(store: Store) -> None:
    unlock = Attempt("ops", AuditAction.FORCE_UNLOCK, "workspace demo")
    store.run_sync(lambda c: audit.record(c, unlock, detail={"lock": {"locked_by": "ci"}}))
    store.run_sync(
        lambda c: audit.record(
            c, Attempt("signal", AuditAction.CONFIG_RELOAD, "config /etc/t.toml"),
            AuditOutcome.REFUSED, reason="bad key",
        )
    )  # fmt: skip
    store.run_sync(lambda c: audit.record(c, unlock, AuditOutcome.REFUSED, reason="not locked"))
    events = store.run_sync(audit.list_events)
    assert [(e.seq, e.action, e.outcome, e.reason) for e in events] == [
        (3, AuditAction.FORCE_UNLOCK, AuditOutcome.REFUSED, "not locked"),
        (2, AuditAction.CONFIG_RELOAD, AuditOutcome.REFUSED, "bad key"),
        (1, AuditAction.FORCE_UNLOCK, AuditOutcome.OK, None),
    ]
    assert events[2].detail == {"lock": {"locked_by": "ci"}} and events[2].actor == "ops"
    only = store.run_sync(lambda c: audit.list_events(c, action=AuditAction.FORCE_UNLOCK, limit=1))
    assert [e.seq for e in only] == [3]


def test_a_trace_written_with_an_action_that_fails_is_rolled_back_with_it(store: Store) -> None:
    def action(conn: Connection) -> None:
        ws_store.sync_configured(conn, ["demo"])
        audit.record(conn, Attempt("ops", AuditAction.FORCE_UNLOCK, "workspace demo"))
        raise RuntimeError("the action failed after writing its trace")

    with pytest.raises(RuntimeError):
        store.run_sync(action)
    assert store.run_sync(audit.list_events) == []


def test_the_store_offers_no_way_to_change_or_delete_an_event() -> None:
    functions = {
        name for name, value in vars(audit).items()
        if callable(value) and getattr(value, "__module__", "") == audit.__name__
        and not isinstance(value, type)
    }  # fmt: skip
    assert functions == {"record", "list_events"}
    # Nothing else in the package uses the table (tables.py defines it), so nothing else
    # can write it.
    users = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "audit_events" in {n.id for n in ast.walk(ast.parse(path.read_text()))
                              if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    )  # fmt: skip
    assert users == ["store/audit.py"]
