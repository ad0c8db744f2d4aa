#!/usr/bin/env python3
"""1,000 configured workspaces: start-up incl. recovery, and idle RSS (docs/architecture.md §12).

Targets: start-up + recovery < 3 s, idle RSS < 200 MB.

A config with N workspaces (default 1,000), each with its own tiny source directory, and
`bench/fake_tf_timed.sh` as terraform. A real `tfward serve` process is started and timed
from spawn until `GET /healthz` answers 200 (the daemon listens only after recovery, every
workspace actor and the API are up). RSS is read from /proc/<pid>/status after the daemon has
been idle for --settle seconds. Three starts, one after another, on the same data dir:

1. first start: an empty data dir (migrations, N workspace rows created);
2. restart: after a graceful stop, nothing to recover;
3. restart after kill -9: before the kill, --pending-apply runs waited in apply_pending (fast
   fake plans) and --in-flight runs had been created with a plan that sleeps (so
   max_concurrent_runs of them were planning and the rest pending); the daemon is killed with
   SIGKILL (its terraform children live on) and started again. Recovery re-queues the planning
   runs, checks every apply_pending run's plan, kills the leftover terraform process groups.
   The recovery report (`GET /api/v1/recovery`) is printed.

Also shown: the interpreter + import time of `tfward serve` alone (what any start costs before
the daemon does anything), and the time of `GET /api/v1/workspaces` listing all N.
`--profile` profiles the first start in-process (cProfile) and prints the top functions.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from _common import (
    TIMED_FAKE,
    LoadMeter,
    add_common_args,
    check_timed_fake,
    harness,
    table,
    verdict,
    workdir,
    write_results,
)
from _daemon import DaemonProcess, free_port, proc_status, tf_env

TARGET_START_S = 3.0
TARGET_RSS_MB = 200.0
TINY_TF = 'variable "n" {\n  default = 1\n}\n\noutput "n" {\n  value = var.n\n}\n'


def write_workspaces(root: Path, count: int, slow: range) -> Path:
    """N workspaces, each with its own source directory; those in `slow` plan for minutes
    (the fake delegates to tests/fakes/fake_terraform.py, whose script sleeps)."""
    script = root / "slow-plan.json"
    script.write_text(json.dumps({"plan": {"sleep": 600}}))
    tables: list[dict[str, Any]] = []
    for i in range(count):
        source = root / "ws" / f"ws-{i:04d}"
        source.mkdir(parents=True)
        (source / "main.tf").write_text(TINY_TF)
        tables.append({"name": f"ws-{i:04d}", "source": str(source)})
        if i in slow:
            tables[-1]["env"] = {"BENCH_TF_MODE": "delegate", "FAKE_TF_SCRIPT": str(script)}
    harness.write_config(root, tables, daemon={"listen": f"127.0.0.1:{free_port()}"},
                         terraform={"binary": str(TIMED_FAKE)})
    return root / "tfward.toml"


def import_time() -> tuple[float, float]:
    """Interpreter start + importing what `tfward serve` imports: (wall, CPU) s, best of 3."""
    best = (float("inf"), float("inf"))
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import tfward.cli.main, tfward.daemon.service"],
                       check=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        best = min(best, (wall, cpu))
    return best


def settle_and_measure(daemon: DaemonProcess, settle: float) -> dict[str, Any]:
    time.sleep(settle)
    status = proc_status(daemon.pid)
    with httpx.Client(base_url=daemon.url, headers=daemon.headers, timeout=60) as client:
        t0 = time.perf_counter()
        listed = client.get("/api/v1/workspaces")
        list_s = time.perf_counter() - t0
    listed.raise_for_status()
    return {"rss_mb": status["VmRSS"] / 1024, "hwm_mb": status["VmHWM"] / 1024,
            "threads": status["Threads"], "list_workspaces_s": list_s,
            "listed": len(listed.json()["data"])}


def make_runs_in_flight(daemon: DaemonProcess, count: int, pending_apply: int,
                        in_flight: int, limit: float) -> dict[str, int]:
    """apply_pending runs in the first workspaces, then sleeping plans in the next ones."""
    with httpx.Client(base_url=daemon.url, headers=daemon.headers, timeout=60) as client:
        def create(i: int) -> str:
            response = client.post(f"/api/v1/workspaces/ws-{i:04d}/runs",
                                   json={"operation": "plan_and_apply"})
            response.raise_for_status()
            return str(response.json()["data"]["id"])

        def wait(run_id: str, status: str) -> None:
            deadline = time.monotonic() + limit
            while time.monotonic() < deadline:
                run = client.get(f"/api/v1/runs/{run_id}",
                                 params={"wait_status": status, "wait_timeout": 30}).json()["data"]
                if run["status"] == status:
                    return
                if run["timestamps"]["finished_at"]:
                    raise SystemExit(f"run {run_id} ended {run['status']}: {run['error_message']}")
            raise SystemExit(f"run {run_id} not {status} after {limit}s")

        fast = [create(i) for i in range(pending_apply)]
        for run_id in fast:
            wait(run_id, "apply_pending")
        slow = [create(i) for i in range(pending_apply, pending_apply + in_flight)]
        for run_id in slow[:4]:
            wait(run_id, "planning")
        time.sleep(1.0)  # let the planning runs' terraform start and be recorded
        counts: dict[str, int] = {}
        for run_id in fast + slow:
            status = client.get(f"/api/v1/runs/{run_id}").json()["data"]["status"]
            counts[status] = counts.get(status, 0) + 1
        return counts


def profile_start(config_path: Path) -> str:
    """Start the daemon in-process under cProfile until it listens; the top functions."""
    import cProfile
    import io
    import pstats

    import trio

    from tfward.config import load_config
    from tfward.daemon.service import Daemon

    async def start_and_stop() -> None:
        daemon = Daemon(load_config(config_path))
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.serve)
            daemon.request_shutdown("profile done")

    profiler = cProfile.Profile()
    profiler.enable()
    trio.run(start_and_stop)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("cumulative").print_stats(30)
    return out.getvalue()


def bench(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    check_timed_fake()
    slow = range(args.pending_apply, args.pending_apply + args.in_flight)
    config = write_workspaces(root, args.workspaces, slow)
    if args.profile:
        print(profile_start(config))
        return {}
    listen = next(line for line in config.read_text().splitlines() if line.startswith("listen"))
    url = "http://" + listen.split('"')[1]

    import_s, import_cpu_s = import_time()
    results: dict[str, Any] = {"import_s": import_s, "import_cpu_s": import_cpu_s}
    log = root / "daemon.log"
    daemon = DaemonProcess(config, url, log, env=tf_env())
    results["first_start_s"] = daemon.start()
    results["first_start_cpu_s"] = daemon.start_cpu_s
    results["first"] = settle_and_measure(daemon, args.settle)
    daemon.stop()

    results["restart_s"] = daemon.start()
    results["restart_cpu_s"] = daemon.start_cpu_s
    results["restart"] = settle_and_measure(daemon, args.settle)
    results["before_kill"] = make_runs_in_flight(daemon, args.workspaces, args.pending_apply,
                                                 args.in_flight, limit=120)
    daemon.kill9()

    results["recovery_start_s"] = daemon.start()
    results["recovery_start_cpu_s"] = daemon.start_cpu_s
    with httpx.Client(base_url=url, headers=daemon.headers, timeout=30) as client:
        results["recovery_report"] = client.get("/api/v1/recovery").json()["data"]
    results["after_recovery"] = settle_and_measure(daemon, args.settle)
    daemon.stop()
    return results


def report(args: argparse.Namespace, r: dict[str, Any]) -> None:
    n = args.workspaces
    rows = [
        ["python + imports of `tfward serve` (best of 3)", r["import_s"], r["import_cpu_s"],
         "-", "-", "-", ""],
        [f"first start, empty data dir ({n} workspaces)", r["first_start_s"],
         r["first_start_cpu_s"],
         r["first"]["rss_mb"], r["first"]["hwm_mb"], r["first"]["threads"],
         verdict(r["first_start_s"] < TARGET_START_S and r["first"]["rss_mb"] < TARGET_RSS_MB)],
        ["restart after graceful stop", r["restart_s"], r["restart_cpu_s"],
         r["restart"]["rss_mb"],
         r["restart"]["hwm_mb"], r["restart"]["threads"],
         verdict(r["restart_s"] < TARGET_START_S and r["restart"]["rss_mb"] < TARGET_RSS_MB)],
        [f"restart after kill -9 ({args.pending_apply} apply_pending, {args.in_flight} "
         "in flight)", r["recovery_start_s"], r["recovery_start_cpu_s"],
         r["after_recovery"]["rss_mb"],
         r["after_recovery"]["hwm_mb"], r["after_recovery"]["threads"],
         verdict(r["recovery_start_s"] < TARGET_START_S)],
    ]
    print(f"\n1,000-workspace scale: {n} workspaces; start = spawn -> GET /healthz 200; "
          f"RSS after {args.settle:.0f} s idle")
    print(table(["", "start s", "CPU s", "RSS MB", "peak MB", "threads", "target"], rows))
    print("CPU s = the daemon's own CPU time when it first answered (less sensitive to a busy "
          "machine than the wall time)")
    print(f"targets: start-up incl. recovery < {TARGET_START_S:.0f} s, idle RSS < "
          f"{TARGET_RSS_MB:.0f} MB (the kill -9 row is not idle: its pending runs start again)")
    print(f"runs before the kill -9: {r['before_kill']}")
    counts = {k: len(v) if isinstance(v, list) else v for k, v in r["recovery_report"].items()}
    print(f"recovery report (counts): {json.dumps(counts, sort_keys=True)}")
    lists = [r[k]["list_workspaces_s"] for k in ("first", "restart", "after_recovery")]
    print(f"GET /api/v1/workspaces ({r['first']['listed']} workspaces): "
          + ", ".join(f"{s * 1000:.0f} ms" for s in lists))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--workspaces", type=int, default=1000)
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds before RSS")
    parser.add_argument("--pending-apply", type=int, default=20)
    parser.add_argument("--in-flight", type=int, default=20)
    parser.add_argument("--profile", action="store_true",
                        help="profile the first start in-process and print the top functions")
    add_common_args(parser)
    args = parser.parse_args()
    load = LoadMeter()
    with workdir(args.keep, args.tmp) as root:
        results = bench(args, root)
    if args.profile:
        return
    report(args, results)
    machine = load.stop()
    print(LoadMeter.describe(machine))
    if args.json:
        path = write_results("scale_workspaces", {"parameters": vars(args), "results": results,
                                                  "machine": machine})
        print(f"results: {path}")


if __name__ == "__main__":
    main()
