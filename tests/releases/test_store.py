"""Persistence of releases (tfward/store/releases.py) on a real SQLite file: the schema
of migration 0003, compare-and-set claims that create exactly one run, and the notification
written by the transaction that ends a release."""

from __future__ import annotations

import pytest
import trio
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from tfward.errors import BadRequest, InvalidTransition, NotFound
from tfward.ids import now
from tfward.releases import model
from tfward.releases.model import ItemStatus, Release, ReleaseStatus
from tfward.runs.model import Operation
from tfward.store import artifacts
from tfward.store import outbox as outbox_store
from tfward.store import releases as release_store
from tfward.store import runs as run_store
from tfward.store import workspaces as ws_store
from tfward.store.db import Store
from tfward.store.tables import metadata, runs

WORKSPACES = ["dev-a", "dev-b", "stg"]


@pytest.fixture
def ws_ids(store: Store) -> dict[str, str]:
    return store.run_sync(lambda c: ws_store.sync_configured(c, WORKSPACES))


def _create(store: Store, **kwargs: object) -> Release:
    return store.run_sync(
        lambda c: release_store.create_release(
            c,
            name="r",
            batches=[["dev-a", "dev-b"], ["stg"]],
            **kwargs,  # type: ignore[arg-type]
        )
    )


def _started(store: Store) -> Release:
    release = _create(store)
    return store.run_sync(
        lambda c: release_store.transition(c, release.id, lambda r: model.start(r, now()))
    )


def _claim(store: Store, release: Release, ws: str, ws_ids: dict[str, str]) -> str:
    item = next(i for i in release.items if i.workspace == ws)
    _, run = store.run_sync(
        lambda c: release_store.claim(c, release.id, item.id, workspace_id=ws_ids[ws])
    )
    return run.id


def test_migration_0003_creates_exactly_the_release_schema_of_tables_py(store: Store) -> None:
    def diff(conn: Connection) -> list[object]:
        found = compare_metadata(MigrationContext.configure(conn), metadata)
        mine = ("releases", "release_items", "release_item_id", "pinned_configuration",
                "variable_overrides")  # fmt: skip
        return [d for d in found if any(word in repr(d) for word in mine)]

    assert store.run_sync(diff) == []


def test_a_release_is_stored_with_its_items_by_batch(store: Store, ws_ids: dict[str, str]) -> None:
    release = _create(store)
    loaded = store.run_sync(lambda c: release_store.load(c, release.id))
    assert loaded == release
    assert [[i.workspace for i in b] for b in loaded.batches] == [["dev-a", "dev-b"], ["stg"]]
    assert store.run_sync(release_store.unfinished) == [release.id]


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"batches": [["dev-a", "nope"]]}, BadRequest, "unknown workspaces: nope"),
        (
            {"configuration_version_id": "cv-nope"},
            NotFound,
            "configuration version cv-nope not found",
        ),
    ],
)
def test_a_release_naming_what_does_not_exist_is_refused(
    store: Store,
    ws_ids: dict[str, str],
    kwargs: dict[str, object],
    error: type[Exception],
    words: str,
) -> None:
    body = {"name": "r", "batches": [["dev-a"]], **kwargs}
    with pytest.raises(error, match=words):
        store.run_sync(lambda c: release_store.create_release(c, **body))  # type: ignore[arg-type]


def test_claiming_creates_one_auto_applied_run_and_stores_its_id_on_the_item(
    store: Store, ws_ids: dict[str, str]
) -> None:
    release = _started(store)
    run_id = _claim(store, release, "dev-a", ws_ids)
    loaded = store.run_sync(lambda c: release_store.load(c, release.id))
    item = next(i for i in loaded.items if i.workspace == "dev-a")
    assert (item.status, item.run_id) == (ItemStatus.RUNNING, run_id)
    run = store.run_sync(lambda c: run_store.get_run(c, run_id))
    assert run.operation is Operation.PLAN_AND_APPLY and run.auto_apply
    assert run.release_item_id == item.id and run.created_by == f"release {release.id}"


def test_a_second_claim_of_an_item_is_refused_and_creates_no_run(
    store: Store, ws_ids: dict[str, str]
) -> None:
    release = _started(store)
    _claim(store, release, "dev-a", ws_ids)
    with pytest.raises(InvalidTransition, match="it is running"):
        _claim(store, release, "dev-a", ws_ids)
    assert store.run_sync(lambda c: release_store.runs_per_item(c, release.id)) == {
        release.items[0].id: 1,
        release.items[1].id: 0,
        release.items[2].id: 0,
    }


async def test_claims_racing_on_one_item_create_exactly_one_run(
    store: Store, ws_ids: dict[str, str]
) -> None:
    release = _started(store)
    item = release.items[0]
    won: list[str] = []
    lost: list[str] = []

    async def claim() -> None:
        try:
            _, run = await store.write(
                lambda c: release_store.claim(c, release.id, item.id, workspace_id=ws_ids["dev-a"])
            )
            won.append(run.id)
        except InvalidTransition as exc:
            lost.append(str(exc))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(claim)
    assert len(won) == 1 and len(lost) == 4
    count = store.run_sync(lambda c: release_store.runs_per_item(c, release.id))[item.id]
    assert count == 1


def test_the_database_itself_refuses_a_second_run_for_an_item(
    store: Store, ws_ids: dict[str, str]
) -> None:
    def create(conn: Connection) -> None:
        run_store.create_run(
            conn,
            workspace_id=ws_ids["dev-a"],
            workspace_name="dev-a",
            operation=Operation.PLAN_AND_APPLY,
            auto_apply=True,
            release_item_id="ri-same",
        )

    store.run_sync(create)
    with pytest.raises(IntegrityError):
        store.run_sync(create)


def test_a_save_over_a_stale_version_is_refused(store: Store, ws_ids: dict[str, str]) -> None:
    stale = _create(store)
    store.run_sync(lambda c: release_store.transition(c, stale.id, lambda r: model.start(r, now())))
    with pytest.raises(InvalidTransition, match="changed underneath"):
        store.run_sync(lambda c: release_store.save(c, stale, model.start(stale, now())))


def test_the_transaction_that_ends_a_release_enqueues_its_notification(
    store: Store, ws_ids: dict[str, str]
) -> None:
    release = _started(store)
    _claim(store, release, "dev-a", ws_ids)
    item = release.items[0]
    failed = store.run_sync(
        lambda c: release_store.transition(
            c, release.id, lambda r: model.settle(r, item.id, ItemStatus.FAILED, now(), error="x")
        )
    )
    assert failed.status is ReleaseStatus.FAILED, "nothing else was running"
    rows = [
        r
        for r in store.run_sync(lambda c: outbox_store.list_rows(c, limit=None))
        if r["payload"]["trigger"].startswith("release:")
    ]
    assert [r["payload"]["trigger"] for r in rows] == ["release:failed"]
    payload = rows[0]["payload"]
    assert payload["release_id"] == release.id and payload["release_status"] == "failed"
    assert payload["counts"] == {
        "total": 3,
        "succeeded": 0,
        "failed": 1,
        "skipped": 2,
        "cancelled": 0,
    }


def test_a_pinned_configuration_version_is_copied_into_each_workspace_by_content(
    store: Store, ws_ids: dict[str, str]
) -> None:
    cv = store.run_sync(
        lambda c: artifacts.put_configuration(c, ws_ids["dev-a"], b"archive", 1, "sha-1")
    )
    release = _create(store, configuration_version_id=cv.id, variables={"value": "v2"})
    assert release.rollout.configuration_sha256 == "sha-1"
    release = store.run_sync(
        lambda c: release_store.transition(c, release.id, lambda r: model.start(r, now()))
    )
    run_a = _claim(store, release, "dev-a", ws_ids)
    run_b = _claim(store, release, "dev-b", ws_ids)

    def pinned(conn: Connection) -> list[tuple[str, str, object]]:
        found = []
        for run_id in (run_a, run_b):
            row = conn.execute(
                select(
                    runs.c.workspace_id,
                    runs.c.pinned_configuration_version_id,
                    runs.c.variable_overrides,
                ).where(runs.c.id == run_id)
            ).one()
            found.append((row[0], artifacts.configuration_archive(conn, row[1])[0], row[2]))
        return found

    (ws_a, sha_a, vars_a), (ws_b, sha_b, vars_b) = store.run_sync(pinned)
    assert (ws_a, ws_b) == (ws_ids["dev-a"], ws_ids["dev-b"])
    assert sha_a == sha_b == "sha-1"
    assert vars_a == vars_b == {"value": "v2"}
    run = store.run_sync(lambda c: run_store.get_run(c, run_b))
    assert run.variable_overrides == {"value": "v2"}
    cvs = store.run_sync(lambda c: artifacts.list_configurations(c, ws_ids["dev-b"]))
    assert [c.sha256 for c in cvs] == ["sha-1"] and run.pinned_configuration_version_id == cvs[0].id
