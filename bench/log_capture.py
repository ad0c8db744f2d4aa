#!/usr/bin/env python3
"""Log capture: a plan that prints --mb MB of numbered lines, through tfward (docs/architecture.md
§12).

terraform is bench/fake_tf_timed.sh in "delegate" mode, set as `[terraform] binary`: it stamps
the start and end of each command and runs the repository's fake (tests/fakes/fake_terraform.py)
in between, whose `plan` is scripted (FAKE_TF_SCRIPT) to print `spam_bytes` of numbered lines
(`spam line 000000042 ......`, 95 bytes each) and then `spam done N lines`.

1. bare: the same fake `plan` with stdout to /dev/null (what terraform costs with nobody
   reading), and with stdout to a pipe drained by a plain 64 KiB read loop in another process
   (what any reader costs); --bare-repeats times each, the fastest counts.
2. daemon: one speculative `plan` run through the API. "terraform ran" is the plan process's
   own start..end (from the fake's stamps): if tfward reads the pipe too slowly, terraform
   blocks on its writes and runs longer, so capture MB/s = output bytes / that time, and the
   slowdown vs. bare /dev/null says whether tfward blocked terraform. End to end (POST sent ->
   run finished, i.e. everything stored) is reported too.
3. the stored log is read back with `GET /api/v1/runs/{id}/logs` (streamed) and checked: every
   line number 0..N-1 exactly once, in order, each line byte-exact, then the `spam done N`
   line.

MB = 10^6 bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio
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

TARGET_MBPS = 50.0
READER = ("import sys\nr = sys.stdin.buffer.raw\nn = 0\n"
          "while b := r.read(65536):\n    n += len(b)\nprint(n)\n")


def bare(args: argparse.Namespace, root: Path, script: Path) -> dict[str, Any]:
    env = {**os.environ, "FAKE_TF_SCRIPT": str(script)}
    cmd = [sys.executable, str(harness.FAKE_TERRAFORM), "plan", "-out=bare.tfplan"]
    devnull, piped = [], []
    for _ in range(args.bare_repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, check=False)
        devnull.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fake = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE)
        reader = subprocess.run([sys.executable, "-c", READER], stdin=fake.stdout,
                                capture_output=True, check=True)
        assert fake.stdout is not None
        fake.stdout.close()
        fake.wait()
        piped.append(time.perf_counter() - t0)
        size = int(reader.stdout)
    return {"devnull_seconds": min(devnull), "pipe_seconds": min(piped), "bytes": size,
            "devnull_all": devnull, "pipe_all": piped}


class Checker:
    """Streaming check of the log: spam lines numbered 0..N-1 once each, in order, exact."""

    def __init__(self) -> None:
        self.partial = b""
        self.expected = 0
        self.bad: list[str] = []
        self.done_count: int | None = None
        self.other_lines = 0
        self.bytes = 0
        self.spam_bytes = 0

    def feed(self, data: bytes) -> None:
        self.bytes += len(data)
        data = self.partial + data
        cut = data.rfind(b"\n") + 1
        self.partial = data[cut:]
        for line in data[:cut].split(b"\n")[:-1]:
            self.line(line)

    def line(self, line: bytes) -> None:
        if line.startswith(b"spam line "):
            self.spam_bytes += len(line) + 1
            try:
                n = int(line[10:19])
            except ValueError:
                n = -1
            if line != b"spam line %09d " % n + b"." * 64 or n != self.expected:
                if len(self.bad) < 10:
                    self.bad.append(f"expected line {self.expected}, got {line[:40]!r}")
                if n >= self.expected:
                    self.expected = n + 1
                return
            self.expected += 1
        elif line.startswith(b"spam done "):
            self.spam_bytes += len(line) + 1
            self.done_count = int(line.split()[2])
        else:
            self.other_lines += 1

    def finish(self) -> None:
        if self.partial:
            self.line(self.partial)
            self.partial = b""

    @property
    def ok(self) -> bool:
        return not self.bad and self.done_count == self.expected


async def through_daemon(args: argparse.Namespace, root: Path, script: Path) -> dict[str, Any]:
    check_timed_fake()
    times = root / "tf-times.txt"
    table_ = harness.demo_workspace(root, "logs", things=1)
    table_["env"] = {**table_["env"], "BENCH_TF_TIMES": str(times), "BENCH_TF_MODE": "delegate",
                     "BENCH_PYTHON": sys.executable, "BENCH_FAKE_TF": str(harness.FAKE_TERRAFORM),
                     "FAKE_TF_SCRIPT": str(script)}
    config = harness.write_config(root, [table_], terraform={"binary": str(TIMED_FAKE)})
    async with harness.running_daemon(config) as (daemon, api):
        t0 = time.time()
        run = await api.create_run("logs", operation="plan")
        run = await api.wait(run["id"], "planned_and_finished", timeout=args.timeout)
        t1 = time.time()
        checker = Checker()
        r0 = time.perf_counter()
        async with api.http.stream("GET", f"/api/v1/runs/{run['id']}/logs",
                                   timeout=args.timeout) as response:
            if response.status_code != 200:
                raise SystemExit(f"GET logs: {response.status_code}")
            async for data in response.aiter_bytes():
                checker.feed(data)
        checker.finish()
        read_seconds = time.perf_counter() - r0
    stamps: dict[str, dict[str, float]] = {}
    for line in times.read_text().splitlines():
        kind, ts, command, _rest = line.split(" ", 3)
        stamps.setdefault(command, {})[kind] = float(ts)
    plan = stamps["plan"]
    return {"run_id": run["id"], "status": run["status"], "post_to_finished": t1 - t0,
            "terraform_plan_seconds": plan["end"] - plan["start"],
            "log_bytes": checker.bytes, "plan_output_bytes": checker.spam_bytes,
            "lines": checker.expected, "done_count": checker.done_count,
            "other_lines": checker.other_lines, "errors": checker.bad, "complete": checker.ok,
            "read_back_seconds": read_seconds,
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def report(args: argparse.Namespace, b: dict[str, Any], d: dict[str, Any]) -> dict[str, Any]:
    mb = d["plan_output_bytes"] / 1e6
    capture = mb / d["terraform_plan_seconds"]
    bare_devnull = b["bytes"] / 1e6 / b["devnull_seconds"]
    bare_pipe = b["bytes"] / 1e6 / b["pipe_seconds"]
    end_to_end = mb / d["post_to_finished"]
    rows = [
        ["bare: fake plan > /dev/null", b["devnull_seconds"], bare_devnull, 1.0],
        ["bare: fake plan | 64 KiB reader", b["pipe_seconds"], bare_pipe,
         b["pipe_seconds"] / b["devnull_seconds"]],
        ["daemon: terraform plan ran", d["terraform_plan_seconds"], capture,
         d["terraform_plan_seconds"] / b["devnull_seconds"]],
        ["daemon: POST -> run finished", d["post_to_finished"], end_to_end,
         d["post_to_finished"] / b["devnull_seconds"]],
        ["GET /logs read back + check", d["read_back_seconds"], d["log_bytes"] / 1e6 /
         d["read_back_seconds"], ""],
    ]
    ok_rate = capture >= TARGET_MBPS
    print()
    print(f"log_capture: {mb:.1f} MB of plan output ({d['lines']} numbered lines), "
          f"speculative plan run {d['run_id']} -> {d['status']}")
    print(table(["", "seconds", "MB/s", "x bare /dev/null time"], rows))
    print(f"capture {capture:.1f} MB/s, target >= {TARGET_MBPS:.0f} MB/s: {verdict(ok_rate)}; "
          f"terraform ran {d['terraform_plan_seconds'] / b['devnull_seconds']:.2f}x its "
          f"/dev/null time ({capture / bare_devnull:.2f}x the bare rate)")
    lines_ok = d["complete"]
    print(f"lines: {d['lines']} in order, 'spam done {d['done_count']}' "
          f"-> {verdict(lines_ok)}" + ("" if lines_ok else f"; first problems: {d['errors']}"))
    print(f"stored log {d['log_bytes'] / 1e6:.1f} MB ({d['other_lines']} other lines); "
          f"peak RSS of daemon+client process {d['max_rss_mb']:.0f} MB")
    return {"capture_mbps": capture, "bare_devnull_mbps": bare_devnull, "bare_pipe_mbps": bare_pipe,
            "end_to_end_mbps": end_to_end, "slowdown_vs_devnull": d["terraform_plan_seconds"] /
            b["devnull_seconds"], "rate_ratio_vs_devnull": capture / bare_devnull,
            "lines_complete": lines_ok, "target_mbps": TARGET_MBPS,
            "pass": ok_rate and lines_ok}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=200, help="plan output, MB (200)")
    parser.add_argument("--bare-repeats", type=int, default=2, help="bare timings, best of (2)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds")
    add_common_args(parser)
    args = parser.parse_args()
    meter = LoadMeter()
    with workdir(args.keep, args.tmp) as root:
        script = root / "fake-script.json"
        script.write_text(json.dumps({"plan": {"spam_bytes": int(args.mb * 1e6)}}))
        print(f"bare runs of the fake ({args.mb:g} MB, best of {args.bare_repeats})...", flush=True)
        b = bare(args, root, script)
        print("through the daemon...", flush=True)
        d = trio.run(through_daemon, args, root, script)
    load = meter.stop()
    summary = report(args, b, d)
    print(LoadMeter.describe(load))
    if args.json:
        path = write_results("log_capture", {"params": vars(args), "summary": summary,
                                             "machine_load": load, "bare": b, "daemon": d})
        print(f"wrote {path}")
    if not d["complete"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
