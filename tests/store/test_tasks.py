"""Run-task results (tfward/store/tasks.py) on a real database (SQLite, or PostgreSQL under
TFWARD_TEST_DATABASE=postgresql): the termination funnel's revocation of a run's tokens."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

from sqlalchemy import Connection

from tfward.ids import now
from tfward.runs.model import Operation
from tfward.store import runs as run_store
from tfward.store import tasks
from tfward.store import workspaces as ws_store
from tfward.store.db import Store


def _results(store: Store, names: dict[str, str]) -> None:
    """One result per name -> run id, each with a token."""

    def create(conn: Connection) -> None:
        ws_id = ws_store.workspace_id(conn, "app")
        new = [
            tasks.NewResult(name, run_id, ws_id, "t", "post_plan", "mandatory", b"cipher", name,
                            now() + timedelta(hours=1))
            for name, run_id in names.items()
        ]  # fmt: skip
        tasks.create(conn, new, now())

    store.run_sync(create)


def test_a_runs_tokens_are_revoked_once_and_other_runs_keep_theirs(store: Store) -> None:
    ws_id = store.run_sync(lambda c: ws_store.sync_configured(c, ["app"]))["app"]
    run_ids = [
        store.run_sync(
            lambda c: run_store.create_run(
                c, workspace_id=ws_id, workspace_name="app", operation=Operation.PLAN,
                auto_apply=False,
            ).id
        )
        for _ in range(2)
    ]  # fmt: skip
    _results(store, {"rt-a1": run_ids[0], "rt-a2": run_ids[0], "rt-b": run_ids[1]})
    ended = now()
    store.run_sync(lambda c: tasks.revoke_for_run(c, run_ids[0], ended))
    store.run_sync(lambda c: tasks.revoke_for_run(c, run_ids[0], ended + timedelta(seconds=5)))
    for name in ("rt-a1", "rt-a2"):
        assert store.run_sync(partial(tasks.token_ciphertext, result_id=name)) is None
        assert store.run_sync(partial(tasks.get, result_id=name)).token_revoked_at == ended
    assert store.run_sync(lambda c: tasks.token_ciphertext(c, "rt-b")) == b"cipher"
    assert store.run_sync(lambda c: tasks.get(c, "rt-b")).token_revoked_at is None
