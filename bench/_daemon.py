"""The daemon as a real `tfward serve` process, for the scale benchmarks.

Unlike the other benchmarks (daemon and clients in one trio loop), these measure what an
operator sees: a separate process, its start-up until the API answers, its RSS, and its API
under load from another process (so the load generator does not share the daemon's GIL).

`--profile` runs the daemon under cProfile (`python -m cProfile -o FILE -m tfward.cli.main
serve ...`); the profile is written when it exits after SIGTERM, and `top_functions` prints it.
"""

from __future__ import annotations

import os
import pstats
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from _common import REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB) and Threads from /proc/<pid>/status."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            found[key] = int(value.split()[0])
    return found


def children(pid: int) -> list[str]:
    """Command lines of the live processes whose parent chain reaches `pid`."""
    parents: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(proc.name)] = int(fields[1])
    found = []
    for child in parents:
        up = parents.get(child)
        while up not in (None, 0, 1) and up != pid:
            up = parents.get(up)  # type: ignore[arg-type]
        if up == pid:
            try:
                found.append(Path(f"/proc/{child}/cmdline").read_bytes()
                              .replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
    return found


class DaemonProcess:
    """`tfward serve CONFIG` with its output in a file; `start` returns once /healthz answers."""

    def __init__(self, config: Path, url: str, log: Path, *, env: dict[str, str] | None = None,
                 profile: Path | None = None, log_level: str = "info") -> None:
        self.config, self.url, self.log = config, url, log
        self.env = {**os.environ, **(env or {})}
        self.profile, self.log_level = profile, log_level
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_cpu_s = 0.0  # the CPU time the daemon had used when it first answered

    @property
    def headers(self) -> dict[str, str]:
        """The API's Authorization header: the local admin token the daemon made at start."""
        from tfward.config import load_config

        data_dir = load_config(self.config).daemon.data_dir
        return {"Authorization": f"Bearer {(data_dir / 'admin.token').read_text().strip()}"}

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, limit: float = 120.0) -> float:
        """Spawn it; return the seconds from spawn until `GET /healthz` answered 200."""
        profiling = ["-m", "cProfile", "-o", str(self.profile)] if self.profile else []
        command = [sys.executable, *profiling, "-m", "tfward.cli.main", "serve",
                   str(self.config), "--log-level", self.log_level]
        out = open(self.log, "ab")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                     cwd=REPO, env=self.env, start_new_session=True)
        out.close()
        with httpx.Client(timeout=1.0) as client:
            while time.perf_counter() - t0 < limit:
                if self.proc.poll() is not None:
                    raise SystemExit(f"the daemon exited with {self.proc.returncode}; "
                                     f"see {self.log}:\n{self.log.read_text()[-3000:]}")
                try:
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        wall = time.perf_counter() - t0
                        self.start_cpu_s = cpu_seconds(self.proc.pid)
                        return wall
                except httpx.TransportError:
                    pass
                time.sleep(0.005)
        raise SystemExit(f"the daemon did not answer within {limit}s; see {self.log}")

    def stop(self, limit: float = 120.0) -> int:
        """SIGTERM (graceful shutdown), SIGKILL after `limit`; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(limit)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill9(self) -> None:
        """kill -9 the daemon alone (its terraform children live on, as after a crash)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


def top_functions(profile: Path, count: int = 25, sort: str = "cumulative") -> str:
    """The `count` most expensive functions of a cProfile file, as pstats prints them."""
    import io

    out = io.StringIO()
    stats = pstats.Stats(str(profile), stream=out)
    stats.strip_dirs().sort_stats(sort).print_stats(count)
    text = out.getvalue()
    return text[text.find("   ncalls"):] if "   ncalls" in text else text


def tf_env(extra: dict[str, Any] | None = None) -> dict[str, str]:
    """Environment for the fakes: which Python and which repository fake to run."""
    from _common import harness

    env = {"BENCH_PYTHON": sys.executable, "BENCH_FAKE_TF": str(harness.FAKE_TERRAFORM)}
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env
