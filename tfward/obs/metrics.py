"""The daemon's Prometheus metrics, served in the text format at `GET /metrics`.

Two sources, one registry:
- what only this process sees happen (stage durations, terraform processes running now, saved
  plans found unusable, `show -json` failures, recovery actions) is recorded here as it
  happens, by the pipeline and by recovery, which reach this object as `Runtime.metrics`;
- what the database already knows (runs by status, queue depth, outbox rows, run-task results,
  notification delivery attempts) is read at scrape time (store/tallies.py), so it survives
  restarts and cannot drift from the API.

Each daemon has its own `CollectorRegistry`, never prometheus_client's global one: tests start
several daemons in one process, and each must count only its own runs.

Storage (docs/architecture.md §10): `tfward_storage_degraded` says whether storage is degraded
now and why (the `problem` label), `tfward_storage_outages_total` how often it was since start.
While the database does not read, the scrape still answers, without the database's part.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sized
from dataclasses import dataclass, field
from types import TracebackType

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.context_managers import InprogressTracker
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tfward.errors import StageFailed
from tfward.runs.model import ErrorKind

# Our own stages take milliseconds; init, plan and apply take seconds to hours.
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)


class PlanReason(enum.StrEnum):
    """Why a saved plan was refused before an apply (the `reason` label)."""

    LOST = "lost"
    SHA256_MISMATCH = "sha256_mismatch"
    STATE_MOVED = "state_moved"  # the workspace state changed since the plan
    TERRAFORM_STALE = "terraform_stale"  # terraform itself refused the saved plan as stale
    OTHER = "other"


class PlanJsonFailure(enum.StrEnum):
    """How `terraform show -json` failed (the `reason` label of tfward_plan_json_failures)."""

    EXIT = "exit"  # it exited non-zero
    NOT_JSON = "not_json"  # it exited 0 without a JSON document
    TIMEOUT = "timeout"  # after the run: it outlived its time limit
    NOT_RUN = "not_run"  # after the run: it could not be started


# The commands the pipeline runs, present at zero so a dashboard has a series before the first.
TERRAFORM_COMMANDS = ("init", "plan", "show", "apply")
# Storage problems (store/health.py's Problem), each series present at zero.
STORAGE_PROBLEMS = ("disk_full", "read_only", "locked", "io_error", "unavailable")


@dataclass(frozen=True, slots=True)
class StorageState:
    """Storage as the store's health sees it at scrape time."""

    problem: str | None = None  # None: not degraded
    outages: Mapping[str, int] = field(default_factory=dict)  # problem -> outages since start


@dataclass(frozen=True, slots=True)
class Tallies:
    """What the database knows, read in one snapshot at scrape time (store/tallies.py). Every
    status of a run and of an outbox row is present (zero when none), so a series does not
    vanish when its last row moves on."""

    runs: dict[str, int] = field(default_factory=dict)  # status -> runs
    queued: dict[str, int] = field(default_factory=dict)  # configured workspace -> pending runs
    outbox: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, status) -> rows
    run_tasks: dict[tuple[str, str], int] = field(default_factory=dict)  # (task, status)
    # destination -> (attempts, failed attempts), from the delivery log (seed M4).
    deliveries: dict[str, tuple[int, int]] = field(default_factory=dict)


class LeaseMetrics:
    """Several daemons on one database (docs/architecture.md §15): each daemon serves its own
    /metrics; `tfward_node_info{node_id}` says which one answered."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.node = Gauge(
            "tfward_node_info", "This daemon's node_id (always 1).", ["node_id"],
            registry=registry,
        )  # fmt: skip
        self.owned = Gauge(
            "tfward_workspaces_owned", "Workspaces whose lease this daemon holds now.",
            registry=registry,
        )  # fmt: skip
        self.live = Gauge(
            "tfward_live_daemons", "Daemons with a fresh heartbeat, this one included.",
            registry=registry,
        )  # fmt: skip
        self.takeovers = Counter(
            "tfward_lease_takeovers",
            "Workspaces this daemon took over from a daemon that did not let go (dead or paused).",
            registry=registry,
        )
        self.renewal_failures = Counter(
            "tfward_lease_renewal_failures", "Lease ticks that could not be written.",
            registry=registry,
        )  # fmt: skip
        self.self_fenced = Counter(
            "tfward_self_fenced",
            "Times this daemon could not renew its leases in time and stopped its terraform.",
            registry=registry,
        )

    def identify(self, node_id: str) -> None:
        self.node.labels(node_id).set(1)


class Metrics:
    """The metrics of one daemon. Recording never blocks and never raises."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.stage_seconds = Histogram(
            "tfward_stage_duration_seconds",
            "Time runs spent in each pipeline stage; outcome is ok, failed, timeout or cancelled.",
            ["stage", "outcome"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self.terraform_processes = Gauge(
            "tfward_terraform_processes",
            "Terraform processes running now, by command.",
            ["command"],
            registry=self.registry,
        )
        self.plan_failures = Counter(
            "tfward_plan_integrity_failures",
            "Saved plans found unusable before an apply (seed M8): lost, sha256_mismatch, "
            "state_moved (the state changed since the plan), terraform_stale or other; the run "
            "is planned again.",
            ["reason"],
            registry=self.registry,
        )
        self.recovery_actions = Counter(
            "tfward_recovery_actions",
            "What recovery at start did, by action (the report of GET /api/v1/recovery).",
            ["action"],
            registry=self.registry,
        )
        self.plan_json_failures = Counter(
            "tfward_plan_json_failures",
            "`terraform show -json` failures, by reason (exit, not_json, timeout, not_run). A run "
            "whose plan something reads during the run fails for it (seed M1); a speculative "
            "plan, or an auto-applied run whose show -json ran after the run, says why on the "
            "run (plan_json_error).",
            ["reason"],
            registry=self.registry,
        )
        self.leases = LeaseMetrics(self.registry)
        for command in TERRAFORM_COMMANDS:
            self.terraform_processes.labels(command)
        for reason in PlanReason:
            self.plan_failures.labels(str(reason))
        for failure in PlanJsonFailure:
            self.plan_json_failures.labels(str(failure))
        self._database = _DatabaseCollector()
        self.registry.register(self._database)

    def stage(self, stage: str) -> StageTimer:
        """Time a stage: `with metrics.stage("planning"): ...`."""
        return StageTimer(self.stage_seconds, stage)

    def terraform_running(self, command: str) -> InprogressTracker:
        """Count a terraform process while it runs: `with metrics.terraform_running("plan")`."""
        return self.terraform_processes.labels(command).track_inprogress()

    def plan_unusable(self, reason: PlanReason) -> None:
        self.plan_failures.labels(str(reason)).inc()

    def plan_json_failed(self, reason: PlanJsonFailure) -> None:
        self.plan_json_failures.labels(str(reason)).inc()

    def recovered(self, actions: Mapping[str, Sized]) -> None:
        """Count a recovery report: action -> what it was done to."""
        for action, done in actions.items():
            self.recovery_actions.labels(action).inc(len(done))

    def exposition(self, tallies: Tallies | None, storage: StorageState | None = None) -> bytes:
        """The text format, with `tallies` as the database's part (None: the database did not
        read; its families are left out) and `storage`. Synchronous (no checkpoint between
        setting and reading the snapshot), so concurrent scrapes never mix theirs."""
        self._database.current = tallies
        self._database.storage = storage or StorageState()
        try:
            return generate_latest(self.registry)
        finally:
            self._database.current = None


class StageTimer:
    """Observes how long the block took, labelled by how it ended."""

    def __init__(self, histogram: Histogram, stage: str) -> None:
        self._histogram = histogram
        self._stage = stage
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = trio.current_time()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        elapsed = trio.current_time() - self._started
        self._histogram.labels(self._stage, _outcome(exc)).observe(elapsed)


def _outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, StageFailed) and exc.kind == ErrorKind.TIMEOUT:
        return "timeout"
    if isinstance(exc, trio.Cancelled):
        return "cancelled"
    if isinstance(exc, BaseExceptionGroup) and exc.split(trio.Cancelled)[1] is None:
        return "cancelled"  # a nursery inside the stage passed the cancellation on
    return "failed"


class _DatabaseCollector(Collector):
    """Turns the snapshot of the scrape in progress into metric families."""

    def __init__(self) -> None:
        self.current: Tallies | None = None
        self.storage = StorageState()

    def describe(self) -> Iterable[Metric]:
        return [*_families(Tallies()), *_storage(StorageState())]

    def collect(self) -> Iterable[Metric]:
        found = _families(self.current) if self.current is not None else []
        return [*found, *_storage(self.storage)]


def _storage(state: StorageState) -> list[Metric]:
    degraded = GaugeMetricFamily(
        "tfward_storage_degraded",
        "1 for the problem storage has now (disk_full, read_only, locked, io_error, "
        "unavailable): writes wait, the API answers 503 to them; 0 otherwise.",
        labels=["problem"],
    )
    outages = CounterMetricFamily(
        "tfward_storage_outages",
        "Times storage became degraded since the daemon started, by the problem it began with.",
        labels=["problem"],
    )
    for problem in STORAGE_PROBLEMS:
        degraded.add_metric([problem], 1 if state.problem == problem else 0)
        outages.add_metric([problem], state.outages.get(problem, 0))
    return [degraded, outages]


def _families(t: Tallies) -> list[Metric]:
    runs = GaugeMetricFamily("tfward_runs", "Runs by status.", labels=["status"])
    for status, n in sorted(t.runs.items()):
        runs.add_metric([status], n)
    queue = GaugeMetricFamily(
        "tfward_workspace_queue_depth",
        "Runs pending (queued, not started) per configured workspace.",
        labels=["workspace"],
    )
    for name, n in sorted(t.queued.items()):
        queue.add_metric([name], n)
    outbox = GaugeMetricFamily(
        "tfward_outbox_rows",
        "Outbox rows by kind and status: queued and running are the backlog; dead rows gave up "
        "and wait for an operator's retry.",
        labels=["kind", "status"],
    )
    for (kind, status), n in sorted(t.outbox.items()):
        outbox.add_metric([kind, status], n)
    tasks = GaugeMetricFamily(
        "tfward_run_task_results", "Run-task results by task and status.", labels=["task", "status"]
    )
    for (task, status), n in sorted(t.run_tasks.items()):
        tasks.add_metric([task, status], n)
    attempts = CounterMetricFamily(
        "tfward_notification_delivery_attempts",
        "Attempts to deliver a notification, by destination (the delivery log).",
        labels=["destination"],
    )
    failures = CounterMetricFamily(
        "tfward_notification_delivery_failures",
        "Delivery attempts that failed (no answer, or not 2xx), by destination.",
        labels=["destination"],
    )
    for destination, (tried, failed) in sorted(t.deliveries.items()):
        attempts.add_metric([destination], tried)
        failures.add_metric([destination], failed)
    return [runs, queue, outbox, tasks, attempts, failures]
