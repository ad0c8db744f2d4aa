#!/usr/bin/env python3
"""Chaos soak (issue 5, docs/architecture.md §5): kill -9 the daemon at random moments, restart it
on the same data dir, and check after every recovery that nothing is stuck, leaked or lost.

The daemon runs as a real process (`tfward serve`, tests/harness.py `DaemonProcess`) on three
real terraform workspaces of slow `demo_thing`s:

* `alpha`: auto-apply, 5 chained things (0.5 s each): one create in flight at a time;
* `beta`: auto-apply, 4 independent things (1 s each): four creates in flight at once;
* `gamma`: needs confirmation, 3 chained things (0.75 s each); the driver confirms (sometimes
  discards) its plans after a short think.
(Delays are exact binary fractions: the demo provider fails on a delay such as 0.3, which
Terraform sends as a string; see bench/README.md.)

A client per workspace keeps one `plan_and_apply` or `destroy` run going (destroy when all its
things exist, apply when none do, either one in between) and now and then a speculative `plan`
beside it. The daemon gets SIGKILL after 0.5-6 s of that (seeded RNG); in an "aimed" cycle
(`--aim-rate`) the kill instead lands 0.1-1.2 s after a terraform apply is seen running, if one
starts within 6 s. With `--startup-kill-rate` a kill lands during start-up (recovery included).
With `--outage-rate` (root only) storage fails beside the kills (issue 12, docs/architecture.md
§10): in such a cycle, at a random moment of the work, the database is made read-only (`chattr
+i`), another process takes its write lock, or (with `--tmpfs-mb`, the data dir on a tmpfs of
that size) the disk is filled, for 2-8 s; the kill may land during the outage, and the next
start may meet it. After every start the recovery report (`GET /api/v1/recovery`) and the
database are read right after the daemon logs that it listens (it listens only once recovery is
done), and the invariants in `KINDS` are checked. After the last kill the daemon is restarted
once more, runs are left to finish (waiting plans confirmed), everything is checked again with
nothing moving, and the daemon must stop on SIGTERM with exit code 0 and leave no process
behind.

Exit code 1 if any invariant failed; the scratch directory (data dir, demo stores, every
daemon's log in `logs/`) is then kept.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import random
import re
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import trio
from _common import LoadMeter, harness, storagefaults, table, write_results
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from sqlalchemy import Connection, func, select, text

from tfward.config import Config, load_config
from tfward.runs.model import TERMINAL
from tfward.store import sealing
from tfward.store.tables import (
    outbox,
    run_log_chunks,
    runs,
    state_versions,
    workspace_locks,
    workspaces,
)

TERMINAL_NAMES = frozenset(str(s) for s in TERMINAL)
FINAL_TRIGGERS = frozenset({"run:completed", "run:errored", "run:cancelled"})

# Every invariant, in the order the summary lists them.
KINDS = {
    "stuck_after_recovery": "run planning/applying after start but not touched by the new daemon",
    "lock_of_finished_run": "workspace lock held by a terminal run",
    "lock_of_idle_run": "workspace lock held by a pending or planning run",
    "apply_pending_without_lock": "apply_pending run that does not hold its workspace lock",
    "dir_of_finished_run": "run directory of a terminal run",
    "orphan_run_dir": "run directory of no known run",
    "lost_resource": "resource in the demo store but not in the latest state version",
    "serial_not_increasing": "state serials not strictly increasing",
    "lineage_changed": "state lineage changed within a workspace",
    "state_version_lost": "a state version seen earlier is gone",
    "applied_state_error": "run ended applied_state_error (its state could not be stored)",
    "duplicate_notification": "two outbox notify rows for one run and one final trigger",
    "missing_notification": "terminal run without a final notify row in the outbox",
    "duplicate_delivery": "notification delivered twice (delivery log, or webhook w/o kill)",
    "leftover_process": "terraform/provider process of a dead daemon still running",
    "daemon_exit": "daemon exited on its own while it ran (not killed by the soak)",
    "failed_after_apply": "run failed whose terraform apply printed \"Apply complete!\"",
    "lost_log_line": "resource in the latest state whose creation line is in no run's log",
    "daemon_start": "daemon did not come up",
    "stuck_at_end": "run not terminal once the final drain timed out",
    "shutdown": "SIGTERM at the end did not exit 0",
}


@dataclass(frozen=True)
class Workload:
    name: str
    auto_apply: bool
    things: int = 0  # independent things (the demo workspace's `count`)
    delay: float = 0.0
    chain: int = 0  # chained things (each depends on the previous)
    chain_delay: float = 0.0


WORKLOADS = (
    Workload("alpha", True, chain=5, chain_delay=0.5),
    Workload("beta", True, things=4, delay=1),
    Workload("gamma", False, chain=3, chain_delay=0.75),
)


@dataclass
class Tally:
    created: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    anomalies: list[str] = field(default_factory=list)

    def anomaly(self, text_: str) -> None:
        if len(self.anomalies) < 200:
            self.anomalies.append(text_)


@dataclass
class Soak:
    opts: argparse.Namespace
    root: Path
    config: Config
    store: Any
    tally: Tally = field(default_factory=Tally)
    violations: list[tuple[str, str]] = field(default_factory=list)
    recovery: Counter[str] = field(default_factory=Counter)
    landed: Counter[str] = field(default_factory=Counter)
    cycles: list[dict[str, Any]] = field(default_factory=list)
    seen_versions: dict[str, set[str]] = field(default_factory=dict)
    orphaned_groups: int = 0
    apply_kills: int = 0
    current: harness.DaemonProcess | None = None
    elapsed: float = 0.0
    received: int = 0
    received_twice: int = 0
    kill_times: list[float] = field(default_factory=list)
    resources_checked: int = 0
    kills: int = 0
    startup_kills: int = 0
    outages: Counter[str] = field(default_factory=Counter)
    faults: dict[str, Any] = field(default_factory=dict)  # the storage faults, by name

    @property
    def runs_root(self) -> Path:
        return self.config.daemon.data_dir / "runs"

    def violate(self, cycle: int, kind: str, detail: str) -> None:
        self.violations.append((kind, f"[start {cycle}] {detail}"))


# ---- the notification receiver -----------------------------------------------------------

# How long after the daemon sent a webhook this process may record its receipt (its loop was
# busy): a kill within that window before the first receipt explains a second one.
RECEIPT_LAG = 2.0


class Hooks:
    """A generic-webhook receiver on loopback: what the outbox delivers, if a worker runs."""

    def __init__(self) -> None:
        self.received: list[tuple[float, bytes]] = []  # (trio time, body)

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.received.append((trio.current_time(), body))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def serve(self, stop: trio.Event, *, task_status: trio.TaskStatus[list[str]]) -> None:
        hc = HypercornConfig()
        hc.bind = ["127.0.0.1:0"]
        hc.accesslog = None
        hc.loglevel = "WARNING"
        hc.graceful_timeout = 1.0
        app: Any = self.app  # a plain ASGI callable; hypercorn's types want its TypedDicts
        await hypercorn_serve(app, hc, shutdown_trigger=stop.wait, task_status=task_status)

    def duplicates(self, kills: list[float]) -> tuple[int, list[str]]:
        """Final notifications received more than once: how many times a kill came between
        two receipts (at-least-once delivery allows that), and the receipts with no kill in
        between (a duplicate delivery)."""
        seen: dict[tuple[str, str], list[float]] = {}
        for when, body in self.received:
            try:
                doc = json.loads(body)
                for note in doc.get("notifications") or []:
                    if note.get("trigger") in FINAL_TRIGGERS:
                        seen.setdefault((doc.get("run_id"), note["trigger"]), []).append(when)
            except (ValueError, AttributeError, TypeError):
                continue
        across, unexplained = 0, []
        for (run_id, trigger), times in seen.items():
            for a, b in zip(times, times[1:], strict=False):
                # A receipt is timed when this process's loop gets to it, which can be after
                # the kill of the daemon that sent it (the kill is timed at once): RECEIPT_LAG.
                if any(a - RECEIPT_LAG <= k <= b for k in kills):
                    across += 1
                else:
                    unexplained.append(f"webhook got {trigger} of {run_id} twice, "
                                       f"{b - a:.1f} s apart, no kill in between")
        return across, unexplained


def write_soak_config(root: Path, hook_url: str) -> Config:
    """The harness's config with every workspace notifying a webhook on loopback."""
    tables = [
        harness.demo_workspace(
            root, w.name, things=w.things, delay=w.delay, auto_apply=w.auto_apply,
            extra_tf=harness.chained_things(w.chain, w.chain_delay) if w.chain else "")
        for w in WORKLOADS
    ]
    path = harness.write_config(root, tables, terraform={"cancel_grace": "10s"}).path
    toml = path.read_text().replace("[[workspace]]\n", '[[workspace]]\nnotifications = ["soak"]\n')
    path.write_text(f'{toml}\n[[notification]]\nname = "soak"\ntype = "generic"\n'
                    f'url = "{hook_url}/hook"\nretry_interval = "1s"\n\n[outbox]\nlease = "10s"\n')
    return load_config(path)


# ---- the driver ------------------------------------------------------------------------------


async def _request(tally: Tally, call: Awaitable[httpx.Response]) -> httpx.Response | None:
    try:
        response = await call
    except httpx.HTTPError as exc:
        tally.anomaly(f"API request failed while the daemon was up: {exc!r}")
        return None
    if response.status_code >= 500:
        tally.anomaly(f"API {response.status_code}: {response.text[:300]}")
        return None
    return response


async def drive(http: httpx.AsyncClient, w: Workload, rng: random.Random, tally: Tally) -> None:
    """One client for one workspace, until cancelled: keeps one `plan_and_apply` or `destroy`
    run going, sometimes a speculative plan beside it, and confirms (or now and then discards)
    plans waiting in `apply_pending` after a short think."""
    decisions: dict[tuple[str, str | None], tuple[float, str]] = {}
    while True:
        listed = await _request(tally, http.get(f"/api/v1/workspaces/{w.name}/runs",
                                                params={"limit": 20}))
        if listed is not None and listed.status_code != 200:
            tally.anomaly(f"list runs of {w.name}: {listed.status_code} {listed.text[:300]}")
        elif listed is not None:
            open_runs = [r for r in listed.json()["data"] if r["status"] not in TERMINAL_NAMES]
            if not any(not r["is_speculative"] for r in open_runs):
                await _create(http, w.name, await _next_operation(http, w, rng, tally), tally)
            if not any(r["is_speculative"] for r in open_runs) and rng.random() < 0.03:
                await _create(http, w.name, "plan", tally)
            for run in open_runs:
                if run["status"] == "apply_pending" and run["confirmed_by"] is None:
                    await _decide(http, run, decisions, rng, tally)
        await trio.sleep(rng.uniform(0.1, 0.35))


async def _next_operation(http: httpx.AsyncClient, w: Workload, rng: random.Random,
                          tally: Tally) -> str:
    """Destroy when every thing exists, apply when none does (so most runs change something)."""
    response = await _request(tally, http.get(f"/api/v1/workspaces/{w.name}"))
    latest = response.json()["data"]["latest_state_version"] if response is not None else None
    count = latest["resource_count"] if latest else 0
    if count >= w.things + w.chain:
        return "destroy"
    if count == 0:
        return "plan_and_apply"
    return "destroy" if rng.random() < 0.5 else "plan_and_apply"


async def _create(http: httpx.AsyncClient, name: str, operation: str, tally: Tally) -> None:
    response = await _request(tally, http.post(f"/api/v1/workspaces/{name}/runs",
                                               json={"operation": operation}))
    if response is not None and response.status_code == 201:
        tally.created[operation] += 1
    elif response is not None:
        tally.anomaly(f"create {operation} in {name}: {response.status_code} {response.text}")


async def _decide(http: httpx.AsyncClient, run: dict[str, Any],
                  decisions: dict[tuple[str, str | None], tuple[float, str]],
                  rng: random.Random, tally: Tally) -> None:
    key = (run["id"], run["plan_hash"])  # a plan made again is decided again
    if key not in decisions:
        choice = "confirm" if rng.random() < 0.85 else "discard"
        decisions[key] = (trio.current_time() + rng.uniform(0.0, 1.5), choice)
        return
    due, choice = decisions[key]
    if trio.current_time() < due:
        return
    decisions[key] = (float("inf"), choice)
    response = await _request(tally, http.post(f"/api/v1/runs/{run['id']}/actions/{choice}"))
    if response is not None:
        tally.actions[f"{choice} {response.status_code}"] += 1


# ---- reading what is there -------------------------------------------------------------------


@dataclass
class Snapshot:
    runs: dict[str, dict[str, Any]]
    locks: dict[str, str | None]  # workspace name -> holding run (None: a user's lock)
    versions: dict[str, list[dict[str, Any]]]  # workspace name -> versions, oldest first
    latest_ids: dict[str, set[str]]  # workspace name -> resource ids in its latest state
    notify: Counter[tuple[str, str]]  # (run id, final trigger) -> outbox rows
    duplicate_deliveries: list[str]
    applied_logs: set[str] = field(default_factory=set)  # runs whose log says it applied
    logged_ids: set[str] = field(default_factory=set)  # resource ids with a creation line


def _load(conn: Connection) -> Snapshot:
    names: dict[str, str] = dict(conn.execute(select(workspaces.c.id, workspaces.c.name)).all())
    found = {
        row.id: {**row._asdict(), "workspace": names[row.workspace_id]}
        for row in conn.execute(select(
            runs.c.id, runs.c.workspace_id, runs.c.operation, runs.c.status, runs.c.stage,
            runs.c.error_kind, runs.c.error_message, runs.c.status_changed_at))
    }
    locks = {names[ws]: run for ws, run in conn.execute(
        select(workspace_locks.c.workspace_id, workspace_locks.c.run_id))}
    versions: dict[str, list[dict[str, Any]]] = {}
    for row in conn.execute(select(
            state_versions.c.id, state_versions.c.workspace_id, state_versions.c.serial,
            state_versions.c.lineage, state_versions.c.kind, state_versions.c.created_at,
    ).order_by(state_versions.c.created_at, state_versions.c.serial)):
        versions.setdefault(names[row.workspace_id], []).append(row._asdict())
    latest_ids: dict[str, set[str]] = {}
    newest = (select(state_versions.c.workspace_id, func.max(state_versions.c.serial))
              .group_by(state_versions.c.workspace_id))
    for ws_id, serial in conn.execute(newest).all():
        raw: bytes = conn.execute(select(state_versions.c.state).where(
            state_versions.c.workspace_id == ws_id, state_versions.c.serial == serial)).scalar_one()
        doc = json.loads(sealing.unseal(conn, raw, "state"))
        latest_ids[names[ws_id]] = {
            inst["attributes"]["id"] for res in doc.get("resources") or []
            for inst in res.get("instances") or []}
    notify: Counter[tuple[str, str]] = Counter()
    for run_id, payload in conn.execute(
            select(outbox.c.run_id, outbox.c.payload).where(outbox.c.kind == "notify")):
        if payload.get("trigger") in FINAL_TRIGGERS:
            notify[(run_id, payload["trigger"])] += 1
    applied_logs, logged_ids = _log_facts(conn)
    return Snapshot(found, locks, versions, latest_ids, notify, _duplicate_deliveries(conn),
                    applied_logs, logged_ids)


_CREATED = re.compile(rb"Creation complete after \S+ \[id=([^\]]+)\]")


def _log_facts(conn: Connection) -> tuple[set[str], set[str]]:
    """Runs whose log says terraform applied, and the resource ids logs say were created."""
    applied, ids = set(), set()
    for run_id, data in conn.execute(select(run_log_chunks.c.run_id, run_log_chunks.c.data)):
        data = bytes(data)
        if b"Apply complete!" in data:
            applied.add(run_id)
        ids.update(m.decode() for m in _CREATED.findall(data))
    return applied, ids


def _duplicate_deliveries(conn: Connection) -> list[str]:
    """Notifications the delivery log says were delivered twice: checked only where the
    outbox worker's delivery log table exists."""
    exists = conn.execute(text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                               "name = 'notification_deliveries'")).first()
    if exists is None:
        return []
    rows = conn.execute(text(
        "SELECT outbox_id, destination, COUNT(*) FROM notification_deliveries WHERE delivered "
        "GROUP BY outbox_id, destination HAVING COUNT(*) > 1")).all()
    found = [f"outbox row {o} delivered {n} times to {d}" for o, d, n in rows]
    final = ", ".join(f"'{t}'" for t in sorted(FINAL_TRIGGERS))
    rows = conn.execute(text(
        "SELECT run_id, \"trigger\", destination, COUNT(*) FROM notification_deliveries "
        f"WHERE delivered AND \"trigger\" IN ({final}) "
        "GROUP BY run_id, \"trigger\", destination HAVING COUNT(*) > 1")).all()
    return found + [f"run {r}: {t} delivered {n} times to {d}" for r, t, d, n in rows]


def list_stores(root: Path) -> dict[str, dict[str, float]]:
    """Each workspace's demo store: resource id -> mtime of its file."""
    found: dict[str, dict[str, float]] = {}
    for w in WORKLOADS:
        found[w.name] = {}
        for path in (root / f"{w.name}-store").glob("*.json"):
            try:
                found[w.name][path.stem] = path.stat().st_mtime
            except FileNotFoundError:
                continue  # deleted while listing
    return found


def processes_in(runs_root: Path, daemon_pid: int | None) -> dict[int, tuple[int, str]]:
    """Live processes working in a run directory whose process group was not started by
    `daemon_pid` (None: all of them): pid -> (process group, command line)."""
    prefix = str(runs_root.resolve()) + os.sep
    found: dict[int, tuple[int, str]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if not os.readlink(proc / "cwd").startswith(prefix):
                continue
            pgid = os.getpgid(int(proc.name))
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
        except OSError:
            continue  # gone, or a zombie
        if daemon_pid is not None and _parent(pgid) == daemon_pid:
            continue
        found[int(proc.name)] = (pgid, cmdline)
    return found


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


# ---- the checks ------------------------------------------------------------------------------


async def check(soak: Soak, cycle: int, t_spawn: datetime, t_listen: float,
                daemon_pid: int, quiet: bool) -> Snapshot:
    """Check every invariant against the database, the run directories, the demo stores and
    the process table. `quiet`: nothing is running any more (the final check), so every
    resource counts and the stores must match the states exactly."""
    before = list_stores(soak.root)
    snap: Snapshot = await trio.to_thread.run_sync(soak.store.run_sync, _load)
    dirs = sorted(p.name for p in soak.runs_root.iterdir()) if soak.runs_root.is_dir() else []
    after = list_stores(soak.root)
    strangers = processes_in(soak.runs_root, daemon_pid)
    if strangers:
        await trio.sleep(1.0)  # a group of the new daemon may be between leader exit and reap
        again = processes_in(soak.runs_root, daemon_pid)
        strangers = {pid: found for pid, found in strangers.items() if again.get(pid) == found}
    for pid, (pgid, cmdline) in sorted(strangers.items()):
        soak.violate(cycle, "leftover_process", f"pid {pid} (group {pgid}): {cmdline}")
    _check_runs(soak, cycle, snap, t_spawn, dirs)
    _check_states(soak, cycle, snap)
    for w in WORKLOADS:
        latest = snap.latest_ids.get(w.name, set())
        stable = {rid for rid, mtime in before[w.name].items()
                  if rid in after[w.name] and (quiet or mtime < t_listen)}
        soak.resources_checked += len(stable)
        for rid in sorted(stable - latest):
            soak.violate(cycle, "lost_resource", f"{w.name}: {rid} exists but is not in the "
                         f"latest state version ({len(latest)} resources)")
        for rid in sorted((latest & stable) - snap.logged_ids):
            soak.violate(cycle, "lost_log_line", f"{w.name}: {rid} has no creation line")
        if quiet and latest - set(after[w.name]):
            soak.tally.anomaly(f"{w.name}: in the state but not in the store: "
                               f"{sorted(latest - set(after[w.name]))}")
    return snap


def _check_runs(soak: Soak, cycle: int, snap: Snapshot, t_spawn: datetime,
                dirs: list[str]) -> None:
    for run in snap.runs.values():
        status, changed = run["status"], run["status_changed_at"]
        if status in ("planning", "applying") and (changed is None or changed < t_spawn):
            soak.violate(cycle, "stuck_after_recovery", f"{_describe(run)} since {changed}")
        if status == "applied_state_error":
            soak.violate(cycle, "applied_state_error", _describe(run))
        if status == "failed" and run["id"] in snap.applied_logs:
            soak.violate(cycle, "failed_after_apply", _describe(run))
        if status in TERMINAL_NAMES and not any(
                snap.notify[(run["id"], t)] for t in FINAL_TRIGGERS):
            soak.violate(cycle, "missing_notification", _describe(run))
        if status == "apply_pending" and snap.locks.get(run["workspace"]) != run["id"]:
            soak.violate(cycle, "apply_pending_without_lock",
                         f"{_describe(run)}; lock: {snap.locks.get(run['workspace'])}")
    for ws, holder in snap.locks.items():
        if holder is None:
            continue
        status = snap.runs[holder]["status"]
        if status in TERMINAL_NAMES and status != "applied_state_error":
            soak.violate(cycle, "lock_of_finished_run", f"{ws}: {_describe(snap.runs[holder])}")
        elif status in ("pending", "planning"):
            soak.violate(cycle, "lock_of_idle_run", f"{ws}: {_describe(snap.runs[holder])}")
    for name in dirs:
        if name not in snap.runs:
            soak.violate(cycle, "orphan_run_dir", name)
        elif snap.runs[name]["status"] in TERMINAL_NAMES:
            soak.violate(cycle, "dir_of_finished_run", _describe(snap.runs[name]))
    for (run_id, trigger), count in snap.notify.items():
        if count > 1:
            soak.violate(cycle, "duplicate_notification", f"{run_id}: {trigger} x{count}")
    for line in snap.duplicate_deliveries:
        soak.violate(cycle, "duplicate_delivery", line)


def _check_states(soak: Soak, cycle: int, snap: Snapshot) -> None:
    for ws, versions in snap.versions.items():
        serials = [v["serial"] for v in versions]
        if any(b <= a for a, b in zip(serials, serials[1:], strict=False)):
            soak.violate(cycle, "serial_not_increasing", f"{ws}: {serials}")
        if len({v["lineage"] for v in versions}) > 1:
            lineages = sorted({v["lineage"] for v in versions})
            soak.violate(cycle, "lineage_changed", f"{ws}: {lineages}")
        ids = {v["id"] for v in versions}
        lost = soak.seen_versions.get(ws, set()) - ids
        if lost:
            soak.violate(cycle, "state_version_lost", f"{ws}: {sorted(lost)}")
        soak.seen_versions[ws] = soak.seen_versions.get(ws, set()) | ids


def _describe(run: dict[str, Any]) -> str:
    text_ = f"run {run['id']} ({run['workspace']}, {run['operation']}) {run['status']}"
    if run["stage"]:
        text_ += f"/{run['stage']}"
    if run["error_kind"]:
        text_ += f" {run['error_kind']}: {run['error_message']}"
    return text_


# ---- one daemon's life -----------------------------------------------------------------------


async def launch(dp: harness.DaemonProcess, nursery: trio.Nursery,
                 kill_after: float | None) -> str:
    """Start the daemon. Returns "listening", "killed" (SIGKILL after `kill_after` seconds,
    before or just as it listened) or "died" (it exited on its own before listening)."""
    outcome = "listening"

    async def watch(scope: trio.CancelScope) -> None:
        nonlocal outcome
        await trio.sleep(kill_after if kill_after is not None else 0.2)
        assert dp.proc is not None  # set by the first step of start()
        if kill_after is not None and dp.proc.returncode is None:
            dp.signal(signal.SIGKILL)
            outcome = "killed"
        await dp.proc.wait()
        if outcome == "listening":
            outcome = "died"
        scope.cancel()

    async with trio.open_nursery() as inner:
        inner.start_soon(watch, inner.cancel_scope)
        await dp.start(nursery)
        inner.cancel_scope.cancel()
    if outcome == "killed":
        await dp.wait()
    return outcome


def save_log(soak: Soak, cycle: int, dp: harness.DaemonProcess) -> None:
    logs = soak.root / "logs"
    logs.mkdir(exist_ok=True)
    (logs / f"daemon-{cycle:03d}.log").write_bytes(bytes(dp.output))


async def after_kill(soak: Soak, cycle: int, dp: harness.DaemonProcess, phase: str) -> None:
    """Record where the kill landed: the runs in flight and the terraform groups orphaned."""
    soak.kill_times.append(trio.current_time())
    await dp.wait()
    soak.kills += 1
    save_log(soak, cycle, dp)
    snap: Snapshot = await trio.to_thread.run_sync(soak.store.run_sync, _load)
    in_flight = Counter(f"{r['status']}/{r['stage']}" if r["stage"] else r["status"]
                        for r in snap.runs.values() if r["status"] not in TERMINAL_NAMES)
    groups = {pgid for pgid, _ in processes_in(soak.runs_root, None).values()}
    soak.orphaned_groups += len(groups)
    soak.apply_kills += "applying/applying" in in_flight
    soak.landed.update({f"{phase}: {k}": v for k, v in in_flight.items()} or {f"{phase}: idle": 1})
    soak.cycles[-1].update(killed=phase, in_flight=dict(in_flight), orphaned_groups=len(groups))


async def cycle_once(soak: Soak, cycle: int, rng: random.Random, nursery: trio.Nursery) -> bool:
    """Start the daemon (maybe killing it during start-up), check, drive, kill. Returns
    False when the daemon could not be started (the soak cannot go on)."""
    final = cycle == soak.opts.kills
    dp = harness.DaemonProcess(soak.config)
    early = not final and cycle > 0 and rng.random() < soak.opts.startup_kill_rate
    kill_after = rng.uniform(0.2, 2.5) if early else None
    work = rng.uniform(soak.opts.min_work, soak.opts.max_work)
    aim = rng.uniform(0.1, 1.2) if rng.random() < soak.opts.aim_rate else None
    soak.cycles.append({"start": cycle})
    t_spawn = datetime.now(UTC)
    soak.current = dp
    try:
        how = await launch(dp, nursery, kill_after)
    except* trio.TooSlowError:
        how = "not listening after 60 s"
    if how == "killed":
        soak.startup_kills += 1
        await after_kill(soak, cycle, dp, "start-up")
        return True
    if how != "listening":
        if dp.proc is not None and dp.proc.returncode is None:
            dp.signal(signal.SIGKILL)
            await dp.wait()
        save_log(soak, cycle, dp)
        tail = bytes(dp.output[-2000:]).decode(errors="replace")
        soak.violate(cycle, "daemon_start", f"{how}; log tail:\n{tail}")
        return False
    t_listen = time.time()
    assert dp.proc is not None
    async with dp.client() as http:
        report = (await http.get("/api/v1/recovery")).json()["data"]
        soak.recovery["restarts"] += 1
        soak.recovery.update({k: len(v) for k, v in report.items()})
        soak.cycles[-1]["recovery"] = {k: len(v) for k, v in report.items() if v}
        await check(soak, cycle, t_spawn, t_listen, dp.proc.pid, quiet=False)
        if final:
            await finish(soak, cycle, dp, http)
            return True
        started = trio.current_time()
        outage = _pick_outage(soak, rng, work)
        async with trio.open_nursery() as clients:
            for w in WORKLOADS:
                own = random.Random(f"{soak.opts.seed}:{cycle}:{w.name}")
                clients.start_soon(drive, http, w, own, soak.tally, name=f"drive-{w.name}")
            if outage is not None:
                nursery.start_soon(storage_outage, soak, cycle, *outage)
            if aim is None:
                await trio.sleep(work)
            else:
                await aimed_wait(soak, aim, soak.opts.max_work)
            if dp.proc.returncode is not None:
                soak.violate(cycle, "daemon_exit", f"exit code {dp.proc.returncode}")
            dp.signal(signal.SIGKILL)
            clients.cancel_scope.cancel()
        soak.cycles[-1]["work_seconds"] = round(trio.current_time() - started, 2)
        soak.cycles[-1]["aimed"] = aim is not None
    await after_kill(soak, cycle, dp, "work")
    return True


def _pick_outage(soak: Soak, rng: random.Random, work: float) -> tuple[str, float, float] | None:
    """(fault, seconds into the work, how long) for a cycle with a storage outage, or None."""
    if not soak.faults or rng.random() >= soak.opts.outage_rate:
        return None
    if any(fault.active for fault in soak.faults.values()):
        return None  # the last one is not over yet
    return rng.choice(sorted(soak.faults)), rng.uniform(0.0, work), rng.uniform(2.0, 8.0)


async def storage_outage(soak: Soak, cycle: int, fault: str, after: float, seconds: float) -> None:
    """Storage fails `after` seconds into the work, for `seconds`: it may outlive the daemon it
    began under (the next start then waits for it)."""
    await trio.sleep(after)
    soak.outages[fault] += 1
    soak.cycles[-1].setdefault("outages", []).append(f"{fault} {seconds:.1f}s")
    await storagefaults.hold(soak.faults[fault], seconds)


async def aimed_wait(soak: Soak, after: float, budget: float) -> None:
    """Return `after` seconds after a terraform apply is first seen running, or once
    `budget` seconds are over."""
    with trio.move_on_after(budget):
        # Another process's database: there is no event to wait on, so poll.
        while not await trio.to_thread.run_sync(soak.store.run_sync, _applying):  # noqa: ASYNC110
            await trio.sleep(0.1)
        await trio.sleep(after)


def _applying(conn: Connection) -> bool:
    return conn.execute(select(runs.c.id).where(
        runs.c.status == "applying", runs.c.stage == "applying").limit(1)).first() is not None


async def finish(soak: Soak, cycle: int, dp: harness.DaemonProcess,
                 http: httpx.AsyncClient) -> None:
    """The last start: let every run finish (confirming waiting plans), check with nothing
    moving, then SIGTERM: exit 0 and no process left behind."""
    assert dp.proc is not None
    with trio.move_on_after(soak.opts.drain_timeout):
        while True:
            snap: Snapshot = await trio.to_thread.run_sync(soak.store.run_sync, _load)
            open_runs = [r for r in snap.runs.values() if r["status"] not in TERMINAL_NAMES]
            if not open_runs:
                break
            for run in open_runs:
                if run["status"] == "apply_pending":
                    confirm = http.post(f"/api/v1/runs/{run['id']}/actions/confirm")
                    await _request(soak.tally, confirm)
            await trio.sleep(0.5)
    snap = await trio.to_thread.run_sync(soak.store.run_sync, _load)
    for run in snap.runs.values():
        if run["status"] not in TERMINAL_NAMES:
            soak.violate(cycle, "stuck_at_end", _describe(run))
    if all(r["status"] in TERMINAL_NAMES for r in snap.runs.values()):
        await check(soak, cycle, datetime.now(UTC), time.time(), dp.proc.pid, quiet=True)
    dp.signal(signal.SIGTERM)
    try:
        code = await dp.wait(timeout=120)
    except trio.TooSlowError:
        code = None
    save_log(soak, cycle, dp)
    if code != 0:
        soak.violate(cycle, "shutdown", f"exit code {code}")
    for pid, (pgid, cmdline) in sorted(processes_in(soak.runs_root, None).items()):
        soak.violate(cycle, "leftover_process",
                     f"after shutdown: pid {pid} (group {pgid}) {cmdline}")


def kill_leftovers(runs_root: Path) -> None:
    """Only when the soak itself fails: the process groups working in our scratch data dir."""
    for pgid in {pgid for pgid, _ in processes_in(runs_root, None).values()}:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# ---- the soak --------------------------------------------------------------------------------


async def soak_in(opts: argparse.Namespace, root: Path) -> Soak:
    rng = random.Random(opts.seed)
    hooks, stop = Hooks(), trio.Event()
    async with trio.open_nursery() as nursery:
        hook_urls = await nursery.start(hooks.serve, stop)
        config = write_soak_config(root, hook_urls[0])
        soak = Soak(opts, root, config, harness.open_store(config))
        if opts.outage_rate > 0:
            soak.faults = _storage_faults(opts, config)
        started = time.monotonic()
        try:
            for cycle in range(opts.kills + 1):
                if not await cycle_once(soak, cycle, rng, nursery):
                    break
        finally:
            dp = soak.current
            if dp is not None and dp.proc is not None and dp.proc.returncode is None:
                dp.signal(signal.SIGKILL)  # the soak itself failed: leave nothing running
                kill_leftovers(soak.runs_root)
            soak.store.close()
            stop.set()
        soak.elapsed = round(time.monotonic() - started, 1)
        soak.received = len(hooks.received)
        soak.received_twice, unexplained = hooks.duplicates(soak.kill_times)
        for line in unexplained:
            soak.violate(opts.kills, "duplicate_delivery", line)
    return soak


def _storage_faults(opts: argparse.Namespace, config: Config) -> dict[str, Any]:
    """The faults an outage may be (needs root: chattr +i, a tmpfs)."""
    if os.geteuid() != 0:
        raise SystemExit("--outage-rate needs root (chattr +i on the database, a tmpfs)")
    db = config.daemon.data_dir / "tfward.db"
    found: dict[str, Any] = {
        "read_only": storagefaults.ReadOnlyDatabase(db),
        "locked": storagefaults.HeldWriteLock(db),
    }
    if opts.tmpfs_mb:
        found["disk_full"] = storagefaults.FullDisk(config.daemon.data_dir)
    return found


def totals(soak: Soak) -> dict[str, Any]:
    snap = Snapshot({}, {}, {}, {}, Counter(), [])
    if (soak.config.daemon.data_dir).is_dir():
        store = harness.open_store(soak.config)
        try:
            snap = store.run_sync(_load)
        finally:
            store.close()
    final = Counter(r["status"] + (f" ({r['error_kind']})" if r["error_kind"] else "")
                    for r in snap.runs.values())
    return {
        "kills": soak.kills,
        "kills_during_start_up": soak.startup_kills,
        "elapsed_seconds": soak.elapsed,
        "runs_created": len(snap.runs),
        "runs_by_operation": dict(Counter(r["operation"] for r in snap.runs.values())),
        "runs_by_final_status": dict(final.most_common()),
        "recovery": dict(soak.recovery),
        "kill_landed_during": dict(soak.landed.most_common()),
        "kills_with_an_apply_in_flight": soak.apply_kills,
        "storage_outages": dict(soak.outages),
        "terraform_groups_orphaned_by_kills": soak.orphaned_groups,
        "state_versions": dict(Counter(v["kind"] for vs in snap.versions.values() for v in vs)),
        "resources_at_end": {ws: len(ids) for ws, ids in snap.latest_ids.items()},
        "resources_checked": soak.resources_checked,
        "client": {"created": dict(soak.tally.created), "actions": dict(soak.tally.actions)},
        "notifications": {
            "outbox_final_rows": sum(snap.notify.values()),
            "received": soak.received,
            "received_twice": soak.received_twice,
        },
        "violations": {k: sum(1 for kind, _ in soak.violations if kind == k) for k in KINDS},
        "violation_details": [f"{k}: {d}" for k, d in soak.violations[:100]],
        "anomalies": soak.tally.anomalies,
        "ok": not soak.violations,
    }


def render(summary: dict[str, Any]) -> str:
    out = [f"chaos soak: {summary['kills']} kills ({summary['kills_during_start_up']} during "
           f"start-up) in {summary['elapsed_seconds']} s; {summary['runs_created']} runs "
           f"{summary['runs_by_operation']}"]
    out.append("\n" + table(["final run status", "runs"],
                            list(summary["runs_by_final_status"].items())))
    out.append("\n" + table(["recovery (sum over restarts)", "count"],
                            list(summary["recovery"].items())))
    out.append("\n" + table(["kill landed during (runs in flight)", "count"],
                            list(summary["kill_landed_during"].items())))
    out.append(f"kills with a terraform apply in flight: "
               f"{summary['kills_with_an_apply_in_flight']} of {summary['kills']}")
    out.append(f"storage outages beside the kills: {summary['storage_outages'] or 'none'}")
    n = summary["notifications"]
    out.append(f"\nterraform process groups orphaned by the kills: "
               f"{summary['terraform_groups_orphaned_by_kills']}; state versions "
               f"{summary['state_versions']}; resources at the end {summary['resources_at_end']} "
               f"(store files checked against the latest state: {summary['resources_checked']})")
    out.append(f"notifications: {n['outbox_final_rows']} final outbox rows, {n['received']} "
               f"received by the webhook, {n['received_twice']} received again after a kill "
               f"(at-least-once)")
    out.append("\n" + table(["invariant", "violations"],
                            [(f"{k}: {KINDS[k]}", v) for k, v in summary["violations"].items()]))
    for line in summary["violation_details"]:
        out.append(f"  ! {line}")
    if summary["anomalies"]:
        out.append(f"\nanomalies (not invariants) ({len(summary['anomalies'])}):")
        out += [f"  ? {a}" for a in summary["anomalies"][:30]]
    out.append(f"\n{'PASS' if summary['ok'] else 'FAIL'}: "
               f"{sum(summary['violations'].values())} invariant violations")
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=50, help="kill -9 this many times (50)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-work", type=float, default=0.5,
                        help="least seconds of work before a kill (0.5)")
    parser.add_argument("--max-work", type=float, default=6.0,
                        help="most seconds of work before a kill (6)")
    parser.add_argument("--aim-rate", type=float, default=0.4,
                        help="share of kills aimed at a running terraform apply (0.4)")
    parser.add_argument("--startup-kill-rate", type=float, default=0.1,
                        help="share of kills that land during start-up/recovery (0.1)")
    parser.add_argument("--outage-rate", type=float, default=0.0,
                        help="share of cycles with a storage outage of 2-8 s (0; needs root)")
    parser.add_argument("--tmpfs-mb", type=int, default=0,
                        help="put the data dir on a tmpfs of this size, so outages include a "
                        "full disk (0: not; needs root)")
    parser.add_argument("--drain-timeout", type=float, default=120.0,
                        help="seconds the last daemon gets to finish every run (120)")
    parser.add_argument("--json", action="store_true", help="also write bench/results/soak.json")
    parser.add_argument("--keep", action="store_true",
                        help="keep the scratch directory (kept anyway when an invariant fails)")
    parser.add_argument("--tmp", default=None, help="where to create the scratch directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="tfward-soak-", dir=opts.tmp))
    soak: Soak | None = None
    meter = LoadMeter()
    try:
        with contextlib.ExitStack() as stack:
            if opts.tmpfs_mb:  # a disk that can fill up, for the disk-full outages
                stack.enter_context(storagefaults.tmpfs(root / "data", opts.tmpfs_mb))
                stack.callback(_keep_data, root, lambda: opts.keep or soak is None or bool(
                    soak.violations))
            soak = trio.run(functools.partial(soak_in, opts, root))
            load = meter.stop()
            summary = totals(soak)
        print(render(summary))
        print(LoadMeter.describe(load))
        if opts.json:
            data = {"params": vars(opts), "summary": summary, "machine_load": load,
                    "cycles": soak.cycles}
            print(f"wrote {write_results('soak', data)}")
        return 0 if summary["ok"] else 1
    finally:
        if opts.keep or soak is None or soak.violations:
            print(f"(kept {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _keep_data(root: Path, keep: Callable[[], bool]) -> None:
    """Before the tmpfs goes: a copy of the data dir, when the scratch directory is kept."""
    if keep():
        shutil.copytree(root / "data", root / "data-kept", symlinks=True, dirs_exist_ok=True)


if __name__ == "__main__":
    raise SystemExit(main())
