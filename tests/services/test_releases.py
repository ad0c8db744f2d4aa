"""Releases through the daemon with real terraform and the demo provider: ordered batches,
failure isolation, cancel, a restart in the middle of a batch, and two executor loops racing on
one release. Every status sample is checked for exact counts (support.check_invariants)."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import trio
from harness import facts, running_daemon
from releases.support import (
    FAILING,
    Releases,
    counts,
    creates,
    demo,
    items,
    release_config,
    runs_per_workspace,
    statuses,
)
from sqlalchemy import Connection

from tfward.services.releases import ReleaseExecutor
from tfward.store import outbox as outbox_store
from tfward.store import releases as release_store
from tfward.store import states

FIVE = ["dev-a", "dev-b", "stg", "prod-eu", "prod-us"]
THREE_BATCHES = [["dev-a", "dev-b"], ["stg"], ["prod-eu", "prod-us"]]


def _release_triggers(daemon_rows: list[dict[str, object]], release_id: str) -> list[object]:
    return [
        row["payload"]["trigger"]  # type: ignore[index]
        for row in daemon_rows
        if row["payload"].get("release_id") == release_id  # type: ignore[attr-defined]
    ]


async def test_three_batches_succeed_in_order_with_exact_counts_at_every_sample(
    tmp_path: Path,
) -> None:
    config = release_config(tmp_path, [demo(tmp_path, ws) for ws in FIVE])
    async with running_daemon(config) as (daemon, api):
        rel = Releases(api)
        created = await rel.create(THREE_BATCHES, name="roll it out")
        assert created["status"] == "pending" and counts(created) == (5, 0, 0, 0)
        sampled: list[dict[str, Any]] = []

        async def sample_the_list(cancel: trio.CancelScope) -> None:
            with cancel:
                while True:
                    response = await api.http.get("/api/v1/releases")
                    sampled.extend(response.json()["data"])
                    await trio.sleep(0.1)

        async with trio.open_nursery() as nursery:
            sampler = trio.CancelScope()
            nursery.start_soon(sample_the_list, sampler)
            final, samples = await rel.watch(created["id"])
            sampler.cancel()

        assert final["status"] == "succeeded" and final["error"] is None
        assert counts(final) == (5, 5, 0, 0)
        assert len(samples) > 5, "the watcher saw the release move on"
        assert {v["status"] for v in samples} >= {"running", "succeeded"}
        assert sampled and all(
            v["counts"]["total"] == 5 and sum(v["counts"][s] for s in
            ("pending", "running", "succeeded", "failed", "skipped", "cancelled")) == 5
            for v in sampled
        )  # fmt: skip
        # Strictly in order: a batch starts after every item of the one before finished.
        batches = final["batches"]
        for earlier, later in zip(batches, batches[1:], strict=False):
            done = max(i["finished_at"] for i in earlier["items"])
            assert all(i["started_at"] >= done for i in later["items"])
        for ws, item in items(final).items():
            assert item["run_status"] == "applied", ws
            run = await api.run(item["run_id"])
            assert run["auto_apply"] and run["operation"] == "plan_and_apply"
        assert await runs_per_workspace(daemon) == dict.fromkeys(FIVE, 1)
        rows = await daemon.store.read(lambda c: outbox_store.list_rows(c, limit=None))
        assert _release_triggers(rows, created["id"]) == ["release:completed"]
        listed = (await api.http.get("/api/v1/releases")).json()["data"]
        assert [v["id"] for v in listed] == [created["id"]]
    assert all(creates(tmp_path, ws) == 1 for ws in FIVE)


async def test_a_failure_in_batch_two_skips_batch_three_and_lets_its_neighbour_finish(
    tmp_path: Path,
) -> None:
    workspaces = [
        demo(tmp_path, "dev-a"),
        demo(tmp_path, "stg-ok", vars={"delay": 3}),
        demo(tmp_path, "stg-bad", extra_tf=FAILING),
        demo(tmp_path, "prod-eu"),
        demo(tmp_path, "prod-us"),
    ]
    config = release_config(tmp_path, workspaces)
    async with running_daemon(config) as (daemon, api):
        rel = Releases(api)
        created = await rel.create([["dev-a"], ["stg-ok", "stg-bad"], ["prod-eu", "prod-us"]])
        final, samples = await rel.watch(created["id"])

        assert final["status"] == "failed"
        assert statuses(final) == {
            "dev-a": "succeeded",
            "stg-ok": "succeeded",
            "stg-bad": "failed",
            "prod-eu": "skipped",
            "prod-us": "skipped",
        }
        assert counts(final) == (5, 2, 1, 2)
        bad = items(final)["stg-bad"]
        assert "failing on purpose" in bad["error"] and bad["run_status"] == "failed"
        assert final["error"].startswith("stg-bad (batch 2): run ")
        # The failure did not stop its neighbour, and the release ended only after it.
        stopping = [v for v in samples if statuses(v)["stg-bad"] == "failed"]
        assert statuses(stopping[0])["prod-eu"] == "skipped", "skipped with the failure"
        assert any(statuses(v)["stg-ok"] == "running" for v in stopping)
        assert all(v["status"] == "running" for v in stopping if v is not final)
        ok = items(final)["stg-ok"]
        assert final["timestamps"]["finished_at"] >= ok["finished_at"]
        found = await runs_per_workspace(daemon)
        assert found == {"dev-a": 1, "stg-ok": 1, "stg-bad": 1, "prod-eu": 0, "prod-us": 0}
        rows = await daemon.store.read(lambda c: outbox_store.list_rows(c, limit=None))
        assert _release_triggers(rows, created["id"]) == ["release:failed"]
    assert creates(tmp_path, "prod-eu") == creates(tmp_path, "prod-us") == 0


async def test_cancel_during_batch_one_cancels_its_runs_and_skips_the_rest(
    tmp_path: Path,
) -> None:
    workspaces = [
        demo(tmp_path, "dev-a", vars={"delay": 5}),
        demo(tmp_path, "dev-b", vars={"delay": 5}),
        demo(tmp_path, "stg"),
        demo(tmp_path, "prod"),
    ]
    config = release_config(tmp_path, workspaces)
    async with running_daemon(config) as (daemon, api):
        rel = Releases(api)
        created = await rel.create([["dev-a", "dev-b"], ["stg"], ["prod"]])
        running, _ = await rel.watch(created["id"], lambda v: v["counts"]["running"] == 2)
        assert running["status"] == "running"

        status, body = await rel.cancel(created["id"])
        assert status == 202, body
        view = body["data"]
        assert view["cancel_requested"] and view["status"] == "running"
        assert statuses(view) == {
            "dev-a": "running",
            "dev-b": "running",
            "stg": "skipped",
            "prod": "skipped",
        }
        final, _ = await rel.watch(created["id"])

        assert final["status"] == "cancelled"
        assert statuses(final) == {
            "dev-a": "cancelled",
            "dev-b": "cancelled",
            "stg": "skipped",
            "prod": "skipped",
        }
        assert final["counts"]["cancelled"] == 2 and counts(final) == (4, 0, 0, 2)
        for ws in ("dev-a", "dev-b"):
            found = await facts(daemon, items(final)[ws]["run_id"])
            assert str(found["run"].status) == "cancelled"
            assert found["lock"] is None and not found["dir_exists"]
        assert await runs_per_workspace(daemon) == {"dev-a": 1, "dev-b": 1, "stg": 0, "prod": 0}
        status, body = await rel.cancel(created["id"])
        assert status == 409 and "it is cancelled" in body["error"]["message"]
        rows = await daemon.store.read(lambda c: outbox_store.list_rows(c, limit=None))
        assert _release_triggers(rows, created["id"]) == ["release:failed"]


async def test_a_restart_in_the_middle_of_batch_two_never_starts_an_item_twice(
    tmp_path: Path,
) -> None:
    workspaces = [
        demo(tmp_path, "dev-a"),
        demo(tmp_path, "stg-1", vars={"delay": 2}),
        demo(tmp_path, "stg-2", vars={"delay": 2}),
        demo(tmp_path, "prod"),
    ]
    config = release_config(tmp_path, workspaces)
    batches = [["dev-a"], ["stg-1", "stg-2"], ["prod"]]
    async with running_daemon(config) as (daemon, api):
        rel = Releases(api)
        created = await rel.create(batches)
        mid, _ = await rel.watch(
            created["id"],
            lambda v: all(
                items(v)[ws]["run_status"] in ("planning", "applying") for ws in ("stg-1", "stg-2")
            ),
        )
        claimed = {ws: items(mid)[ws]["run_id"] for ws in ("dev-a", "stg-1", "stg-2")}
    # The daemon stopped gracefully: the executor first, then the runs drained.
    async with running_daemon(config) as (daemon, api):
        rel = Releases(api)
        final, _ = await rel.watch(created["id"])

        assert final["status"] == "succeeded" and counts(final) == (4, 4, 0, 0)
        after = items(final)
        assert {ws: after[ws]["run_id"] for ws in claimed} == claimed, "resumed, not re-created"
        assert await runs_per_workspace(daemon) == {"dev-a": 1, "stg-1": 1, "stg-2": 1, "prod": 1}
        per_item = await daemon.store.read(lambda c: release_store.runs_per_item(c, created["id"]))
        assert sorted(per_item.values()) == [1, 1, 1, 1]
    assert [creates(tmp_path, ws) for ws in ("dev-a", "stg-1", "stg-2", "prod")] == [1, 1, 1, 1]


async def test_two_executor_loops_racing_on_one_release_run_each_item_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tfward.services.releases")
    workspaces = [demo(tmp_path, ws) for ws in ("dev-a", "dev-b", "stg")]
    config = release_config(tmp_path, workspaces)
    async with running_daemon(config) as (daemon, api):
        async with trio.open_nursery() as nursery:
            second = ReleaseExecutor(daemon.rt, daemon.supervisor)
            await nursery.start(second.run)
            assert daemon.releases is not None and second is not daemon.releases
            rel = Releases(api)
            created = await rel.create([["dev-a", "dev-b"], ["stg"]])
            final, _ = await rel.watch(created["id"])
            second.stop()

        assert final["status"] == "succeeded" and counts(final) == (3, 3, 0, 0)
        assert await runs_per_workspace(daemon) == {"dev-a": 1, "dev-b": 1, "stg": 1}
        per_item = await daemon.store.read(lambda c: release_store.runs_per_item(c, created["id"]))
        assert sorted(per_item.values()) == [1, 1, 1]
        rows = await daemon.store.read(lambda c: outbox_store.list_rows(c, limit=None))
        assert _release_triggers(rows, created["id"]) == ["release:completed"]
    assert [creates(tmp_path, ws) for ws in ("dev-a", "dev-b", "stg")] == [1, 1, 1]
    lost = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert lost, "the loops did race: one lost at least once and looked again"


async def test_a_release_applies_exactly_the_pinned_configuration_with_its_variables(
    tmp_path: Path,
) -> None:
    workspaces = [demo(tmp_path, "app", auto_apply=True), demo(tmp_path, "app2")]
    config = release_config(tmp_path, workspaces)
    async with running_daemon(config) as (daemon, api):
        first = await api.wait((await api.create_run("app"))["id"], "applied")
        pinned = first["configuration_version_id"]
        # The sources move on after the version was made: the release must not apply that.
        for ws in ("app", "app2"):
            (tmp_path / ws / "later.tf").write_text(
                'resource "demo_thing" "later" {\n  name = "later"\n}\n'
            )
        rel = Releases(api)
        created = await rel.create(
            [["app"], ["app2"]], configuration_version_id=pinned, variables={"value": "v2"}
        )
        assert created["rollout"]["kind"] == "configuration_version+variables"
        final, _ = await rel.watch(created["id"])
        assert final["status"] == "succeeded", final

        def state_of(conn: Connection, ws: str) -> dict[str, Any]:
            raw = states.current_raw(conn, daemon.rt.workspace_ids[ws])
            assert raw is not None
            return json.loads(raw)  # type: ignore[no-any-return]

        sha = created["rollout"]["configuration_sha256"]
        for ws in ("app", "app2"):
            run = await api.run(items(final)[ws]["run_id"])
            versions = (
                await api.http.get(f"/api/v1/workspaces/{ws}/configuration-versions")
            ).json()["data"]
            by_id = {v["id"]: v["sha256"] for v in versions}
            assert by_id[run["configuration_version_id"]] == sha, ws
            state = await daemon.store.read(functools.partial(state_of, ws=ws))
            resources = state["resources"]
            assert [r["name"] for r in resources] == ["this"], "later.tf was not applied"
            values = [i["attributes"]["value"] for r in resources for i in r["instances"]]
            assert values == ["v2"], ws
            log = await api.logs(run["id"])
            assert "(pinned: " in log and "variables overridden: value" in log
