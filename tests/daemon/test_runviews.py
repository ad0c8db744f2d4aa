"""The run view cache (tfward/daemon/api/runviews.py) fed by the runs the writes leave: with
real terraform and a real SQLite file, every run a write hands over is the run the database
holds, and a client waiting on a run costs no read per change."""

from __future__ import annotations

from pathlib import Path

from harness import demo_workspace, running_daemon, write_config

from tfward.runs.model import Run
from tfward.store import runs as run_store
from tfward.store.changes import Key, Topic


async def test_every_run_a_write_hands_to_the_cache_is_the_run_the_database_holds(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path)])
    async with running_daemon(config) as (daemon, api):
        handed: list[Run] = []
        differs: list[tuple[Run, Run]] = []

        def compare(key: Key, value: object) -> None:
            # Called right after the commit, before any other write of a run can commit (the
            # store's writes are serialized up to their publication): the row is this value.
            if key.topic is Topic.RUN and isinstance(value, Run):
                handed.append(value)
                stored = daemon.store.run_sync(lambda c: run_store.get_run(c, key.id))
                if stored != value:
                    differs.append((value, stored))

        daemon.store.changes.listen(compare)
        applied = await api.create_run("demo", operation="plan_and_apply", auto_apply=True)
        await api.wait(applied["id"], "applied")
        confirmed = await api.create_run("demo", operation="destroy")
        await api.wait(confirmed["id"], "apply_pending")
        assert (await api.action(confirmed["id"], "confirm")).status_code == 202
        await api.wait(confirmed["id"], "applied")
        discarded = await api.create_run("demo", operation="plan_and_apply")
        await api.wait(discarded["id"], "apply_pending")
        assert (await api.action(discarded["id"], "discard")).status_code == 202
        await api.wait(discarded["id"], "discarded")

    assert differs == []
    statuses = {str(run.status) for run in handed}
    # Created, started, planned, confirmed, discarded and ended runs were all handed over.
    assert {"pending", "planning", "apply_pending", "applying", "applied", "discarded"} <= statuses
    assert any(run.confirmed_by for run in handed)
    assert any(run.discard_requested_by for run in handed)


async def test_a_client_waiting_on_a_run_costs_no_read_of_the_run_per_change(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path)])
    async with running_daemon(config) as (daemon, api):
        changes_before = daemon.store.changes.published[Topic.RUN]
        misses_before = daemon.run_views.misses
        run = await api.create_run("demo", operation="plan_and_apply", auto_apply=True)
        await api.wait(run["id"], "applied")
        changes = daemon.store.changes.published[Topic.RUN] - changes_before
        reads = daemon.run_views.misses - misses_before

    assert changes >= 6  # created, planning, its stages, applying, its stages, applied
    assert reads == 0  # each change handed the run over: the long-poll read none
