"""`terraform show -json` beside the apply (docs/architecture.md §3).

The plan JSON is the reviewable plan (seed M1). When something reads it before the apply — a
person confirming an `apply_pending` run, a run task or a script hook at `post_plan` or
`pre_apply` — it is made first, and a failure fails the run. An auto-applied run that nothing
reviews first does not wait for it: its apply starts, and `show -json` runs beside it:

- **Where**: in a directory of its own, `<run dir>/.tfward/show-json/`, linking the run's
  `.terraform/` and lock file; the plan file is named by its path. Not in the run directory:
  there terraform would read the state the apply is writing, and call the plan stale as soon as
  the apply wrote any. Its output files go with the run's others.
- **When**: once the apply's terraform runs — the apply takes its process slot first;
  `max_concurrent_runs` counts both. At niceness 19 (children.py `BESIDE_NICE`): the apply
  comes first for the CPU. Its PID is not recorded (the apply's is); recovery finds
  it by its working directory, under the run directory. Its time limit is the plan timeout.
- **Its outcome is stored as soon as it has one**: the masked JSON, and the change counts
  from it (until then they are terraform's `Plan:` line); or, when it fails, the stored
  document `null` and `plan_json_error` on the run — logged, counted in /metrics
  (`tfward_plan_json_failures_total`), and not a failure of the run: nothing waited for it.
- **It never outlives its run**: it is a task of the run's nursery. The pipeline waits for it
  before `post_apply` (whose hooks and tasks may read the plan JSON) and when the apply phase
  fails by itself; when the run is stopped (cancel, force-cancel, the daemon's shutdown) it is
  stopped with it, like every terraform of the run (SIGINT, grace, SIGKILL, reaped), and
  nothing is stored. Either way the funnel runs after it, never beside it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import trio
from sqlalchemy import Connection

from tfward.config import format_duration
from tfward.obs.metrics import PlanJsonFailure
from tfward.runs import model
from tfward.store import artifacts
from tfward.store import runs as run_store

from . import workdir
from .context import RunContext
from .planner import Planner, ShowFailure, count_changes

log = logging.getLogger(__name__)

BESIDE_DIR = "show-json"  # under the run directory's `.tfward/`


@dataclass
class PlanJsonBeside:
    """`show -json` of one run beside its apply: `run` is the task, `go` is set once the
    apply's terraform runs, `settle` waits for the outcome."""

    ctx: RunContext
    planner: Planner
    go: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)
    _scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    async def run(self) -> None:
        """The task, in the run's nursery: wait for the apply to start, run `show -json`, store
        what came out. Cancellation (the run stopped) stops terraform and stores nothing; no
        error of its own reaches the apply: it is logged and recorded as the run's
        `plan_json_error` where storage allows."""
        try:
            with self._scope:
                await self.go.wait()
                await self._show_and_store()
        finally:
            self.done.set()

    async def settle(self) -> None:
        """Wait until the outcome is stored. If the apply never started, `show -json` has not
        either: it is called off instead (the run ends without an apply)."""
        if not self.go.is_set():
            self._scope.cancel()
        await self.done.wait()

    async def _show_and_store(self) -> None:
        timeout = self.ctx.ws.plan_timeout
        raw, failure = b"", None
        try:
            with trio.move_on_after(timeout) as limit:
                raw, failure = await self.planner.show_json(beside=await self._directory())
            if limit.cancelled_caught:
                failure = ShowFailure(
                    PlanJsonFailure.TIMEOUT,
                    f"terraform show -json timed out after {format_duration(timeout)}",
                )
                self.ctx.rt.metrics.plan_json_failed(failure.reason)
            masked = b"null" if failure is not None else await self.planner.mask(raw)
        except Exception as exc:  # nothing beside the apply may take it down
            log.exception("run %s: terraform show -json could not run", self.ctx.run_id)
            failure = ShowFailure(
                PlanJsonFailure.NOT_RUN, f"terraform show -json could not run: {exc}"
            )
            self.ctx.rt.metrics.plan_json_failed(failure.reason)
            masked = b"null"
        if failure is not None:
            self.ctx.log.note(
                f"{failure.text}; the run goes on without its plan JSON (nothing reviews it "
                "before the apply)"
            )
            log.warning("run %s: %s beside the apply", self.ctx.run_id, failure.text)
        try:
            await self.ctx.rt.store.write(lambda c: self._store(c, masked, failure))
        except Exception:  # the daemon gave up on storage, or a bug: the apply
            # goes on; the run's plan JSON stays missing (its plan endpoint says so)
            log.exception("run %s: could not store the plan JSON", self.ctx.run_id)

    def _store(self, conn: Connection, masked: bytes, failure: ShowFailure | None) -> None:
        artifacts.put_plan_json(conn, self.ctx.run_id, masked)
        if failure is None:
            changes = count_changes(masked)
            run_store.transition(
                conn, self.ctx.run_id, lambda r: model.plan_json_stored(r, changes)
            )
        else:
            text = failure.text
            run_store.transition(conn, self.ctx.run_id, lambda r: model.plan_json_failed(r, text))

    async def _directory(self) -> Path:
        """`<run dir>/.tfward/show-json/` with links to the run's init (`.terraform/`, the lock
        file): what `show -json` reads besides the plan file, and no state."""
        run_dir = self.ctx.run_dir
        beside = run_dir / workdir.OUTPUT_DIR / BESIDE_DIR

        def make() -> None:
            beside.mkdir(mode=0o700, parents=True, exist_ok=True)
            for name in (".terraform", ".terraform.lock.hcl"):
                link = beside / name
                if (run_dir / name).exists() and not link.is_symlink():
                    os.symlink(run_dir / name, link)

        await trio.to_thread.run_sync(make)
        return beside
