#!/usr/bin/env python3
"""Several daemons on one PostgreSQL database (docs/architecture.md §15): runs/s and queue
latency with one daemon on SQLite, one daemon on PostgreSQL and three daemons on PostgreSQL.

Each setup gets --workspaces workspaces and a fast fake terraform (`bench/fake_tf_timed.sh`:
init, plan and show answered by bash at once, apply by tests/fakes/fake_terraform.py, which
writes a real state). The daemons are real `tfward serve` processes (PostgreSQL: the tests'
server from the pgserver wheel, tests/postgres.py; one fresh database per setup); with three,
the benchmark waits until the workspaces are spread over the three, then creates one
`plan_and_apply` run (auto-apply) per workspace at the same moment, round robin over the
daemons' APIs, and long-polls each run through the daemon it was given to (so a run driven by
another daemon is seen through the commits carried across daemons).

runs/s = runs / (first POST -> last run terminal). Queue latency = created_at -> started_at
of each run (the owner's actor started its pipeline), read from the run's own timestamps.
"""

from __future__ import annotations

import argparse
import secrets
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
from _daemon import DaemonProcess, free_port, tf_env

postgres = harness.postgres  # tests/postgres.py: the tests' PostgreSQL server

TERMINAL = ("planned_and_finished", "applied", "applied_state_error", "failed", "cancelled",
            "force_cancelled", "discarded")
SETUPS = {"sqlite-1": ("sqlite", 1), "postgresql-1": ("postgresql", 1),
          "postgresql-3": ("postgresql", 3)}


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def write_setup(root: Path, workspaces: int, database: str, size: int) -> list[DaemonProcess]:
    tables = []
    for i in range(workspaces):
        source = root / "ws" / f"w{i:02d}"
        source.mkdir(parents=True)
        (source / "main.tf").write_text('output "n" {\n  value = 1\n}\n')
        tables.append({"name": f"w{i:02d}", "source": str(source), "env": tf_env()})
    shared: dict[str, Any] = {"lease_renew": "1s", "lease_ttl": "6s", "self_fence_margin": "2s"}
    if database == "postgresql":
        key = root / "secret.key"
        key.write_bytes(secrets.token_bytes(32))
        key.chmod(0o600)
        shared |= {"database_url": postgres.fresh_database_url(), "secret_key_file": str(key)}
    daemons = []
    for n in range(size):
        home = root / f"node{n}"
        home.mkdir()
        port = free_port()
        harness.write_config(home, tables, daemon={"listen": f"127.0.0.1:{port}",
                                                   "node_id": f"node{n}", **shared},
                             terraform={"binary": str(TIMED_FAKE)})
        daemons.append(DaemonProcess(home / "tfward.toml", f"http://127.0.0.1:{port}",
                                     home / "daemon.log", env=tf_env()))
    return daemons


async def spread(client: httpx.AsyncClient, workspaces: int, size: int, limit: float) -> None:
    """Until every workspace is owned and no daemon owns more than its share."""
    share = -(-workspaces // size)
    with trio.fail_after(limit):
        while True:
            seen = (await client.get("/api/v1/cluster")).json()["data"]
            counts = [len(d["workspaces"]) for d in seen["daemons"] if d["live"]]
            if sum(counts) == workspaces and len(counts) == size and max(counts) <= share:
                return
            await trio.sleep(0.2)


async def one_run(client: httpx.AsyncClient, ws: str, deadline: float,
                  runs: dict[str, dict[str, Any]]) -> None:
    response = await client.post(f"/api/v1/workspaces/{ws}/runs",
                                 json={"operation": "plan_and_apply", "auto_apply": True})
    response.raise_for_status()
    run = response.json()["data"]
    while run["status"] not in TERMINAL and time.monotonic() < deadline:
        wait = max(1.0, min(30.0, deadline - time.monotonic()))
        response = await client.get(f"/api/v1/runs/{run['id']}", timeout=wait + 10,
                                    params={"wait_status": ",".join(TERMINAL),
                                            "wait_timeout": wait})
        run = response.json()["data"]
    runs[ws] = run


async def round_(daemons: list[DaemonProcess], workspaces: int, limit: float) -> dict[str, Any]:
    runs: dict[str, dict[str, Any]] = {}
    clients = [httpx.AsyncClient(base_url=d.url, headers=d.headers, timeout=60,
                                 limits=httpx.Limits(max_connections=workspaces + 10))
               for d in daemons]
    try:
        await spread(clients[0], workspaces, len(daemons), limit)
        t0 = time.perf_counter()
        deadline = time.monotonic() + limit
        async with trio.open_nursery() as nursery:
            for i in range(workspaces):
                nursery.start_soon(one_run, clients[i % len(clients)], f"w{i:02d}", deadline,
                                   runs)
        makespan = time.perf_counter() - t0
    finally:
        for client in clients:
            await client.aclose()
    queue = []
    for run in runs.values():
        created, started = (_ts(run["timestamps"]["created_at"]),
                            _ts(run["timestamps"]["started_at"]))
        if created and started:
            queue.append((started - created) * 1000)
    applied = sum(1 for run in runs.values() if run["status"] == "applied")
    return {"runs": len(runs), "makespan_s": makespan, "runs_per_s": len(runs) / makespan,
            "queue_ms": queue, "applied": applied}


def run_setup(root: Path, args: argparse.Namespace, database: str, size: int) -> dict[str, Any]:
    daemons = write_setup(root, args.workspaces, database, size)
    try:
        for daemon in daemons:
            daemon.start()
        return trio.run(round_, daemons, args.workspaces, args.limit_seconds)
    finally:
        for daemon in daemons:
            if daemon.proc is not None:
                daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspaces", type=int, default=30, help="= concurrent runs")
    parser.add_argument("--setups", default=",".join(SETUPS),
                        help=f"comma-separated, of {', '.join(SETUPS)}")
    parser.add_argument("--limit-seconds", type=float, default=300.0,
                        help="a run not terminal after this long counts as stuck")
    add_common_args(parser)
    args = parser.parse_args()
    check_timed_fake()
    meter = LoadMeter()
    results: dict[str, Any] = {}
    try:
        with workdir(args.keep, args.tmp) as root:
            for name in args.setups.split(","):
                sub = root / name
                sub.mkdir()
                results[name] = run_setup(sub, args, *SETUPS[name])
    finally:
        postgres.stop()
    rows = [[name, r["runs"], r["makespan_s"], r["runs_per_s"], percentile(r["queue_ms"], 50),
             percentile(r["queue_ms"], 99), r["applied"], verdict(r["applied"] == r["runs"])]
            for name, r in results.items()]
    print(f"\n{args.workspaces} concurrent plan_and_apply runs (auto-apply), one per workspace, "
          "fast fake terraform, given round robin to the daemons' APIs")
    print(table(["setup", "runs", "makespan s", "runs/s", "queue p50 ms", "queue p99 ms",
                 "applied", "all applied"], rows))
    machine = meter.stop()
    print(LoadMeter.describe(machine))
    if args.json:
        path = write_results("cluster", {"parameters": vars(args), "results": results,
                                         "machine": machine})
        print(f"results: {path}")


if __name__ == "__main__":
    main()
