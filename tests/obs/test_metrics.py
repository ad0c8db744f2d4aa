"""`GET /metrics` (tfward/obs/metrics.py, api/routes_metrics.py): the real daemon with real
terraform, scraped and parsed the way Prometheus parses it; and the Metrics object's stage
timer, whose outcomes are hard to provoke through a daemon."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from harness import Api, demo_workspace, open_store, running_daemon, write_config
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from receiver import Receiver, followups_config, serving
from sqlalchemy import delete, update

from tfward.actors.takeover import RecoveryReport
from tfward.errors import StageFailed
from tfward.obs.metrics import TERRAFORM_COMMANDS, Metrics, PlanReason
from tfward.runs.model import ErrorKind
from tfward.store.tables import plan_artifacts

RECOVERY_ACTIONS = {f.name for f in dataclasses.fields(RecoveryReport)}


class Scrape:
    """One scrape's samples, looked up by sample name and labels."""

    def __init__(self, text: str) -> None:
        self.samples = [s for f in text_string_to_metric_families(text) for s in f.samples]

    def __call__(self, name: str, **labels: str) -> float:
        (value,) = [s.value for s in self.samples if s.name == name and s.labels == labels]
        return value

    def by(self, name: str, label: str) -> dict[str, float]:
        """Every sample of `name`, keyed by one label's value."""
        return {s.labels[label]: s.value for s in self.samples if s.name == name}


async def scrape(api: Api) -> Scrape:
    response = await api.http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return Scrape(response.text)


async def scrape_until(api: Api, done: Callable[[Scrape], bool], within: float = 60) -> Scrape:
    """Scrape until `done` holds: a process count or a delivery has no event to wait on."""
    with trio.fail_after(within):
        while not done(found := await scrape(api)):
            await trio.sleep(0.02)
    return found


def stage_count(found: Scrape, stage: str, outcome: str = "ok") -> float:
    return found("tfward_stage_duration_seconds_count", stage=stage, outcome=outcome)


async def test_a_plan_and_apply_is_counted_and_leaves_no_terraform_process_counted(
    tmp_path: Path,
) -> None:
    receiver = Receiver(fail_first=1)
    async with serving(receiver):
        hook = {
            "name": "hook",
            "type": "generic",
            "url": receiver.at("/hook"),
            "triggers": ["run:completed"],
            "retry_interval": "100ms",
        }
        ws = demo_workspace(tmp_path, things=1, delay=1.0, notifications=["hook"])
        config = followups_config(tmp_path, [ws], [hook])
        async with running_daemon(config) as (daemon, api):
            first = (await api.create_run("demo"))["id"]
            await api.wait(first, "apply_pending")
            second = (await api.create_run("demo"))["id"]
            found = await scrape(api)
            assert found("tfward_workspace_queue_depth", workspace="demo") == 1
            assert found("tfward_runs", status="apply_pending") == 1
            assert found("tfward_runs", status="pending") == 1

            assert (await api.action(first, "confirm")).status_code == 202
            await scrape_until(api, lambda f: f("tfward_terraform_processes", command="apply") == 1)
            await api.wait(first, "applied")
            # The second run plans after the apply: nothing left to change.
            await api.wait(second, "planned_and_finished")
            await receiver.wait_for_ok(1)

            def delivered(f: Scrape) -> bool:
                backlog = [
                    s.value
                    for s in f.samples
                    if s.name == "tfward_outbox_rows"
                    and s.labels["status"] in ("queued", "running")
                ]
                attempts = f("tfward_notification_delivery_attempts_total", destination="hook")
                return attempts == len(receiver.received) and sum(backlog) == 0

            found = await scrape_until(api, delivered)

    runs = found.by("tfward_runs", "status")
    assert runs["applied"] == 1 and runs["planned_and_finished"] == 1
    assert sum(runs.values()) == 2
    assert found("tfward_workspace_queue_depth", workspace="demo") == 0
    assert found.by("tfward_terraform_processes", "command") == dict.fromkeys(TERRAFORM_COMMANDS, 0)
    assert stage_count(found, "planning") == 2
    assert stage_count(found, "applying") == 1 and stage_count(found, "saving_state") == 1
    # The provider takes `delay` seconds to create the thing: the histogram measured real time.
    assert found("tfward_stage_duration_seconds_sum", stage="applying", outcome="ok") >= 1.0
    assert found("tfward_notification_delivery_failures_total", destination="hook") == 1
    assert len(receiver.received) >= 2
    outbox = [s for s in found.samples if s.name == "tfward_outbox_rows"]
    assert {s.labels["kind"] for s in outbox} >= {"notify", "deliver"}
    assert all(s.value == 0 for s in outbox if s.labels["status"] == "dead")
    assert found.by("tfward_plan_integrity_failures_total", "reason") == dict.fromkeys(
        [str(r) for r in PlanReason], 0
    )
    assert found.by("tfward_recovery_actions_total", "action") == dict.fromkeys(RECOVERY_ACTIONS, 0)


async def test_a_plan_whose_sha256_no_longer_matches_is_counted_and_planned_again(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1)])
    async with running_daemon(config) as (daemon, api):
        run_id = (await api.create_run("demo"))["id"]
        await api.wait(run_id, "apply_pending")
        await daemon.store.write(
            lambda c: c.execute(
                update(plan_artifacts)
                .where(plan_artifacts.c.run_id == run_id)
                .values(plan_sha256="0" * 64)
            )
        )
        assert (await api.action(run_id, "confirm")).status_code == 202
        found = await scrape_until(
            api,
            lambda f: f("tfward_plan_integrity_failures_total", reason="sha256_mismatch") == 1,
        )
        assert found("tfward_plan_integrity_failures_total", reason="lost") == 0
        assert stage_count(found, "restoring_plan", "failed") == 1
        assert "applying" not in found.by("tfward_stage_duration_seconds_count", "stage")
        run = await api.wait(run_id, "apply_pending")
        assert any("sha256 mismatch" in w for w in run["warnings"])
        assert stage_count(await scrape(api), "planning") == 2


async def test_recovery_actions_and_a_lost_plan_are_counted_by_the_daemon_that_recovered(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=1)])
    async with running_daemon(config) as (daemon, api):
        run_id = (await api.create_run("demo"))["id"]
        await api.wait(run_id, "apply_pending")
        assert stage_count(await scrape(api), "planning") == 1
    store = open_store(config)
    store.run_sync(
        lambda c: c.execute(delete(plan_artifacts).where(plan_artifacts.c.run_id == run_id))
    )
    store.close()
    async with running_daemon(config) as (daemon, api):
        found = await scrape(api)
        assert found.by("tfward_recovery_actions_total", "action") == dict.fromkeys(
            RECOVERY_ACTIONS, 0
        ) | {"requeued": 1}
        assert found("tfward_plan_integrity_failures_total", reason="lost") == 1
        await api.wait(run_id, "apply_pending")
        # This daemon's registry counts only its own work: one plan, not the first daemon's too.
        assert stage_count(await scrape(api), "planning") == 1


async def test_a_stage_is_observed_with_its_duration_and_how_it_ended(
    autojump_clock: object,
) -> None:
    metrics = Metrics()
    with metrics.stage("init"):
        await trio.sleep(2)
    with pytest.raises(StageFailed), metrics.stage("planning"):
        raise StageFailed(ErrorKind.TIMEOUT, "stage planning timed out")
    with pytest.raises(StageFailed), metrics.stage("planning"):
        raise StageFailed(ErrorKind.PLAN, "terraform plan failed")
    with trio.move_on_after(1), metrics.stage("applying"):
        await trio.sleep_forever()

    def sample(suffix: str, stage: str, outcome: str) -> float | None:
        return metrics.registry.get_sample_value(
            f"tfward_stage_duration_seconds_{suffix}", {"stage": stage, "outcome": outcome}
        )

    assert sample("count", "init", "ok") == 1 and sample("sum", "init", "ok") == 2
    assert sample("count", "planning", "timeout") == 1
    assert sample("count", "planning", "failed") == 1
    assert (
        sample("count", "applying", "cancelled") == 1
        and sample("sum", "applying", "cancelled") == 1
    )


def test_each_daemon_counts_in_its_own_registry() -> None:
    one, other = Metrics(), Metrics()
    one.plan_unusable(PlanReason.LOST)
    one.recovered({"requeued": ["run-a", "run-b"], "interrupted": []})
    assert (
        one.registry.get_sample_value("tfward_plan_integrity_failures_total", {"reason": "lost"})
        == 1
    )
    assert (
        one.registry.get_sample_value("tfward_recovery_actions_total", {"action": "requeued"}) == 2
    )
    assert (
        other.registry.get_sample_value("tfward_plan_integrity_failures_total", {"reason": "lost"})
        == 0
    )
    assert (
        other.registry.get_sample_value("tfward_recovery_actions_total", {"action": "requeued"})
        is None
    )
