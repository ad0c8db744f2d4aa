"""The plan of a run: `terraform plan`, then `show -json` (the reviewable plan, seed M1), masked
before it is stored — before anything else happens, or after the run when nothing reviews the
plan before or during the apply (planjson.py); then the plan recorded, with the workspace lock
taken for an apply in the same transaction (seed H7), and a drift check's finding with it."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import trio
from sqlalchemy import Connection

from tfward.errors import StageFailed, WorkspaceLocked
from tfward.ids import now
from tfward.obs.metrics import PlanJsonFailure
from tfward.runs import masking, model
from tfward.runs.drift import drifted_addresses
from tfward.runs.model import ErrorKind, Operation, ResourceChanges, Run, Stage, Status
from tfward.store import drift as drift_store
from tfward.store import outbox as outbox_store
from tfward.store import runs as run_store
from tfward.store import workspaces as ws_store

from . import workdir
from .children import TaskOutput, Terraform
from .context import RunContext

# Stages whose hooks and run tasks read the plan JSON during the run.
REVIEW_STAGES = (Stage.POST_PLAN, Stage.PRE_APPLY, Stage.POST_APPLY)


@dataclass(frozen=True, slots=True)
class ShowFailure:
    """How `terraform show -json` failed: the metric's reason and what the run says."""

    reason: PlanJsonFailure
    text: str  # "terraform show -json failed (exit 1)", ...
    code: int = -1  # its exit code, when it exited non-zero


@dataclass
class Planner:
    ctx: RunContext
    terraform: Terraform
    # What a refresh-only plan (drift check) found changed outside terraform.
    drifted: list[str] = field(default_factory=list)
    # A speculative plan whose `show -json` failed: why (recorded with the plan).
    json_error: str | None = None

    async def plan(self, run: Run) -> bool:
        """Run `terraform plan`; whether the plan changes anything. Raises StageFailed (`plan`)
        when terraform fails."""
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
        return code == 2

    def reviewed_before_apply(self, run: Run, has_changes: bool) -> bool:
        """Whether anything reads the plan JSON during this run: a person confirming it, a run
        task or a script hook at `post_plan`, `pre_apply` or `post_apply`. Speculative plans,
        and plans that change nothing, are reviewed as they are (nothing else happens to them).
        Otherwise the plan JSON is made after the run (planjson.py) — unless the run learned
        secrets (another workspace's state it read): they mask the JSON, and only the run
        knows them."""
        ws = self.ctx.ws
        return (
            self.ctx.log.learned_secrets()
            or run.is_speculative
            or not run.auto_apply
            or not has_changes
            or any(str(s) in a.stages for a in ws.run_tasks for s in REVIEW_STAGES)
            or any(ws.hooks.get(str(s)) for s in REVIEW_STAGES)
        )

    async def show(self, run: Run) -> bytes:
        """`show -json` in the run directory before anything else happens to the plan; the
        plan JSON, masked. A failure fails a run that may apply (seed M1); a speculative plan
        goes on and says why (`json_error`; its stored document is `null`)."""
        raw, failure = await self.show_json()
        if failure is not None:
            # Seed M1: without the plan JSON nobody can review what would be applied.
            message = f"{failure.text}: the plan cannot be reviewed"
            if not run.is_speculative:
                # Exit 0 with output that is not JSON (-1 here) is no transient failure.
                code = failure.code
                verdict = self.terraform.verdict(code) if code > 0 else None
                raise StageFailed(
                    ErrorKind.PLAN, message, str(verdict.error_class) if verdict else None
                )
            self.ctx.log.note(message)
            self.json_error = failure.text
            raw = b"null"
        if run.refresh_only:
            self.drifted = drifted_addresses(raw)
            found = len(self.drifted)
            self.ctx.log.note(f"drift check: {found} resources changed outside terraform")
        return await self.mask(raw)

    async def show_json(self) -> tuple[bytes, ShowFailure | None]:
        """Run `terraform show -json` on the saved plan in the run directory; its output,
        unmasked, and how it failed if it did (counted in /metrics). Cancellation stops
        terraform, like every command of a run."""
        output = TaskOutput()
        code = await self.terraform(["show", "-json", workdir.PLAN_FILE], stdout=output)
        raw = output.value()
        failure = judge_show(code, raw)
        if failure is not None:
            self.ctx.rt.metrics.plan_json_failed(failure.reason)
        return raw, failure

    async def mask(self, raw: bytes) -> bytes:
        """The plan JSON as it is stored: masked, so the database never holds the values in
        clear; nothing reads the stored JSON for values (the apply uses the plan file). The API
        masks again on the way out, with the workspace's settings of that moment."""
        mask = functools.partial(
            masking.mask_plan_bytes,
            raw,
            sensitive_vars=self.ctx.ws.sensitive,
            secrets=self.ctx.log.mask_values(),
        )
        return await trio.to_thread.run_sync(mask)

    async def record(
        self,
        has_changes: bool,
        plan_hash: str,
        plan_json: bytes | None,
        *,
        also: Callable[[Connection, Run], Run] | None = None,
    ) -> Run:
        """The run `planned`: `apply_pending` (or `applying` when it applies on its own) with
        the workspace lock taken in the same transaction (seed H7), or finished when there is
        nothing to apply; a drift check's finding commits with it, and `also` (which may move
        the run on: it returns the run as it leaves it). The change
        counts come from the plan JSON, or, when `show -json` runs after the run (`plan_json`
        None), from terraform's `Plan:` line until the JSON is stored."""
        ctx = self.ctx
        if plan_json is not None:
            changes = count_changes(plan_json)
        else:
            changes = summary_changes(ctx.log.parser.facts.plan_summary)
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
                    plan_json_error=self.json_error,
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
                wanted = ctx.rt.notifies(ctx.ws.name, trigger, refresh_only=after.refresh_only)
                outbox_store.notify_status(conn, after, ctx.ws_id, trigger, wanted=wanted)
            if after.refresh_only:
                # A drift check: its finding and `assessment:drifted` commit with the plan.
                drift_store.record_check(
                    conn, ctx.ws_id, ctx.ws.name, ctx.run_id, self.drifted, now()
                )
            if also is not None:
                after = also(conn, after)
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


def judge_show(code: int, output: bytes) -> ShowFailure | None:
    """How `terraform show -json`, which exited `code` and printed `output`, failed: None when
    it printed a JSON document and exited 0."""
    if code != 0:
        text = f"terraform show -json failed (exit {code})"
        return ShowFailure(PlanJsonFailure.EXIT, text, code)
    if not _is_json(output):
        text = "terraform show -json printed no JSON document"
        return ShowFailure(PlanJsonFailure.NOT_JSON, text)
    return None


def _is_json(output: bytes) -> bool:
    try:
        json.loads(output)
    except ValueError:
        return False
    return True


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


_SUMMARY = re.compile(r"Plan: (\d+) to add, (\d+) to change, (\d+) to destroy")


def summary_changes(summary: str | None) -> ResourceChanges:
    """The counts of terraform's `Plan: 1 to add, 0 to change, 0 to destroy.` line (zeros when
    terraform printed none that reads so); the plan JSON's replace them once it is stored."""
    found = _SUMMARY.search(summary or "")
    if found is None:
        return ResourceChanges()
    add, change, destroy = (int(n) for n in found.groups())
    return ResourceChanges(add, change, destroy)
