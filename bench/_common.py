"""Shared bits of the benchmarks: the test harness, statistics, tables, JSON results.

The benchmarks drive the real daemon exactly as the tests do (tests/harness.py): the daemon
runs in this process's trio loop with a real SQLite file and real Hypercorn on 127.0.0.1:0,
and an httpx client talks to its HTTP API.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import harness  # noqa: E402, F401  (tests/harness.py; the benchmarks use it from here)
import storagefaults  # noqa: E402, F401  (tests/storagefaults.py: real storage faults, the soak)

TIMED_FAKE = BENCH / "fake_tf_timed.sh"


def check_timed_fake() -> None:
    if not os.access(TIMED_FAKE, os.X_OK):
        raise SystemExit(f"{TIMED_FAKE} is not executable (checked out without its mode?): "
                         f"chmod +x it")
    if not shutil.which("bash"):
        raise SystemExit("bench/fake_tf_timed.sh needs bash (5+, for $EPOCHREALTIME)")


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), like numpy's default."""
    if not samples:
        return math.nan
    xs = sorted(samples)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(samples: Sequence[float]) -> float:
    return percentile(samples, 50)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def environment() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=False).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--",
                                     "tfward"], capture_output=True, text=True,
                                    check=False).stdout.strip())
    except OSError:
        commit, dirty = "", False
    return {"python": platform.python_version(), "cpus": os.cpu_count(),
            "machine": platform.machine(), "commit": commit, "tfward_dirty": dirty,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


class LoadMeter:
    """CPU used on the whole machine by processes other than this one and its reaped children,
    from /proc/stat: other sessions' tests running at the same time skew the numbers."""

    def __init__(self) -> None:
        self.start_loadavg = os.getloadavg()
        self._t0 = time.time()
        self._busy0 = _machine_busy_seconds()
        self._own0 = _own_cpu_seconds()

    def stop(self) -> dict[str, Any]:
        wall = time.time() - self._t0
        busy = _machine_busy_seconds() - self._busy0
        own = _own_cpu_seconds() - self._own0
        others = max(0.0, busy - own)
        return {"wall_seconds": wall, "machine_busy_cpu_seconds": busy,
                "own_cpu_seconds": own, "others_cpu_seconds": others,
                "others_cores": others / wall if wall else 0.0,
                "loadavg_at_start": self.start_loadavg}

    @staticmethod
    def describe(load: dict[str, Any]) -> str:
        text = (f"machine: other processes used {load['others_cores']:.2f} of "
                f"{os.cpu_count()} cores on average during the benchmark "
                f"(load average at start {load['loadavg_at_start'][0]:.2f})")
        if load["others_cores"] > 0.2:
            text += " -- WARNING: the machine was busy, numbers are skewed"
        return text


def _machine_busy_seconds() -> float:
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(f) for f in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "environment": environment(), **data},
                               indent=2, sort_keys=False) + "\n")
    return path


@contextmanager
def workdir(keep: bool, base: str | None) -> Iterator[Path]:
    """A scratch directory for data dirs, workspace copies and bare runs."""
    root = Path(tempfile.mkdtemp(prefix="tfward-bench-", dir=base))
    try:
        yield root
    finally:
        if keep:
            print(f"(kept {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)


def add_common_args(parser: Any) -> None:
    parser.add_argument("--json", action="store_true",
                        help="also write the results to bench/results/<name>.json")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--tmp", default=None,
                        help="where to create the scratch directory (default: $TMPDIR or /tmp)")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"
