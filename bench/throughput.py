#!/usr/bin/env python3
"""Throughput: 50 concurrent runs with a fast fake terraform across 50 workspaces
(docs/architecture.md §12: throughput in runs/s, and no run stuck).

The daemon is a real `tfward serve` process; terraform is `bench/fake_tf_timed.sh` (init, plan
and show answered by bash at once; apply by tests/fakes/fake_terraform.py, which writes a real
state). All 50 `plan_and_apply` runs (auto_apply) are created at the same moment, one per
workspace, and each is long-polled until it ends. This is repeated for each
`max_concurrent_runs` in --limits (default: 4, the config's default, and 50, no limit), each
with a fresh daemon and data dir.

runs/s = runs / (first POST sent -> last run terminal). Per run: created -> finished from its
own timestamps. "No run stuck" is checked after the last run ended: every run is terminal and
applied, no workspace holds a lock, has a current run or queued runs, and no terraform process
of the daemon is left. The daemon's CPU use over the round is shown (from /proc/<pid>/stat).
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import trio
from _common import (
    TIMED_FAKE,
    LoadMeter,
    add_common_args,
    check_timed_fake,
    harness,
    percentile,
    table,
    verdict,
    workdir,
    write_results,
)
from _daemon import DaemonProcess, children, cpu_seconds, free_port, tf_env, top_functions

TERMINAL = ("planned_and_finished", "applied", "applied_state_error", "failed", "cancelled",
            "force_cancelled", "discarded")


def write_setup(root: Path, workspaces: int, limit: int) -> tuple[Path, str]:
    tables = []
    for i in range(workspaces):
        source = root / "ws" / f"w{i:02d}"
        source.mkdir(parents=True)
        (source / "main.tf").write_text('output "n" {\n  value = 1\n}\n')
        tables.append({"name": f"w{i:02d}", "source": str(source), "env": tf_env()})
    port = free_port()
    harness.write_config(root, tables, daemon={"listen": f"127.0.0.1:{port}",
                                               "max_concurrent_runs": limit},
                         terraform={"binary": str(TIMED_FAKE)})
    return root / "tfward.toml", f"http://127.0.0.1:{port}"


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


async def one_run(client: httpx.AsyncClient, ws: str, deadline: float,
                  runs: dict[str, dict[str, Any]]) -> None:
    response = await client.post(f"/api/v1/workspaces/{ws}/runs",
                                 json={"operation": "plan_and_apply", "auto_apply": True})
    response.raise_for_status()
    run = response.json()["data"]
    runs[ws] = run
    while run["status"] not in TERMINAL and time.monotonic() < deadline:
        wait = max(1.0, min(30.0, deadline - time.monotonic()))
        response = await client.get(f"/api/v1/runs/{run['id']}", timeout=wait + 10,
                                    params={"wait_status": ",".join(TERMINAL),
                                            "wait_timeout": wait})
        run = response.json()["data"]
        runs[ws] = run
    runs[ws]["_seen_terminal_at"] = time.perf_counter()


async def round_(daemon: DaemonProcess, workspaces: int, limit_s: float) -> dict[str, Any]:
    runs: dict[str, dict[str, Any]] = {}
    limits = httpx.Limits(max_connections=workspaces + 10, max_keepalive_connections=workspaces)
    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.headers, timeout=60,
                                 limits=limits) as client:
        cpu0 = cpu_seconds(daemon.pid)
        t0 = time.perf_counter()
        deadline = time.monotonic() + limit_s
        async with trio.open_nursery() as nursery:
            for i in range(workspaces):
                nursery.start_soon(one_run, client, f"w{i:02d}", deadline, runs)
        makespan = time.perf_counter() - t0
        cpu_used = cpu_seconds(daemon.pid) - cpu0
        await trio.sleep(0.5)  # the funnel's last steps are done before a run shows terminal
        check = await stuck_check(client, daemon, workspaces)
    durations = []
    for run in runs.values():
        created, finished = _ts(run["timestamps"]["created_at"]), _ts(
            run["timestamps"]["finished_at"])
        if created and finished:
            durations.append(finished - created)
    statuses: dict[str, int] = {}
    for run in runs.values():
        statuses[run["status"]] = statuses.get(run["status"], 0) + 1
    return {"runs": len(runs), "makespan_s": makespan, "runs_per_s": len(runs) / makespan,
            "daemon_cpu": cpu_used / makespan, "daemon_cpu_s_per_run": cpu_used / max(1, len(runs)),
            "run_seconds": durations, "statuses": statuses, **check}


async def stuck_check(client: httpx.AsyncClient, daemon: DaemonProcess,
                      workspaces: int) -> dict[str, Any]:
    """Every run terminal, no lock, no current or queued run, no terraform process left."""
    not_terminal, locked, busy = [], [], []
    for i in range(workspaces):
        ws = (await client.get(f"/api/v1/workspaces/w{i:02d}")).json()["data"]
        for run in (await client.get(f"/api/v1/workspaces/w{i:02d}/runs")).json()["data"]:
            if run["status"] not in TERMINAL:
                not_terminal.append(f"{run['id']} {run['status']} {run['stage']}")
        if ws["lock"]:
            locked.append(f"{ws['name']}: {ws['lock']['message']}")
        if ws["current_run"] or ws["queued_runs"]:
            busy.append(ws["name"])
    return {"not_terminal": not_terminal, "locked": locked, "busy": busy,
            "processes_left": children(daemon.pid)}


def run_limit(root: Path, args: argparse.Namespace, limit: int) -> dict[str, Any]:
    config, url = write_setup(root, args.workspaces, limit)
    profile = root / "daemon.prof" if args.profile else None
    daemon = DaemonProcess(config, url, root / "daemon.log", env=tf_env(), profile=profile)
    daemon.start()
    try:
        result = trio.run(round_, daemon, args.workspaces, args.limit_seconds)
    finally:
        daemon.stop()
    if profile:
        print(f"\ndaemon profile, max_concurrent_runs = {limit}, cumulative:\n"
              + top_functions(profile, 40))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspaces", type=int, default=50, help="= concurrent runs")
    parser.add_argument("--limits", default="4,50",
                        help="max_concurrent_runs values to run, comma-separated")
    parser.add_argument("--limit-seconds", type=float, default=300.0,
                        help="a run not terminal after this long counts as stuck")
    parser.add_argument("--profile", action="store_true", help="cProfile the daemon")
    add_common_args(parser)
    args = parser.parse_args()
    check_timed_fake()
    meter = LoadMeter()
    results: dict[str, Any] = {}
    with workdir(args.keep, args.tmp) as root:
        for limit in (int(x) for x in args.limits.split(",")):
            sub = root / f"limit-{limit}"
            sub.mkdir()
            results[str(limit)] = run_limit(sub, args, limit)
    rows = []
    for limit, r in results.items():
        stuck = len(r["not_terminal"]) + len(r["locked"]) + len(r["busy"]) + len(
            r["processes_left"])
        applied = r["statuses"].get("applied", 0)
        rows.append([f"max_concurrent_runs = {limit}", r["runs"], r["makespan_s"],
                     r["runs_per_s"], percentile(r["run_seconds"], 50),
                     percentile(r["run_seconds"], 95), max(r["run_seconds"], default=0.0),
                     f"{r['daemon_cpu'] * 100:.0f}%", r["daemon_cpu_s_per_run"] * 1000, applied,
                     stuck,
                     verdict(stuck == 0 and applied == r["runs"])])
    print(f"\n{args.workspaces} concurrent plan_and_apply runs (auto-apply), one per workspace, "
          "fast fake terraform; run times are created -> finished, in s")
    print(table(["", "runs", "makespan s", "runs/s", "run p50", "run p95", "run max",
                 "daemon CPU", "CPU ms/run", "applied", "stuck", "none stuck"], rows))
    for limit, r in results.items():
        for key in ("not_terminal", "locked", "busy", "processes_left"):
            if r[key]:
                print(f"limit {limit}: {key}: {r[key][:5]}")
    machine = meter.stop()
    print(LoadMeter.describe(machine))
    if args.json:
        path = write_results("throughput", {"parameters": vars(args), "results": results,
                                            "machine": machine})
        print(f"results: {path}")


if __name__ == "__main__":
    main()
