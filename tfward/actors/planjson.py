"""`terraform show -json` after the run, when nothing reviewed the plan during it
(docs/architecture.md §3).

The plan JSON is the reviewable plan (seed M1). When something reads it during the run — a
person confirming an `apply_pending` run, a run task or a script hook at `post_plan`,
`pre_apply` or `post_apply` — it is made in the run directory before anything else happens to
the plan, and a failure fails the run (planner.py). An auto-applied run that nothing reviews
does not wait for it, and neither does its apply: the plan is recorded without its JSON, and
the termination funnel's final transaction queues the outbox job `plan_json`
(outbox/followups.py), which calls `make` here once the run has ended:

- **Where**: in the workspace's kept init of the run's configuration (rundir.py: a kept init
  never changes, and `show` only reads it), on the plan file the database holds, written to
  `<data dir>/plan-json/<run id>.tfplan`, with the generated CLI config (one file there per
  content, shared). When no init is kept for it (another daemon ran the run, or it could not be
  kept) the configuration version is unpacked into `<data dir>/plan-json/<run id>/` and
  `terraform init` runs there, and that init is kept. The plan file and that directory are
  removed when the job ends, and the directory when it starts (an attempt cut short).
- **How**: under the daemon's process limit (`max_concurrent_runs`), with the workspace's
  binary and `env`, its time limit the plan timeout (at most 40% of the outbox lease), stopped
  like every terraform command (SIGINT, grace, SIGKILL) when the daemon stops; the job then
  comes back at the next start.
- **Its outcome**: the masked JSON and the change counts from it (until then the run's counts
  are terraform's `Plan:` line); or, when `show -json` fails, times out or cannot start, the
  document `null` and `plan_json_error` on the run — logged, counted in /metrics
  (`tfward_plan_json_failures_total`). Stored together with the job marked done (`store`).
  An init that fails, or a storage fault, is a failed attempt of the job: retried.
- **When**: after the run, so it takes no CPU from the run's own terraform. The run is
  terminal before its plan JSON is stored: meanwhile `GET /runs/{id}/plan` answers 404 "not
  yet", and the run's change event announces the JSON when it comes.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import trio
from sqlalchemy import Connection

from tfward.config import WorkspaceConfig, format_duration
from tfward.errors import TfwardError
from tfward.files import private_dir
from tfward.obs.metrics import PlanJsonFailure
from tfward.runs import masking, model
from tfward.store import artifacts
from tfward.store import runs as run_store
from tfward.store.health import disk_ready

from . import workdir
from .children import TaskOutput
from .planner import ShowFailure, count_changes, judge_show
from .runtime import Runtime
from .terraform import StopControl, run_terraform

log = logging.getLogger(__name__)

SCRATCH_DIR = "plan-json"  # under the data dir
# How much of terraform's stderr a failure's log line quotes.
QUOTED_ERROR = 2000


class NotMade(TfwardError):
    """The plan JSON could not be made this time (terraform init failed): try again later."""


@dataclass(frozen=True, slots=True)
class Made:
    """What `show -json` after the run came to: the masked document (`null` when it failed)."""

    document: bytes
    failure: ShowFailure | None = None


@dataclass(frozen=True, slots=True)
class Source:
    """What `make` reads: the run's plan file and its configuration version."""

    run_id: str
    plan_file: bytes
    config_version_id: str
    config_sha: str


async def make(rt: Runtime, ws: WorkspaceConfig, source: Source, *, within: float) -> Made:
    """`terraform show -json` of the run's plan; the masked document, or how it failed (logged
    and counted here). Raises NotMade when no directory could be initialised for it."""
    root = rt.data_dir / SCRATCH_DIR
    cli_config = workdir.cli_config_text(rt.config.terraform, rt.dev_mirror)
    plan = root / f"{source.run_id}.tfplan"
    cli = await trio.to_thread.run_sync(_lay_out, root, plan, source.plan_file, cli_config)
    env = workdir.terraform_env(ws, cli)
    scratch = root / source.run_id
    try:
        where = await _initialised(rt, ws, source, scratch, cli_config, env)
        made = await _show(rt, ws, where, plan, env, within)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_clean_up, plan, scratch)
    report(rt, source.run_id, made)
    return made


def report(rt: Runtime, run_id: str, made: Made) -> None:
    """A failure is logged and counted in /metrics."""
    if made.failure is not None:
        rt.metrics.plan_json_failed(made.failure.reason)
        log.warning("run %s: %s; the run has no plan JSON", run_id, made.failure.text)


def store(conn: Connection, run_id: str, made: Made) -> None:
    """Store what `make` made, and say it on the run (its change counts, or why there is no
    plan JSON)."""
    artifacts.put_plan_json(conn, run_id, made.document)
    failure = made.failure
    if failure is None:
        changes = count_changes(made.document)
        run_store.amend_plan_json(conn, run_id, lambda r: model.plan_json_stored(r, changes))
    else:
        text = failure.text
        run_store.amend_plan_json(conn, run_id, lambda r: model.plan_json_failed(r, text))


def not_run(text: str) -> Made:
    """`show -json` could not be started (`text` says why)."""
    return Made(b"null", ShowFailure(PlanJsonFailure.NOT_RUN, text))


def _lay_out(root: Path, plan: Path, plan_file: bytes, cli_config: str) -> Path:
    """The plan file, and the CLI config (one file per content, shared by the jobs); the
    CLI config's path."""
    private_dir(root)
    cli = root / f"cli-{hashlib.sha256(cli_config.encode()).hexdigest()[:16]}.tfrc"
    if not cli.is_file():
        workdir.write_file_atomic(cli, cli_config.encode())
    workdir.write_private(plan, plan_file)
    return cli


def _clean_up(plan: Path, scratch: Path) -> None:
    plan.unlink(missing_ok=True)
    shutil.rmtree(scratch, ignore_errors=True)  # made only when no init was kept


async def _initialised(
    rt: Runtime,
    ws: WorkspaceConfig,
    source: Source,
    scratch: Path,
    cli_config: str,
    env: dict[str, str],
) -> Path:
    """Where `show -json` runs: the workspace's kept init of the run's configuration (a kept
    init is never changed, and `show` only reads it), or a new one — the configuration
    version unpacked into `scratch` and `terraform init` run there — kept for later runs."""
    cache = rt.init_cache(ws.name)
    key = workdir.init_key(source.config_sha, cli_config, ws.terraform_binary)
    if await trio.to_thread.run_sync(workdir.has_init, cache, key):
        return cache / key
    cv_id = source.config_version_id
    _, archive = await rt.store.read(lambda c: artifacts.configuration_archive(c, cv_id))

    def unpack() -> None:
        shutil.rmtree(scratch, ignore_errors=True)  # an earlier attempt's, cut short
        workdir.unpack(archive, scratch)

    await trio.to_thread.run_sync(unpack)
    plugin_cache = rt.config.terraform.plugin_cache_dir
    await trio.to_thread.run_sync(lambda: plugin_cache.mkdir(parents=True, exist_ok=True))
    output = TaskOutput()
    async with rt.init_lock(plugin_cache):
        code = await _terraform(
            rt, ws, scratch, env, ["init", "-input=false", "-no-color"], output
        )
    if code != 0:
        said = output.value().decode("utf-8", "replace")[-QUOTED_ERROR:]
        raise NotMade(f"terraform init for show -json failed (exit {code}): {said}")
    try:
        await trio.to_thread.run_sync(workdir.keep_init, cache, key, scratch)
    except OSError as exc:  # an optimisation only: this directory serves
        log.warning("run %s: could not keep the init made for show -json: %s", source.run_id, exc)
    return scratch


async def _show(
    rt: Runtime, ws: WorkspaceConfig, where: Path, plan: Path, env: dict[str, str], within: float
) -> Made:
    output, errors = TaskOutput(), TaskOutput()
    with trio.move_on_after(within) as limit:
        try:
            args = ["show", "-json", str(plan)]
            code = await _terraform(rt, ws, where, env, args, output, errors)
        except OSError as exc:  # the binary is gone, a full disk
            return not_run(f"terraform show -json could not run: {exc}")
    if limit.cancelled_caught:
        text = f"terraform show -json timed out after {format_duration(within)}"
        return Made(b"null", ShowFailure(PlanJsonFailure.TIMEOUT, text))
    raw = output.value()
    failure = judge_show(code, raw)
    if failure is not None:
        said = errors.value().decode("utf-8", "replace").strip()[-QUOTED_ERROR:]
        if said:
            log.warning("terraform show -json of %s said: %s", plan.name, said)
        return Made(b"null", failure)
    mask = functools.partial(
        masking.mask_plan_bytes, raw, sensitive_vars=ws.sensitive, secrets=ws.sensitive_values()
    )
    return Made(await trio.to_thread.run_sync(mask))


async def _terraform(
    rt: Runtime,
    ws: WorkspaceConfig,
    cwd: Path,
    env: dict[str, str],
    args: list[str],
    stdout: TaskOutput,
    stderr: TaskOutput | None = None,
) -> int:
    """One terraform command in `cwd`, under the daemon's process limit; its output files in
    the scratch root (a kept init's directory gets none)."""
    async with rt.process_limiter:
        await disk_ready(rt.store.health)
        with rt.metrics.terraform_running(args[0]):
            return await run_terraform(
                [ws.terraform_binary, *args],
                cwd=cwd,
                env=env,
                sink=stdout,
                stderr_sink=stderr,
                control=StopControl(rt.config.terraform.cancel_grace),
                label=args[0],
                output_dir=rt.data_dir / SCRATCH_DIR,
                exit_code=False,  # nothing reads it after a crash: the job comes back instead
            )
