#!/usr/bin/env python3
"""Queue latency with free capacity: run created (POST answered) -> terraform started
(docs/architecture.md §12).

terraform is bench/fake_tf_timed.sh, set as `[terraform] binary`: its first action is to
append `$EPOCHREALTIME` (bash builtin, microseconds, no fork) with its command and working
directory (the run directory, named after the run id) to a file. "terraform started" for a run
is the earliest such line of that run: `init` for the first run of a workspace, `plan` for the
later ones (the daemon reuses the kept init). The fake answers init/plan/show at once, so the
machine is not loaded by fake work. What is measured therefore includes bash's own start-up
(~1-2 ms) on top of the daemon's work: create row -> actor -> run task -> log open -> stage
transitions -> configuration snapshot -> run directory -> init restore -> spawn.

Load: W workspaces (default 4, = the default max_concurrent_runs, so no run ever waits for the
process limit), one client loop per workspace, each creating its next run only after the last
one finished, alternating speculative `plan` runs and non-speculative `plan_and_apply` runs
with auto_apply (so a non-speculative run never queues behind another in its workspace:
capacity is free for every run). At most W runs are in flight. A random pause (0..--pause s)
between a client's runs keeps the loops out of step. The first --warmup runs of each client are
not counted.

A client waits for its run to end with the API's long-poll (`--wait longpoll`, the default, as
tests/harness.py `Api.wait` does) or with a plain GET every --poll-interval (`--wait poll`).

The daemon is a real `tfward serve` process (bench/_daemon.py), as an operator runs it: the
clients in this process do not share its GIL, and its own CPU time per run is read from
/proc/<pid>/stat. Its database calls per run are counted from a cProfile of the daemon with
`--count-db` (the profiler slows it: the latencies of such a run are not the daemon's). With
`--in-process` the daemon runs in this process's trio loop instead, next to the clients, as in
the tests; its `Store.read`/`Store.write` are then counted directly, and the CPU reported is the
whole process's (daemon and clients).

Times are wall-clock (time.time() in this process, $EPOCHREALTIME in the fake: same clock).
"""

from __future__ import annotations

import argparse
import os
import pstats
import random
import resource
import sys
import time
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
from _daemon import DaemonProcess, cpu_seconds, free_port, tf_env

TARGET_P99_MS = 50.0


def _setup(args: argparse.Namespace, root: Path, times: Path,
           listen: str | None = None) -> Any:
    tables = []
    for w in range(args.workspaces):
        t = harness.demo_workspace(root, f"ws{w}", things=1)
        t["env"] = {**t["env"], "BENCH_TF_TIMES": str(times), "BENCH_PYTHON": sys.executable,
                    "BENCH_FAKE_TF": str(harness.FAKE_TERRAFORM)}
        tables.append(t)
    daemon = {"max_concurrent_runs": args.max_concurrent, **({"listen": listen} if listen else {})}
    return harness.write_config(root, tables, terraform={"binary": str(TIMED_FAKE)},
                                daemon=daemon)


async def clients(args: argparse.Namespace, api: harness.Api) -> list[dict[str, Any]]:
    """One loop per workspace, each creating its next run once the last one ended."""
    per_client = -(-args.runs // args.workspaces)
    samples: list[dict[str, Any]] = []
    rng = random.Random(args.seed)

    async def wait(run_id: str, final: str) -> None:
        if args.wait == "longpoll":
            await api.wait(run_id, final, timeout=args.timeout)
            return
        with trio.fail_after(args.timeout):
            while True:
                run = await api.run(run_id)
                if run["status"] == final:
                    return
                if run["timestamps"]["finished_at"]:
                    raise SystemExit(f"run {run_id} ended {run['status']}: "
                                     f"{run['error_message']}")
                await trio.sleep(args.poll_interval)

    async def client(w: int) -> None:
        name = f"ws{w}"
        for k in range(per_client + args.warmup):
            speculative = (k + w) % 2 == 0
            body = {"operation": "plan"} if speculative else \
                {"operation": "plan_and_apply", "auto_apply": True}
            sent = time.time()
            response = await api.http.post(f"/api/v1/workspaces/{name}/runs", json=body)
            received = time.time()
            if response.status_code != 201:
                raise SystemExit(f"POST failed: {response.status_code} {response.text}")
            run = response.json()["data"]
            final = "planned_and_finished" if speculative else "applied"
            await wait(run["id"], final)
            if k >= args.warmup:
                samples.append({"run_id": run["id"], "workspace": name, "speculative":
                                speculative, "sent": sent, "received": received, "k": k})
            await trio.sleep(rng.uniform(0, args.pause))

    async with trio.open_nursery() as nursery:
        for w in range(args.workspaces):
            nursery.start_soon(client, w)
    return samples


async def in_process(args: argparse.Namespace, root: Path, times: Path) -> dict[str, Any]:
    """The daemon in this trio loop; its database calls counted by wrapping its store."""
    counts = {"db_reads": 0, "db_writes": 0}
    async with harness.running_daemon(_setup(args, root, times)) as (daemon, api):
        store = daemon.store
        real_read, real_write = store.read, store.write

        async def counted_read(fn: Any, **kwargs: Any) -> Any:
            counts["db_reads"] += 1
            return await real_read(fn, **kwargs)

        async def counted_write(fn: Any, **kwargs: Any) -> Any:
            counts["db_writes"] += 1
            return await real_write(fn, **kwargs)

        store.read, store.write = counted_read, counted_write  # type: ignore[method-assign]
        started = time.perf_counter()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        samples = await clients(args, api)
        elapsed = time.perf_counter() - started
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        store.read, store.write = real_read, real_write  # type: ignore[method-assign]
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    return {"samples": samples, "elapsed": elapsed, "cpu_seconds": cpu, **counts}


async def _against(daemon: DaemonProcess, args: argparse.Namespace) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.headers,
                                 timeout=args.timeout + 10) as http:
        started = time.perf_counter()
        cpu0 = cpu_seconds(daemon.pid)
        samples = await clients(args, harness.Api(http))
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(daemon.pid) - cpu0
    return {"samples": samples, "elapsed": elapsed, "cpu_seconds": cpu}


def as_process(args: argparse.Namespace, root: Path, times: Path) -> dict[str, Any]:
    """The daemon as its own process; with --count-db under cProfile, whose call counts of
    `Store.read`/`Store.write` are its database calls."""
    port = free_port()
    config = _setup(args, root, times, listen=f"127.0.0.1:{port}")
    profile = root / "daemon.prof" if args.count_db else None
    daemon = DaemonProcess(config.path, f"http://127.0.0.1:{port}", root / "daemon.log",
                           env=tf_env(), profile=profile)
    daemon.start()
    try:
        result = trio.run(_against, daemon, args)
    finally:
        daemon.stop()
    if profile is not None:
        result.update(store_calls(profile))
    return result


def store_calls(profile: Path) -> dict[str, int]:
    """`Store.read` and `Store.write` calls in a cProfile of the daemon (the whole run).

    cProfile counts every resumption of a coroutine as a call, so the coroutines' own counts
    are inflated (a write resumes about four times); each read and write calls the plain
    function `Store._patience` exactly once, and its callers' counts are the calls."""
    found = {"db_reads": 0, "db_writes": 0}
    table = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    for (filename, _line, name), stats in table.items():
        if filename.endswith("tfward/store/db.py") and name == "_patience":
            for (_file, _l, caller), (_cc, calls, *_rest) in stats[4].items():
                if caller in ("read", "write"):
                    found["db_reads" if caller == "read" else "db_writes"] += calls
    return found


def bench(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    check_timed_fake()
    times = root / "tf-starts.txt"
    raw = (trio.run(in_process, args, root, times) if args.in_process
           else as_process(args, root, times))
    samples = raw.pop("samples")
    total_runs = args.workspaces * (-(-args.runs // args.workspaces) + args.warmup)
    first: dict[str, tuple[float, str]] = {}
    for line in times.read_text().splitlines():
        kind, ts, command, _pid, cwd = line.split(" ", 4)
        if kind != "start":
            continue
        run_id = os.path.basename(cwd)
        if run_id not in first or float(ts) < first[run_id][0]:
            first[run_id] = (float(ts), command)
    for s in samples:
        ts, command = first[s["run_id"]]
        s["first_command"] = command
        s["latency_ms"] = (ts - s["received"]) * 1000
        s["from_sent_ms"] = (ts - s["sent"]) * 1000
        s["post_ms"] = (s["received"] - s["sent"]) * 1000
    counted = {f"{k}_per_run": raw.pop(k) / total_runs for k in ("db_reads", "db_writes")
               if k in raw}
    return {"samples": samples[: args.runs], "runs_started": total_runs, **raw, **counted}


def _dist(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "max": max(values), "min": min(values)}


def report(args: argparse.Namespace, raw: dict[str, Any]) -> dict[str, Any]:
    samples = raw["samples"]
    groups = {
        "all runs": samples,
        "speculative plan": [s for s in samples if s["speculative"]],
        "plan_and_apply (auto)": [s for s in samples if not s["speculative"]],
    }
    dists = {name: _dist([s["latency_ms"] for s in group])
             for name, group in groups.items() if group}
    sent = _dist([s["from_sent_ms"] for s in samples])
    post = _dist([s["post_ms"] for s in samples])
    shown = [*dists.items(), ("(from POST sent, all)", sent), ("(POST round trip, all)", post)]
    rows = [[name, d["n"], d["p50"], d["p95"], d["p99"], d["max"]] for name, d in shown]
    p99 = dists["all runs"]["p99"]
    negative = sum(1 for s in samples if s["latency_ms"] < 0)
    print()
    print(f"queue_latency: {len(samples)} runs over {args.workspaces} workspaces, clients wait "
          f"by {args.wait}; POST answered -> terraform started, milliseconds")
    print(table(["", "n", "p50", "p95", "p99", "max"], rows))
    print(f"p99 {p99:.1f} ms, target < {TARGET_P99_MS:.0f} ms: {verdict(p99 < TARGET_P99_MS)}"
          + (f"  ({negative} runs had terraform start before the POST's answer arrived)"
             if negative else ""))
    cpu = raw["cpu_seconds"]
    who = "daemon+clients process" if args.in_process else "daemon process"
    line = (f"load: {raw['runs_started']} runs in {raw['elapsed']:.1f}s; {who} CPU {cpu:.1f}s "
            f"({100 * cpu / raw['elapsed']:.0f}% of one core), "
            f"{1000 * cpu / raw['runs_started']:.1f} ms per run")
    if "db_writes_per_run" in raw:
        line += (f"; per run {raw['db_writes_per_run']:.1f} DB writes, "
                 f"{raw['db_reads_per_run']:.1f} DB reads")
    print(line)
    return {"latency_ms": dists, "from_post_sent_ms": sent, "post_round_trip_ms": post,
            "target_p99_ms": TARGET_P99_MS, "pass": p99 < TARGET_P99_MS,
            "first_commands": sorted({s["first_command"] for s in samples})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", "-n", type=int, default=200, help="measured runs (200)")
    parser.add_argument("--workspaces", "-w", type=int, default=4,
                        help="workspaces = concurrent clients (4)")
    parser.add_argument("--max-concurrent", type=int, default=4,
                        help="[daemon] max_concurrent_runs (4, the default)")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted runs per client (1)")
    parser.add_argument("--pause", type=float, default=0.02,
                        help="max random pause between a client's runs, seconds (0.02)")
    parser.add_argument("--wait", choices=("longpoll", "poll"), default="longpoll",
                        help="how clients wait for their runs (longpoll)")
    parser.add_argument("--poll-interval", type=float, default=0.1,
                        help="seconds between GETs with --wait poll (0.1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60, help="per run, seconds")
    parser.add_argument("--in-process", action="store_true",
                        help="run the daemon in this process's trio loop, next to the clients "
                             "(and count its database calls directly)")
    parser.add_argument("--count-db", action="store_true",
                        help="count the daemon process's database calls (under cProfile: "
                             "its latencies are then not the daemon's)")
    add_common_args(parser)
    args = parser.parse_args()
    meter = LoadMeter()
    with workdir(args.keep, args.tmp) as root:
        raw = bench(args, root)
    load = meter.stop()
    summary = report(args, raw)
    print(LoadMeter.describe(load))
    if args.json:
        path = write_results("queue_latency", {"params": vars(args), "summary": summary,
                                               "machine_load": load, "raw": raw})
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
