#!/usr/bin/env python3
"""API latency: `GET /api/v1/runs/{id}` at a fixed 500 req/s while 20 runs stream logs
(docs/architecture.md §12: p99 < 10 ms; CPU per GET <= 1.8x a bare ASGI handler's).

The daemon is a real `tfward serve` process; this process is the load. terraform is
`bench/fake_tf_steady.py`: its `plan` prints an ~80-byte line every 50 ms (20 lines/s per run)
for the whole measurement, then hands over to tests/fakes/fake_terraform.py.

0. the floor: `bench/bare_asgi.py`, a bare ASGI handler on Hypercorn/trio answering with the
   bytes of the daemon's answer, runs beside the daemon. CPU per keep-alive GET, one request at
   a time (--sequential requests, in --rounds alternating between the two servers), from
   /proc/<pid>/stat of each: the ratio daemon / bare is the target (<= 1.8). The same open-loop
   load as (1) is offered to the bare handler too, for its latency at that rate.
1. baseline: no run active; --baseline seconds of load against one finished run.
2. streaming: 20 speculative plan runs in 20 workspaces (max_concurrent_runs = 20, so all
   20 terraform processes print at once), each followed by a client on its event stream
   (`GET /runs/{id}/events`, server-sent events). After --warmup seconds, --seconds of load,
   the GETs going round-robin over the 20 running runs. Afterwards the runs are cancelled.

The load is open-loop at a fixed rate (no coordinated omission): request k is due at
t0 + k/rate whatever happened to the earlier ones; --connections keep-alive HTTP/1.1
connections (a minimal client on raw trio sockets, so the generator costs little CPU) take the
due requests in order. `latency` is from the moment a request was due until its response was
complete (includes waiting for a free connection); `service` is from the send. The daemon's CPU
(from /proc/<pid>/stat) and this process's CPU are reported, to tell which side was saturated.
`--profile` runs the daemon under cProfile and prints where its time went.
"""

from __future__ import annotations

import argparse
import math
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import trio
from _common import (
    BENCH,
    LoadMeter,
    add_common_args,
    harness,
    percentile,
    table,
    verdict,
    workdir,
    write_results,
)
from _daemon import DaemonProcess, cpu_seconds, free_port, tf_env, top_functions

TARGET_P99_MS = 10.0
TARGET_CPU_RATIO = 1.8
DRAIN = 5.0
STEADY_FAKE = BENCH / "fake_tf_steady.py"
BARE = BENCH / "bare_asgi.py"
_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")


class Connection:
    """One keep-alive HTTP/1.1 connection that sends GETs and reads Content-Length bodies."""

    def __init__(self, host: str, port: int, auth: str) -> None:
        self.host, self.port, self.auth = host, port, auth
        self.stream: trio.SocketStream | None = None
        self.reconnects = 0

    async def get(self, path: str) -> int:
        """The status code; reconnects once if the server closed the connection."""
        for attempt in (1, 2):
            if self.stream is None:
                self.stream = await trio.open_tcp_stream(self.host, self.port)
                self.reconnects += attempt == 2
            try:
                return await self._exchange(path)
            except (trio.BrokenResourceError, ConnectionError, EOFError):
                await self.stream.aclose()
                self.stream = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _exchange(self, path: str) -> int:
        assert self.stream is not None
        await self.stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: {self.auth}\r\n\r\n".encode())
        buf = bytearray()
        while (end := buf.find(b"\r\n\r\n")) < 0:
            buf += await self._receive()
        match = _LENGTH.search(buf, 0, end + 2)
        length = int(match.group(1)) if match else 0
        while len(buf) < end + 4 + length:
            buf += await self._receive()
        return int(buf[9:12])

    async def _receive(self) -> bytes:
        assert self.stream is not None
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError("connection closed by the server")
        return data


def own_cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


async def load(url: str, auth: str, paths: list[str], rate: float, seconds: float,
               connections: int) -> dict[str, Any]:
    """Offer `rate` req/s for `seconds` over `connections`; latencies in ms."""
    host, port = url.removeprefix("http://").split(":")
    send, receive = trio.open_memory_channel[tuple[int, float]](math.inf)
    latency: list[float] = []
    service: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    conns = [Connection(host, int(port), auth) for _ in range(connections)]

    async def worker(conn: Connection) -> None:
        async for k, due in receive:
            sent = time.perf_counter()
            try:
                status = await conn.get(paths[k % len(paths)])
            except (OSError, EOFError, trio.BrokenResourceError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            done = time.perf_counter()
            statuses[status] = statuses.get(status, 0) + 1
            latency.append((done - due) * 1000)
            service.append((done - sent) * 1000)

    total = int(rate * seconds)
    async with trio.open_nursery() as nursery:
        for conn in conns:
            nursery.start_soon(worker, conn)
        t0 = time.perf_counter() + 0.05
        trio_t0 = trio.current_time() + 0.05
        # Bounded: what is not answered DRAIN seconds after the last request was due is dropped.
        nursery.cancel_scope.deadline = trio_t0 + seconds + DRAIN
        async with send:
            for k in range(total):
                await trio.sleep_until(trio_t0 + k / rate)
                send.send_nowait((k, t0 + k / rate))
    wall = time.perf_counter() - t0
    for conn in conns:
        if conn.stream is not None:
            await conn.stream.aclose()
    # Unanswered requests count as infinitely slow in the percentiles.
    latency += [math.inf] * (total - len(latency) - len(errors))
    return {"offered": total, "completed": len(service), "wall_s": wall,
            "achieved_rps": len(service) / wall, "statuses": statuses, "errors": errors[:5],
            "error_count": len(errors), "latency_ms": latency, "service_ms": service,
            "reconnects": sum(c.reconnects for c in conns)}


async def follow_log(url: str, headers: dict[str, str], run_id: str, got: dict[str, int]) -> None:
    """Read one run's event stream until cancelled; count log bytes and lines."""
    async with httpx.AsyncClient(base_url=url, headers=headers,
                                 timeout=httpx.Timeout(30, read=None)) as client:
        async with client.stream("GET", f"/api/v1/runs/{run_id}/events") as response:
            event = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: ") and event == "log":
                    got[run_id] += len(line)
                    got["lines"] += line.count("\\n")


async def sequential(pid: int, url: str, auth: str, path: str, count: int) -> dict[str, Any]:
    """One request at a time on one connection: the server's cost of a GET with no queueing."""
    host, port = url.removeprefix("http://").split(":")
    conn = Connection(host, int(port), auth)
    times = []
    await conn.get(path)  # connected (and, for the daemon, the view built) before measuring
    cpu0 = cpu_seconds(pid)
    for _ in range(count):
        t0 = time.perf_counter()
        await conn.get(path)
        times.append((time.perf_counter() - t0) * 1000)
    cpu = cpu_seconds(pid) - cpu0
    if conn.stream is not None:
        await conn.stream.aclose()
    return {"count": count, "service_ms": times, "cpu_s": cpu}


async def floor(daemon: DaemonProcess, bare: BareProcess, run_id: str,
                args: argparse.Namespace) -> dict[str, Any]:
    """CPU per GET of the daemon and of the bare handler, in alternating rounds."""
    path, auth = f"/api/v1/runs/{run_id}", daemon.headers["Authorization"]
    per = max(1, args.sequential // args.rounds)
    sides: dict[str, list[dict[str, Any]]] = {"daemon": [], "bare": []}
    for n in range(args.rounds):
        order = [("daemon", daemon.pid, daemon.url), ("bare", bare.pid, bare.url)]
        for name, pid, url in order if n % 2 == 0 else reversed(order):
            sides[name].append(await sequential(pid, url, auth, path, per))
    out: dict[str, Any] = {}
    for name, rounds in sides.items():
        count = sum(r["count"] for r in rounds)
        out[name] = {"count": count,
                     "service_ms": [t for r in rounds for t in r["service_ms"]],
                     "cpu_ms_per_request": sum(r["cpu_s"] for r in rounds) * 1000 / count,
                     "rounds_cpu_ms": [r["cpu_s"] * 1000 / r["count"] for r in rounds]}
    out["ratio"] = out["daemon"]["cpu_ms_per_request"] / out["bare"]["cpu_ms_per_request"]
    return out


class BareProcess:
    """bench/bare_asgi.py on a free port, answering with `body`."""

    def __init__(self, root: Path, body: bytes) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (root / "bare-body.json").write_bytes(body)
        self.proc = subprocess.Popen(
            [sys.executable, str(BARE), "--port", str(self.port), "--body",
             str(root / "bare-body.json")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def started(self) -> None:
        with trio.fail_after(30):
            while True:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", self.port)
                    await stream.aclose()
                    return
                except OSError:
                    await trio.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def measure(pid: int, url: str, auth: str, args: argparse.Namespace, paths: list[str],
                  seconds: float) -> dict[str, Any]:
    cpu0, own0, t0 = cpu_seconds(pid), own_cpu(), time.perf_counter()
    result = await load(url, auth, paths, args.rate, seconds, args.connections)
    wall = time.perf_counter() - t0
    used = cpu_seconds(pid) - cpu0
    result["daemon_cpu"] = used / wall
    result["daemon_cpu_ms_per_request"] = used * 1000 / max(1, result["completed"])
    result["bench_cpu"] = (own_cpu() - own0) / wall
    return result


async def scenario(daemon: DaemonProcess, args: argparse.Namespace) -> dict[str, Any]:
    url = daemon.url
    async with httpx.AsyncClient(base_url=url, headers=daemon.headers, timeout=60) as api:
        async def create(ws: str) -> str:
            response = await api.post(f"/api/v1/workspaces/{ws}/runs", json={"operation": "plan"})
            response.raise_for_status()
            return str(response.json()["data"]["id"])

        async def run(run_id: str, **params: Any) -> dict[str, Any]:
            response = await api.get(f"/api/v1/runs/{run_id}", params=params)
            return dict(response.json()["data"])

        idle_id = await create("idle")
        await run(idle_id, wait_status="planned_and_finished", wait_timeout=60)
        body = (await api.get(f"/api/v1/runs/{idle_id}")).content
        bare = BareProcess(daemon.log.parent, body)
        try:
            await bare.started()
            out: dict[str, Any] = {"floor": await floor(daemon, bare, idle_id, args)}
            auth = daemon.headers["Authorization"]
            out["bare_load"] = await measure(bare.pid, bare.url, auth, args,
                                             [f"/api/v1/runs/{idle_id}"], args.baseline)
        finally:
            bare.stop()
        out["baseline"] = await measure(daemon.pid, url, auth, args,
                                        [f"/api/v1/runs/{idle_id}"], args.baseline)

        ids = [await create(f"s{i:02d}") for i in range(args.streams)]
        with trio.fail_after(120):
            for run_id in ids:
                # The API long-polls statuses, not stages: poll the stage.
                while (await run(run_id))["stage"] != "planning":  # noqa: ASYNC110
                    await trio.sleep(0.1)
        got: dict[str, int] = dict.fromkeys(ids, 0) | {"lines": 0}
        async with trio.open_nursery() as nursery:
            for run_id in ids:
                nursery.start_soon(follow_log, url, daemon.headers, run_id, got)
            cpu0 = cpu_seconds(daemon.pid)
            await trio.sleep(args.warmup)
            background = (cpu_seconds(daemon.pid) - cpu0) / args.warmup
            before = dict(got)
            streaming = await measure(daemon.pid, url, auth, args,
                                      [f"/api/v1/runs/{r}" for r in ids], args.seconds)
            streaming["background_cpu"] = background
            streaming["log_lines"] = got["lines"] - before["lines"]
            streaming["streams_receiving"] = sum(got[r] > before[r] for r in ids)
            nursery.cancel_scope.cancel()
        out["streaming"] = streaming
        still = [r for r in ids if (await run(r))["status"] == "planning"]
        out["still_planning_at_end"] = len(still)
        for run_id in ids:
            await api.post(f"/api/v1/runs/{run_id}/actions/cancel")
        for run_id in ids:
            await run(run_id, wait_status="cancelled", wait_timeout=60)
    return out


def write_setup(root: Path, args: argparse.Namespace) -> tuple[Path, str]:
    steady = {"STEADY_INTERVAL": args.interval,
              "STEADY_SECONDS": args.warmup + args.seconds + args.baseline + 60}
    tables: list[dict[str, Any]] = []
    for name, env in [("idle", {"STEADY_SECONDS": 0})] + [
            (f"s{i:02d}", steady) for i in range(args.streams)]:
        source = root / "ws" / name
        source.mkdir(parents=True)
        (source / "main.tf").write_text('output "n" {\n  value = 1\n}\n')
        tables.append({"name": name, "source": str(source), "env": tf_env(env)})
    port = free_port()
    harness.write_config(root, tables, daemon={"listen": f"127.0.0.1:{port}",
                                               "max_concurrent_runs": args.streams + 1},
                         terraform={"binary": str(STEADY_FAKE)})
    return root / "tfward.toml", f"http://127.0.0.1:{port}"


def pct(samples: list[float], q: float) -> float:
    """`percentile`, with unanswered requests (inf) sorting last."""
    xs = sorted(samples)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q / 100
    if math.isinf(xs[math.ceil(pos)]):
        return xs[math.floor(pos)] if pos == math.floor(pos) else math.inf
    return percentile(xs, q)


def summary(name: str, r: dict[str, Any], rate: float) -> list[Any]:
    """A table row; the target holds if p99 < 10 ms and the offered rate was achieved (every
    request answered, at 99% of the rate or more over the wall time including the answers)."""
    lat, svc = r["latency_ms"], r["service_ms"]
    ok = (pct(lat, 99) < TARGET_P99_MS and r["achieved_rps"] >= 0.99 * rate
          and r["completed"] == r["offered"])
    return [name, r["achieved_rps"], pct(lat, 50), pct(lat, 95),
            pct(lat, 99), max(lat, default=math.nan), pct(svc, 99),
            f"{r['daemon_cpu'] * 100:.0f}%", r["daemon_cpu_ms_per_request"],
            f"{r['bench_cpu'] * 100:.0f}%",
            r["error_count"], verdict(ok)]


def report(args: argparse.Namespace, out: dict[str, Any]) -> None:
    s = out["streaming"]
    print(f"\nGET /api/v1/runs/{{id}} at {args.rate:.0f} req/s offered, {args.connections} "
          f"keep-alive connections; latency in ms from when each request was due")
    print(table(["", "achieved/s", "p50", "p95", "p99", "max", "p99 service", "server CPU",
                 "CPU ms/req", "bench CPU", "errors", "target"],
                [summary(f"bare ASGI handler ({args.baseline:.0f} s)", out["bare_load"],
                         args.rate),
                 summary(f"idle daemon ({args.baseline:.0f} s)", out["baseline"], args.rate),
                 summary(f"{args.streams} runs streaming logs ({args.seconds:.0f} s)", s,
                         args.rate)]))
    f = out["floor"]
    d, b = f["daemon"], f["bare"]
    print(f"\nCPU per keep-alive GET, one at a time, {d['count']} requests each in "
          f"{args.rounds} alternating rounds:")
    print(table(["", "CPU ms/GET", "rounds", "service p50 ms", "service p99 ms"],
                [["bare ASGI handler on Hypercorn/trio", b["cpu_ms_per_request"],
                  " ".join(f"{x:.2f}" for x in b["rounds_cpu_ms"]),
                  pct(b["service_ms"], 50), pct(b["service_ms"], 99)],
                 ["tfward GET /api/v1/runs/{id}", d["cpu_ms_per_request"],
                  " ".join(f"{x:.2f}" for x in d["rounds_cpu_ms"]),
                  pct(d["service_ms"], 50), pct(d["service_ms"], 99)]]))
    print(f"ratio tfward / bare: {f['ratio']:.2f} (target <= {TARGET_CPU_RATIO}: "
          f"{verdict(f['ratio'] <= TARGET_CPU_RATIO)})")
    print(f"completed: baseline {out['baseline']['completed']}/{out['baseline']['offered']}, "
          f"streaming {s['completed']}/{s['offered']} (unanswered {DRAIN:.0f} s after the "
          "last was due count as infinitely slow)")
    print(f"daemon CPU with the {args.streams} runs streaming and no GET load (during the "
          f"{args.warmup:.0f} s warm-up): {s['background_cpu'] * 100:.0f}% of a core")
    print(f"event streams during the measurement: {s['streams_receiving']}/{args.streams} got log "
          f"data, {s['log_lines']} lines ({s['log_lines'] / s['wall_s']:.0f}/s; "
          f"the fakes print {args.streams / args.interval:.0f}/s)")
    print(f"status codes: baseline {out['baseline']['statuses']}, streaming {s['statuses']}; "
          f"reconnects {s['reconnects']}; runs still planning at the end: "
          f"{out['still_planning_at_end']}/{args.streams}")
    print("CPU ms/req = the server's CPU time over the measurement / requests answered (in the "
          "streaming row it includes serving the 20 event streams and running the 20 runs)")
    if s["error_count"]:
        print(f"errors: {s['errors']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--baseline", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between lines")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--sequential", type=int, default=2000,
                        help="requests of the one-at-a-time measurement, per server")
    parser.add_argument("--rounds", type=int, default=4,
                        help="alternating rounds of the one-at-a-time measurement")
    parser.add_argument("--profile", action="store_true", help="cProfile the daemon")
    add_common_args(parser)
    args = parser.parse_args()
    meter = LoadMeter()
    with workdir(args.keep, args.tmp) as root:
        config, url = write_setup(root, args)
        profile = root / "daemon.prof" if args.profile else None
        daemon = DaemonProcess(config, url, root / "daemon.log", env=tf_env(), profile=profile)
        daemon.start()
        try:
            out = trio.run(scenario, daemon, args)
        finally:
            t0 = time.perf_counter()
            code = daemon.stop()
        report(args, out)
        print(f"daemon stopped (SIGTERM) in {time.perf_counter() - t0:.1f} s, exit code {code}")
        if profile:
            print("\ndaemon profile, by own time:\n" + top_functions(profile, 30, "tottime"))
            print("\ndaemon profile, cumulative:\n" + top_functions(profile, 40))
    machine = meter.stop()
    print(LoadMeter.describe(machine))
    if args.json:
        path = write_results("api_latency", {"parameters": vars(args), "results": out,
                                             "machine": machine})
        print(f"results: {path}")


if __name__ == "__main__":
    main()
