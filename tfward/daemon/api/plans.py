"""A run's plan JSON as the API serves it: with sensitive values masked (tfward/runs/masking.py).

Every endpoint that returns plan JSON (the run's plan, and what a run task reads) goes through
`masked_plan_json`, so none can forget the masking. The workspace's current settings are used:
a name made sensitive after the plan was stored is masked too. A workspace removed from the
config leaves Terraform's own marks (and what the pipeline masked before storing).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import trio
from sqlalchemy import Connection

from tfward.runs.masking import mask_plan_bytes
from tfward.runs.model import Run
from tfward.store import artifacts
from tfward.store import runs as run_store

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon


async def masked_plan_json(daemon: Daemon, run_id: str) -> bytes:
    """The stored plan JSON of `run_id`, masked; NotFound (404) for an unknown run or one
    without a plan. The masking (a parse and a walk of the document) runs in a thread."""

    def load(conn: Connection) -> tuple[Run, bytes]:
        return run_store.get_run(conn, run_id), artifacts.get_plan_json(conn, run_id)

    run, raw = await daemon.store.read(load)
    try:
        ws = daemon.config.workspace(run.workspace)
    except KeyError:
        mask = functools.partial(mask_plan_bytes, raw)
    else:
        mask = functools.partial(
            mask_plan_bytes, raw, sensitive_vars=ws.sensitive, secrets=ws.sensitive_values()
        )
    return await trio.to_thread.run_sync(mask)
