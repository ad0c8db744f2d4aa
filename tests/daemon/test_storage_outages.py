"""Long storage outages (issue 12, docs/architecture.md §10): each storage fault — the database
read-only, the disk full, the write lock held by another process — for 60 s at `planning`,
`apply_pending`, `applying` and `saving_state`, on real terraform. The twelve scenarios run at
once (a real daemon each, with its own data dir), so the suite pays for one minute, not
twelve. After each outage the contract is checked as in the fault matrix's storage column
(tests/storagefaults.py `run_through_outage`): the run applied, every resource the provider
created in the latest stored state and none twice, every line terraform printed about them in
the log once, the lock released with the outcome, the daemon up all along."""

from __future__ import annotations

import traceback
from pathlib import Path

import trio
from storagefaults import STORAGE_FAULTS, require_root, run_through_outage

STAGES = ("planning", "apply_pending", "applying", "saving_state")
LONG = 60.0


async def test_a_minute_of_each_storage_fault_at_each_stage_orphans_nothing_and_loses_nothing(
    tmp_path: Path,
) -> None:
    require_root("the disk-full scenarios mount a tmpfs; the read-only ones use chattr +i")
    failures: dict[str, str] = {}

    async def scenario(stage: str, fault: str) -> None:
        root = tmp_path / f"{stage}-{fault}"
        root.mkdir()
        try:
            await run_through_outage(root, stage, fault, LONG)
        except Exception as exc:  # noqa: BLE001 — every failure is reported, not the first only
            failures[f"{stage} x {fault}"] = "".join(traceback.format_exception(exc))

    async with trio.open_nursery() as nursery:
        for stage in STAGES:
            for fault in STORAGE_FAULTS:
                nursery.start_soon(scenario, stage, fault, name=f"outage-{stage}-{fault}")
    assert not failures, "\n\n".join(f"{name}:\n{text}" for name, text in failures.items())
