"""The cluster soak (bench/cluster_soak.py), short: three daemons on one PostgreSQL database,
two rounds of applies on six workspaces with a random daemon killed (-9) and restarted in the
middle of each; no invariant is broken (the script's docstring lists them)."""

from __future__ import annotations

import importlib
from pathlib import Path


async def test_two_kill_9s_of_random_daemons_during_applies_break_no_invariant(
    tmp_path: Path,
) -> None:
    cluster_soak = importlib.import_module("cluster_soak")  # bench/: tests/soak/conftest.py
    assert await cluster_soak.soak(tmp_path, rounds=2, seed=18) == []
