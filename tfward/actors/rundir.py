"""A run's working directory: the configuration snapshot it runs, the inputs, the current
state, an init (kept and reused per configuration, tried again when it fails transiently), and
before an apply the saved plan put back exactly as planned — or refused, so the run is planned
again (seed 003)."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import trio
from sqlalchemy import Connection

from tfward.errors import PlanUnusable
from tfward.obs.metrics import PlanReason
from tfward.runs.model import ErrorKind, Run
from tfward.store import artifacts, states
from tfward.store import runs as run_store
from tfward.store.health import file_op

from . import workdir
from .children import Terraform
from .context import RunContext

RETRY_CAP = 300.0  # the longest wait between two attempts of `terraform init`


def retry_delay(interval: float, attempt: int, jitter: float) -> float:
    """The wait after failed attempt `attempt` (1, 2, ...): `interval` doubled each time, at
    most RETRY_CAP, times `jitter` (from [1, 1.25): runs that failed together spread out)."""
    return min(RETRY_CAP, interval * 2.0 ** (attempt - 1)) * jitter


@dataclass(frozen=True, slots=True)
class Inputs:
    """What `fetching` takes from the store, read in the run's first transaction: the current
    state (the plan is made against the version `state_id`) and a pinned configuration
    (sha256, archive)."""

    state_id: str | None
    state: bytes | None
    pinned: tuple[str, bytes] | None


def read_inputs(conn: Connection, ws_id: str, pinned: str | None) -> Inputs:
    current = states.current(conn, ws_id)
    return Inputs(
        current.id if current else None,
        states.current_raw(conn, ws_id) if current else None,
        artifacts.configuration_archive(conn, pinned) if pinned else None,
    )


@dataclass
class RunDirectory:
    """`terraform` runs a terraform command in the directory and returns its exit code."""

    ctx: RunContext
    cli_config: str
    terraform: Terraform

    @property
    def path(self) -> Path:
        return self.ctx.run_dir

    async def fetch(
        self, run: Run, inputs: Inputs, then: Callable[[Connection], object] | None = None
    ) -> str:
        """Snapshot the workspace's source into a configuration version, or, for a run that
        pins one (a release rolling out a configuration version), use exactly that one; lay
        the run directory out; then record the version and the state the plan is made against
        on the run, with `then` (the next stage) in the same transaction. Returns the
        configuration's sha256. `inputs` were read in the run's first transaction."""
        pinned = run.pinned_configuration_version_id
        ws_id, run_id = self.ctx.ws_id, self.ctx.run_id
        snap = await file_op(
            self.ctx.rt.store.health,
            self._lay_out,
            inputs,
            run.variable_overrides,
            where=f"run directory {self.path}",
        )
        if snap is not None:
            sha = snap.sha256
        else:
            assert inputs.pinned is not None
            sha = inputs.pinned[0]

        def record(conn: Connection) -> str:
            cv_id = pinned
            if snap is not None:
                cv_id = artifacts.put_configuration(
                    conn, ws_id, snap.archive, snap.file_count, snap.sha256
                ).id
            assert cv_id is not None
            run_store.set_configuration(conn, run_id, cv_id, inputs.state_id)
            if then is not None:
                then(conn)
            return cv_id

        cv_id = await self.ctx.rt.store.write(record)
        self.ctx.log.note(
            f"configuration {sha[:12]} "
            + (f"({snap.file_count} files)" if snap else f"(pinned: {cv_id})")
        )
        if run.variable_overrides:
            self.ctx.log.note("variables overridden: " + ", ".join(sorted(run.variable_overrides)))
        return sha

    async def _prepare(
        self, archive: bytes, state: bytes | None, overrides: Mapping[str, Any] | None
    ) -> None:
        """`prepare` in a worker thread; a full or read-only disk is waited out (storage)."""
        await file_op(
            self.ctx.rt.store.health,
            self.prepare,
            archive,
            state,
            overrides,
            where=f"run directory {self.path}",
        )

    def _lay_out(
        self, inputs: Inputs, overrides: Mapping[str, Any] | None
    ) -> workdir.Snapshot | None:
        """In a worker thread: the snapshot of the workspace's source (None for a run pinned
        to a configuration version: `inputs` has it), and the run directory `prepare`d with
        it. A full or read-only disk raises OSError: `fetch` waits it out (storage) and lays
        it out again."""
        if inputs.pinned is not None:
            self.prepare(inputs.pinned[1], inputs.state, overrides)
            return None
        snap = workdir.snapshot(self.ctx.ws)
        self.prepare(snap.archive, inputs.state, overrides)
        return snap

    def prepare(
        self, archive: bytes, state: bytes | None, overrides: Mapping[str, Any] | None = None
    ) -> None:
        # Terraform's output files of earlier commands stay: the log may still need them.
        workdir.clear(self.path, keep=workdir.OUTPUT_DIR)
        workdir.unpack(archive, self.path)
        workdir.write_inputs(self.path, self.ctx.ws, self.cli_config, overrides)
        if state is not None:
            workdir.write_private(self.path / workdir.STATE_FILE, state)

    async def init(self, config_sha: str) -> None:
        cache = self.ctx.rt.init_cache(self.ctx.ws.name)
        try:
            key: str | None = workdir.init_key(
                config_sha, self.cli_config, self.ctx.ws.terraform_binary
            )
        except OSError as exc:
            # Seed M8: say so, and do a full init, instead of silently losing the optimisation.
            key = None
            self.ctx.log.note(f"cannot compute the init key ({exc}); running a full init")
        if key is not None:
            reused = await trio.to_thread.run_sync(workdir.restore_init, cache, key, self.path)
            if reused:
                self.ctx.log.note("init reused: this configuration was initialised before")
                return
        await self._init_with_retries()
        if key:
            try:
                await trio.to_thread.run_sync(workdir.keep_init, cache, key, self.path)
            except OSError as exc:  # an optimisation only (a full disk, say): the run goes on
                self.ctx.log.note(f"could not keep this init for later runs: {exc}")

    async def _init_with_retries(self) -> None:
        """`terraform init`, tried again after a transient failure (runs/classify.py) up to
        `[terraform] init_retries` times with growing waits; every attempt is in the log. The
        waits are cancellable (a cancel ends the run there) and all of it shares the init
        stage's timeout. Raises StageFailed (`init`) once an attempt fails permanently or none
        is left."""
        tf = self.ctx.rt.config.terraform
        attempts = tf.init_retries + 1
        tf.plugin_cache_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, attempts + 1):
            async with self.ctx.rt.init_lock(tf.plugin_cache_dir):
                code = await self.terraform(["init", "-input=false", "-no-color"])
            if code == 0:
                return
            verdict = self.terraform.verdict(code)
            if not verdict.transient or attempt == attempts:
                what = f"terraform init (attempt {attempt} of {attempts})"
                raise self.terraform.failed(
                    ErrorKind.INIT, what if attempt > 1 else "terraform init", code
                )
            wait = retry_delay(tf.init_retry_interval, attempt, random.uniform(1.0, 1.25))
            self.ctx.log.note(
                f"terraform init failed (exit {code}), {verdict.describe()}; attempt {attempt}"
                f" of {attempts}, trying again in {wait:.1f}s"
            )
            await trio.sleep(wait)

    def _holds(self, plan_hash: str | None) -> bool:
        """Whether the run directory still holds the plan `plan_hash` and its init."""
        on_disk = self.path / workdir.PLAN_FILE
        return (
            plan_hash is not None
            and (self.path / workdir.INIT_MARKER).is_file()
            and on_disk.is_file()
            and artifacts.plan_sha256(on_disk.read_bytes()) == plan_hash
        )

    def apply_in_place(self, problem: str) -> None:
        """The apply runs in the directory the plan was made in, which holds it — unless the
        check of the plan found `problem` (not ""): then the run is planned again."""
        if problem:
            self._refuse(problem)
        self.ctx.log.note("applying in the directory the plan was made in")

    def _refuse(self, problem: str) -> NoReturn:
        reason = artifacts.PLAN_PROBLEM_REASONS.get(problem, PlanReason.OTHER)
        self.ctx.rt.metrics.plan_unusable(reason)
        raise PlanUnusable(problem)

    async def restore_plan(self, run: Run) -> None:
        """Make the run directory hold exactly the planned configuration, the plan and the
        current state; refuse (re-plan: seed 003) if the plan or state moved on. The stored
        plan is checked either way; when the directory still holds it, with its init, the
        apply runs there and nothing more is read."""
        ws_id, run_id = self.ctx.ws_id, self.ctx.run_id
        same_dir = await trio.to_thread.run_sync(self._holds, run.plan_hash)

        def load(conn: Connection) -> tuple[str | None, bytes | None, bytes | None]:
            current = states.current(conn, ws_id)
            problem, plan_file = artifacts.checked_plan(
                conn,
                run_id,
                run.plan_hash,
                current.id if current else None,
                run_store.planned_state_version(conn, run_id),
            )
            if problem is not None or same_dir:
                return problem, plan_file, None
            return problem, plan_file, states.current_raw(conn, ws_id)

        problem, plan_file, state = await self.ctx.rt.store.read(load)
        if problem is not None or plan_file is None:
            self._refuse(problem or artifacts.PLAN_LOST)
        if same_dir:
            self.apply_in_place("")
            return
        on_disk = self.path / workdir.PLAN_FILE
        self.ctx.log.note("restoring the plan into a fresh directory")
        if run.configuration_version_id is None:
            raise PlanUnusable("the run has no configuration version")
        cv_id = run.configuration_version_id
        sha, archive = await self.ctx.rt.store.read(
            lambda c: artifacts.configuration_archive(c, cv_id)
        )
        await self._prepare(archive, state, run.variable_overrides)
        await self.init(sha)
        await file_op(
            self.ctx.rt.store.health,
            workdir.write_private,
            on_disk,
            plan_file,
            where=f"run directory {self.path}",
        )
