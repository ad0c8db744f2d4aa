"""Run credentials (tfward/store/credentials.py) on a real SQLite file: only a digest and a
scope are kept; a credential works while it is not revoked and its run has not finished."""

from __future__ import annotations

import pytest

from tfward.ids import now
from tfward.runs.model import Operation
from tfward.store import credentials
from tfward.store import runs as run_store
from tfward.store import workspaces as ws_store
from tfward.store.db import Store
from tfward.store.tables import run_credentials, runs


@pytest.fixture
def ws_id(store: Store) -> str:
    return store.run_sync(lambda c: ws_store.sync_configured(c, ["app"]))["app"]


def new_run(store: Store, ws_id: str) -> str:
    return store.run_sync(
        lambda c: run_store.create_run(
            c,
            workspace_id=ws_id,
            workspace_name="app",
            operation=Operation.PLAN_AND_APPLY,
            auto_apply=False,
        ).id
    )


def issue(store: Store, digest: str, run_id: str, ws_id: str, scope: list[str]) -> None:
    store.run_sync(
        lambda c: credentials.issue(c, digest, run_id=run_id, ws_id=ws_id, scope=scope, when=now())
    )


def test_an_issued_credential_is_found_by_its_digest_with_its_run_workspace_and_scope(
    store: Store, ws_id: str
) -> None:
    run_id = new_run(store, ws_id)
    issue(store, "d1", run_id, ws_id, ["network", "dns", "network"])
    found = store.run_sync(lambda c: credentials.find(c, "d1"))
    assert found == credentials.RunCredential(run_id, "app", frozenset({"network", "dns"}))
    assert store.run_sync(lambda c: credentials.find(c, "unknown")) is None
    row = store.run_sync(lambda c: c.execute(run_credentials.select()).one())
    assert (row.token_sha256, row.scope) == ("d1", ["dns", "network"])


def test_revoking_a_runs_credentials_leaves_other_runs_alone(store: Store, ws_id: str) -> None:
    a, b = new_run(store, ws_id), new_run(store, ws_id)
    issue(store, "a1", a, ws_id, [])
    issue(store, "a2", a, ws_id, [])
    issue(store, "b1", b, ws_id, [])
    assert store.run_sync(lambda c: credentials.revoke_for_run(c, a, now())) == 2
    assert store.run_sync(lambda c: credentials.revoke_for_run(c, a, now())) == 0
    assert store.run_sync(lambda c: credentials.find(c, "a1")) is None
    assert store.run_sync(lambda c: credentials.find(c, "b1")) is not None
    assert store.run_sync(lambda c: credentials.revoke_all(c, now())) == 1
    assert store.run_sync(lambda c: credentials.find(c, "b1")) is None


def test_a_credential_of_a_finished_run_does_not_work_even_if_not_revoked(
    store: Store, ws_id: str
) -> None:
    run_id = new_run(store, ws_id)
    issue(store, "d1", run_id, ws_id, ["network"])
    store.run_sync(
        lambda c: c.execute(runs.update().where(runs.c.id == run_id).values(finished_at=now()))
    )
    assert store.run_sync(lambda c: credentials.find(c, "d1")) is None
