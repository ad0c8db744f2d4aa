"""The children a run starts: terraform commands and script hooks (docs/architecture.md §2, §3).

Both are run by the driver (`terraform.py`): a session and process group of their own, output
to files read as they grow and into the run log (masked there), and on cancel SIGINT to the
group, the grace period, SIGKILL; the group is reaped before the call returns. The child's PID
and the stage are recorded on the run right after the spawn (beside the process), so recovery
can find what a killed daemon left — for terraform plan, in the write that enters the stage
`planning` itself (`entering`: a run in `planning` is planned again after a crash whatever its
stage). Once the child is reaped its PID is cleared by the run's next write
(`forget_process`: a stage, the plan's record, the funnel) rather than by a write of its own —
a recorded PID whose group is gone is harmless, recovery signals it only while it leads a live
terraform group (docs/architecture.md §2, §5). Terraform commands also hold the
daemon's process limit (`max_concurrent_runs`); a hook does not (it is not terraform). A run
has one child at a time. The last part of each terraform command's output is kept in memory,
for the classifier (`runs/classify.py`) to judge a failure by.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection

from tfward.errors import StageFailed
from tfward.runs.classify import Verdict, classify
from tfward.runs.model import ErrorKind, Stage, enter_stage
from tfward.store import runs as run_store
from tfward.store.health import disk_ready

from . import workdir
from .context import RunContext
from .remote_state import RemoteStateAccess
from .runlog import RunLog
from .terraform import FileOutput, OutputSink, StopControl, run_terraform

TAIL_BYTES = 64 << 10  # terraform's diagnostics come last; this holds many of them


class TaskOutput:
    """Collects a command's stdout in memory (for `terraform show -json`)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes | bytearray) -> None:
        self.parts.append(bytes(data))

    def value(self) -> bytes:
        return b"".join(self.parts)


class Terraform(Protocol):
    """Runs terraform in the run directory; its output goes to the log, or to `stdout`."""

    async def __call__(self, args: Sequence[str], *, stdout: TaskOutput | None = None) -> int: ...

    def verdict(self, code: int) -> Verdict: ...

    def failed(self, kind: ErrorKind, what: str, code: int) -> StageFailed: ...


class _Tail:
    """Passes terraform's output on to the run log and keeps the last TAIL_BYTES of it. The
    run log takes terraform's output files over (`attach`: it may read them again, and they
    go with the run directory, docs/architecture.md §10), so this does too."""

    def __init__(self, log: RunLog) -> None:
        self.log = log
        self.data = bytearray()

    def keep(self, data: bytes | bytearray) -> None:
        self.data += data
        if len(self.data) > 2 * TAIL_BYTES:
            del self.data[:-TAIL_BYTES]

    def write(self, data: bytes | bytearray) -> None:
        self.log.write(data)
        self.keep(data)

    def attach(self, path: Path) -> FileOutput:
        return _TailFile(self.log.attach(path), self)


class _TailFile:
    """One output file the run log took over, its bytes also kept in the tail."""

    def __init__(self, inner: FileOutput, tail: _Tail) -> None:
        self.inner, self.tail = inner, tail

    def write(self, data: bytes | bytearray) -> None:
        self.inner.write(data)
        self.tail.keep(data)

    def end(self) -> None:
        self.inner.end()


@dataclass
class RunChildren:
    """Starts the children of one run. `stage` tells the stage the run is in now."""

    ctx: RunContext
    control: StopControl
    stage: Callable[[], Stage | None]
    # The run's credential for other workspaces' state; terraform commands get it, hooks not.
    remote_state: RemoteStateAccess | None = None
    # A PID is recorded on the run that no write has cleared since its child ended.
    process_recorded: bool = False
    # A stage written on the run with the next child's PID, in its write: the pipeline's
    # `planning` (one write where there were two, on the way to terraform's start).
    entering: Stage | None = None
    _tail: bytes = field(default=b"", repr=False)

    async def __call__(self, args: Sequence[str], *, stdout: TaskOutput | None = None) -> int:
        """Run terraform in the run directory under the global process limit. On cancellation
        terraform is stopped (SIGINT, grace, SIGKILL) and reaped first; errors propagate. The
        workspace's own terraform binary runs, with the run's remote-state credential."""
        env = self.env()
        if self.remote_state is not None:
            await self.remote_state.issue()
            env.update(self.remote_state.env())
        if self.entering is not None and self.ctx.rt.process_limiter.available_tokens < 1:
            await self._enter_stage()  # the run shows its stage while it waits for a slot
        async with self.ctx.rt.process_limiter:
            await disk_ready(self.ctx.rt.store.health)
            self.ctx.log.note(f"terraform {' '.join(args)}")
            tail = _Tail(self.ctx.log)
            try:
                with self.ctx.rt.metrics.terraform_running(args[0]):
                    return await self._spawn(
                        [self.ctx.ws.terraform_binary, *args],
                        env,
                        sink=stdout or tail,
                        stderr_sink=tail if stdout else None,
                        label=args[0],  # recovery reads the exit code of `*-apply`
                    )
            finally:
                self._tail = bytes(tail.data[-TAIL_BYTES:])

    def verdict(self, code: int) -> Verdict:
        """What the classifier makes of the last terraform command, which exited `code`."""
        return classify(code, self._tail.decode("utf-8", "replace"))

    def failed(self, kind: ErrorKind, what: str, code: int) -> StageFailed:
        """The failure of the last terraform command: its message and its error class."""
        verdict = self.verdict(code)
        return StageFailed(kind, self.ctx.log.failure(what, code), str(verdict.error_class))

    async def hook(self, command: str, extra_env: Mapping[str, str]) -> int:
        """Run one hook, `/bin/sh -c command`, in the run directory with the run's environment
        and `extra_env`. Cancellation stops its process group like terraform's."""
        return await self._spawn(
            ["/bin/sh", "-c", command], {**self.env(), **extra_env}, sink=self.ctx.log,
            label="hook",
        )  # fmt: skip

    async def _spawn(
        self,
        argv: list[str],
        env: dict[str, str],
        *,
        sink: OutputSink,
        label: str,
        stderr_sink: OutputSink | None = None,
    ) -> int:
        """Run one child to its end (`run_terraform`). Its PID is recorded beside it; the
        record is cleared later, by `forget_process`."""
        stage, run_id = self.stage(), self.ctx.run_id

        async def started(pid: int) -> None:
            self.process_recorded = True  # before: a write cancelled after its commit
            await self._enter_stage(lambda c: run_store.set_process(c, run_id, pid, stage))

        return await run_terraform(
            argv, cwd=self.ctx.run_dir, env=env, sink=sink, stderr_sink=stderr_sink,
            control=self.control, on_start=started, label=label,
            output_dir=self.ctx.run_dir / workdir.OUTPUT_DIR,
            exit_code=label == "apply",  # the one exit code recovery reads (recovery.py)
        )  # fmt: skip

    async def _enter_stage(self, also: Callable[[Connection], None] | None = None) -> None:
        """One write: the stage `entering` (if any; then forgotten), and `also`."""
        entering, self.entering, run_id = self.entering, None, self.ctx.run_id

        def tx(conn: Connection) -> None:
            if entering is not None:
                run_store.transition(conn, run_id, lambda r: enter_stage(r, entering))
            if also is not None:
                also(conn)

        if entering is not None or also is not None:
            await self.ctx.rt.store.write(tx)

    def forget_process(self, conn: Connection) -> None:
        """In the caller's transaction (the run's next write, while no recorded child runs):
        clear the PID recorded for a child that has ended. The caller calls `forgotten` once
        it committed."""
        if self.process_recorded:
            run_store.set_process(conn, self.ctx.run_id, None, None)

    def forgotten(self) -> None:
        self.process_recorded = False

    def env(self) -> dict[str, str]:
        """The environment of every child (`workdir.terraform_env`), with the run's CLI
        config."""
        return workdir.terraform_env(self.ctx.ws, self.ctx.run_dir / workdir.CLI_CONFIG)
