#!/usr/bin/env python3
"""Chaos soak of several daemons on one PostgreSQL database (docs/architecture.md §15): three
real daemons share six workspaces whose applies create a chain of demo things slowly; each
round runs an apply on every workspace, `kill -9`s a random daemon while they apply (its
terraform lives on, on this host: the survivors' recovery stops it), and restarts it. After
each round, once every run has ended, the invariants:

- no run is left non-terminal after the takeover;
- no workspace is locked without a run holding it that says why (`owner_lost`,
  `applied_state_error`), and none is locked by a user;
- no state version is lost: each workspace's versions only grow, serials strictly increasing;
- no run is applied twice: the demo provider's calls log shows every thing created once (each
  round applies a chain of its own, `targets` naming its last thing; an interrupted run's
  partial state holds what it created);
- every workspace has exactly one owner among the live daemons.

`make test` runs a short version (tests/soak/test_cluster_soak.py); this script runs longer:
`bench/cluster_soak.py --rounds 10 [--seed N]`.
"""

from __future__ import annotations

import argparse
import random
import signal
import tempfile
from pathlib import Path
from typing import Any

import fleet as fleet_mod  # tests/fleet.py, on the path through _common
import trio
from _common import harness

TERMINAL = {"planned_and_finished", "applied", "applied_state_error", "failed", "cancelled",
            "force_cancelled", "discarded"}
WORKSPACES = 6
CHAIN = 12


async def soak(root: Path, rounds: int, seed: int) -> list[str]:
    """Run the rounds; the invariant violations found (empty: none)."""
    rng = random.Random(seed)
    chains = chains_of(rounds)
    wss = [harness.demo_workspace(root, f"w{i}", things=0, extra_tf=chains, auto_apply=True)
           for i in range(WORKSPACES)]
    fleet = fleet_mod.Fleet(root, wss, 3, daemon={"lease_ttl": "10s", "lease_renew": "1s",
                                                  "self_fence_margin": "3s"})
    violations: list[str] = []
    versions: dict[str, list[int]] = {name: [] for name in fleet.names}
    async with fleet.running() as nursery:
        await fleet.start(nursery)
        for n in range(rounds):
            victim = rng.randrange(3)
            ask = (victim + 1) % 3
            async with fleet.procs[ask].client() as http:
                api = harness.Api(http)
                await fleet.until_owned(ask, {"node0", "node1", "node2"}, within=60)
                target = [f"demo_thing.r{n}_{CHAIN - 1}"]
                runs = {name: (await api.create_run(name, targets=target))["id"]
                        for name in fleet.names}
                with trio.fail_after(120):  # somewhere in the middle of the applies
                    while created_in(root, fleet.names, n) < 0.3 * CHAIN * WORKSPACES:  # noqa: ASYNC110 — files, no event
                        await trio.sleep(0.1)
            fleet.procs[victim].signal(signal.SIGKILL)
            await fleet.procs[victim].wait()
            await fleet.start(nursery, victim)
            async with fleet.procs[ask].client() as http:
                violations += await check(fleet, harness.Api(http), runs, versions, n, root)
        await fleet.stop_all()
    return violations


def chains_of(rounds: int) -> str:
    """A chain of CHAIN slow demo things per round (`r<round>_<i>`, each after the previous)."""
    blocks = []
    for n in range(rounds):
        for i in range(CHAIN):
            depends = f"\n  depends_on = [demo_thing.r{n}_{i - 1}]" if i else ""
            blocks.append(f'resource "demo_thing" "r{n}_{i}" {{\n  name  = "r{n}-{i}"\n'
                          f"  delay = 0.5{depends}\n}}\n")
    return "\n".join(blocks)


def created_in(root: Path, names: list[str], n: int) -> int:
    """Things of round `n` created so far, over every workspace."""
    return sum(1 for w in names for thing in fleet_mod.created(root / f"{w}-calls.jsonl")
               if thing.startswith(f"r{n}-"))


async def check(fleet: fleet_mod.Fleet, api: harness.Api, runs: dict[str, str],
                versions: dict[str, list[int]], n: int, root: Path) -> list[str]:
    found = []
    for name, run_id in runs.items():
        run = await fleet_mod.wait_run(api, run_id, *TERMINAL, timeout=180)
        if run["status"] not in TERMINAL:
            found.append(f"round {n}: {name} run {run_id} left {run['status']}")
        view = await api.workspace(name)
        lock = view["lock"]
        if lock is not None:
            holder: dict[str, Any] = await api.run(lock["run_id"]) if lock["run_id"] else {}
            if holder.get("error_kind") != "owner_lost" and holder.get("status") != (
                    "applied_state_error"):
                found.append(f"round {n}: {name} locked without a reason: {lock}")
        serials = [v["serial"] for v in reversed(await api.state_versions(name))]
        if serials != sorted(set(serials)) or serials[: len(versions[name])] != versions[name]:
            found.append(f"round {n}: {name} state versions {serials}, had {versions[name]}")
        versions[name] = serials
        names = fleet_mod.created(root / f"{name}-calls.jsonl")
        if len(names) != len(set(names)):
            twice = sorted({x for x in names if names.count(x) > 1})
            found.append(f"round {n}: {name} created twice: {twice}")
    owners = await fleet.until_owned(0, {"node0", "node1", "node2"}, within=60)
    if set(owners) != set(fleet.names):
        found.append(f"round {n}: owners {owners}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    with tempfile.TemporaryDirectory(prefix="tfward-cluster-soak-") as tmp:
        try:
            violations = trio.run(soak, Path(tmp), args.rounds, seed)
        finally:
            harness.postgres.stop()
    print(f"{args.rounds} rounds (seed {seed}): {len(violations)} invariant violations")
    for line in violations:
        print("  " + line)
    raise SystemExit(1 if violations else 0)


if __name__ == "__main__":
    main()
