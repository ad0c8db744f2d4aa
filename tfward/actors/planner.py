"""The plan of a run: `terraform plan`, then `show -json` (the reviewable plan, seed M1), masked
before it is stored; then the plan recorded, with the workspace lock taken for an apply in the
same transaction (seed H7), and a drift check's finding with it."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import trio
from sqlalchemy import Connection

from tfward.errors import StageFailed, WorkspaceLocked
from tfward.ids import now
from tfward.runs import masking, model
from tfward.runs.drift import drifted_addresses
from tfward.runs.model import ErrorKind, Operation, ResourceChanges, Run, Status
from tfward.store import drift as drift_store
from tfward.store import outbox as outbox_store
from tfward.store import runs as run_store
from tfward.store import workspaces as ws_store

from . import workdir
from .children import TaskOutput, Terraform
from .context import RunContext


@dataclass
class Planner:
    ctx: RunContext
    terraform: Terraform
    # What a refresh-only plan (drift check) found changed outside terraform.
    drifted: list[str] = field(default_factory=list)

    async def plan(self, run: Run) -> tuple[bool, bytes]:
        """Run `terraform plan`, then `show -json`; (whether it changes anything, the plan
        JSON masked)."""
        args = [
            "plan",
            "-input=false",
            "-no-color",
            "-detailed-exitcode",
            f"-out={workdir.PLAN_FILE}",
        ]
        if run.operation is Operation.DESTROY:
            args.append("-destroy")
        if run.refresh_only:
            args.append("-refresh-only")
        args += [f"-target={t}" for t in run.targets] + [f"-replace={r}" for r in run.replace]
        code = await self.terraform(args)
        if code not in (0, 2):
            raise self.terraform.failed(ErrorKind.PLAN, "terraform plan", code)
        output = TaskOutput()
        show = await self.terraform(["show", "-json", workdir.PLAN_FILE], stdout=output)
        plan_json = output.value()
        problem = f"failed (exit {show})" if show != 0 else _not_json(plan_json)
        if problem:
            # Seed M1: without the plan JSON nobody can review what would be applied.
            message = f"terraform show -json {problem}: the plan cannot be reviewed"
            if not run.is_speculative:
                # Exit 0 with output that is not JSON (-1 here) is no transient failure.
                verdict = self.terraform.verdict(show) if show > 0 else None
                raise StageFailed(
                    ErrorKind.PLAN, message, str(verdict.error_class) if verdict else None
                )
            self.ctx.log.note(message)
            plan_json = b"null"
        if run.refresh_only:
            self.drifted = drifted_addresses(plan_json)
            found = len(self.drifted)
            self.ctx.log.note(f"drift check: {found} resources changed outside terraform")
        # Stored masked, so the database never holds the values in clear; nothing reads the
        # stored JSON for values (the apply uses the plan file). The API masks again on the way
        # out, with the workspace's settings of that moment.
        mask = functools.partial(
            masking.mask_plan_bytes,
            plan_json,
            sensitive_vars=self.ctx.ws.sensitive,
            secrets=self.ctx.log.mask_values(),
        )
        return code == 2, await trio.to_thread.run_sync(mask)

    async def record(self, has_changes: bool, plan_hash: str, plan_json: bytes) -> Run:
        """The run `planned`: `apply_pending` (or `applying` when it applies on its own) with
        the workspace lock taken in the same transaction (seed H7), or finished when there is
        nothing to apply; a drift check's finding commits with it."""
        ctx = self.ctx
        changes = count_changes(plan_json)
        expires = now().timestamp() + ctx.rt.config.terraform.plan_expiry

        def tx(conn: Connection) -> Run:
            _, after = run_store.transition(
                conn,
                ctx.run_id,
                lambda r: model.plan_finished(
                    r,
                    now(),
                    changes=changes,
                    has_changes=has_changes,
                    plan_hash=plan_hash,
                    expires_at=datetime.fromtimestamp(expires, UTC),
                ),
            )
            if after.status in (Status.APPLY_PENDING, Status.APPLYING):
                # Seed H7: a lock that cannot be taken fails the run; it never only warns.
                ws_store.acquire_lock(
                    conn,
                    ctx.ws_id,
                    run_id=ctx.run_id,
                    by=f"run {ctx.run_id}",
                    reason="plan awaiting apply",
                )
                trigger = (
                    "run:needs_attention"
                    if after.status is Status.APPLY_PENDING
                    else "run:applying"
                )
                outbox_store.notify_status(conn, after, ctx.ws_id, trigger)
            if after.refresh_only:
                # A drift check: its finding and `assessment:drifted` commit with the plan.
                drift_store.record_check(
                    conn, ctx.ws_id, ctx.ws.name, ctx.run_id, self.drifted, now()
                )
            return after

        try:
            run = await ctx.rt.store.write(tx)
        except WorkspaceLocked as exc:
            raise StageFailed(
                ErrorKind.LOCK, f"could not lock the workspace for the apply: {exc}"
            ) from exc
        ctx.log.note(
            f"plan {plan_hash[:12]}: +{changes.add} ~{changes.change} -{changes.destroy}"
            f" -> {run.status if run.status is not Status.PLANNING else 'no apply'}"
        )
        return run


def _not_json(output: bytes) -> str | None:
    try:
        json.loads(output)
    except ValueError:
        return "printed no JSON document"
    return None


def count_changes(plan_json: bytes) -> ResourceChanges:
    try:
        doc = json.loads(plan_json) or {}
    except ValueError:
        return ResourceChanges()
    add = change = destroy = 0
    for rc in doc.get("resource_changes") or []:
        actions = set((rc.get("change") or {}).get("actions") or [])
        add += "create" in actions
        destroy += "delete" in actions
        change += "update" in actions
    return ResourceChanges(add, change, destroy)
