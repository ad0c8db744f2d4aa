"""The terraform driver: one terraform process, its output, and how it is stopped. Every other
child a run starts (a script hook) is run by the same function, with its own `label`.

Terraform runs in its own session and process group, so its provider plugins can be reached
with one `killpg` and none outlives the run. Output (stdout and stderr merged) goes to a file
that is read as it grows and handed to a sink; terraform never waits for the daemon, and
survives the daemon's death.

Stopping (docs/architecture.md §3): when the caller's cancel scope is cancelled (user cancel,
stage timeout, daemon shutdown), the process group gets SIGINT, as from a terminal's Ctrl-C,
then `grace` seconds to exit, then SIGKILL. SIGINT goes to the group, not the pid: terraform
1.0 runs itself under panicwrap, whose parent ignores SIGINT, so only the child terraform
process acts on it (it stops starting operations, lets in-flight ones finish and writes
state); provider plugins ignore SIGINT by design (go-plugin eats interrupts). Setting the
`force` event (force-cancel) skips the rest of the grace period.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import trio

from .procgroup import kill_group, signal_group

log = logging.getLogger(__name__)


class OutputSink(Protocol):
    def write(self, data: bytes | bytearray) -> None:
        """Take raw output; must not block."""


@dataclass
class StopControl:
    """How a running process is stopped. `force` cuts the SIGINT grace period short."""

    grace: float
    force: trio.Event = field(default_factory=trio.Event)


async def run_terraform(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    sink: OutputSink,
    control: StopControl,
    output_dir: Path | None = None,
    on_start: Callable[[int], Awaitable[None]] | None = None,
    stderr_sink: OutputSink | None = None,
    label: str = "terraform",
) -> int:
    """Run one terraform command (or another child: `label` names it in file names and the
    log) to completion and return its exit code.

    Output goes to files in `output_dir` (default `<cwd>/.tfward`) that are read as they grow,
    not to pipes: if the daemon dies (kill -9), terraform must not die of SIGPIPE halfway
    through an apply with a resource created and not yet in its state; it goes on, and
    recovery stops it gracefully.

    On cancellation: SIGINT, wait up to `control.grace` (or until `control.force`), SIGKILL the
    process group, collect the remaining output, then re-raise Cancelled. On any exit path the
    process group is killed and reaped before this returns, so no provider process is left.
    stderr goes to `stderr_sink` when given (to keep stdout machine-readable), else to `sink`."""
    output_dir = output_dir or cwd / ".tfward"
    output_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{next(_counter)}"
    files = [(output_dir / f"{label}-{tag}.out", sink)]
    if stderr_sink is not None:
        files.append((output_dir / f"{label}-{tag}.err", stderr_sink))
    # Creating a local file is quick; it must exist before the child gets its descriptor.
    handles = [open(path, "wb") for path, _ in files]  # noqa: ASYNC230
    try:
        proc = await trio.lowlevel.open_process(
            list(argv), cwd=str(cwd), env=dict(env), stdin=subprocess.DEVNULL,
            stdout=handles[0], stderr=handles[1] if len(handles) > 1 else subprocess.STDOUT,
            start_new_session=True,
        )
    except BaseException:
        for path, _ in files:
            path.unlink(missing_ok=True)
        raise
    finally:
        for handle in handles:
            handle.close()  # the child has its own copies
    exited = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            for path, file_sink in files:
                nursery.start_soon(_tail, path, file_sink, exited, name=f"{label}-output-{tag}")
            try:
                if on_start is not None:
                    await on_start(proc.pid)
                await proc.wait()
            except trio.Cancelled:
                with trio.CancelScope(shield=True):
                    stopped = await _stop(proc, control)
                log.info("%s pid %d stopped (%s)", label, proc.pid, stopped)
                raise
            finally:
                with trio.CancelScope(shield=True):
                    kill_group(proc.pid)
                    if proc.returncode is None:
                        await proc.wait()
                    exited.set()
    finally:
        for path, _ in files:
            path.unlink(missing_ok=True)
    assert proc.returncode is not None
    return proc.returncode


_counter = itertools.count()
TAIL_POLL = 0.02
TAIL_READ = 1 << 20


async def _tail(path: Path, sink: OutputSink, exited: trio.Event) -> None:
    """Hand what is appended to `path` to the sink until the process group has exited and the
    file is read to its end. Shielded: the last lines (errors, "Interrupt received") matter
    most, and the owner sets `exited` on every path."""
    with trio.CancelScope(shield=True), open(path, "rb") as fh:  # noqa: ASYNC230 — local file
        while True:
            done = exited.is_set()  # read before the final pass: nothing written after is lost
            while data := fh.read(TAIL_READ):
                sink.write(data)
                await trio.lowlevel.checkpoint()
            if done:
                return
            # A regular file gives no readiness event; poll it while terraform runs.
            with trio.move_on_after(TAIL_POLL):
                await exited.wait()


async def _stop(proc: trio.Process, control: StopControl) -> str:
    """SIGINT the group, wait for terraform to exit within the grace period, else SIGKILL it."""
    if proc.returncode is not None:
        return "exited"
    if not control.force.is_set():
        signal_group(proc.pid, signal.SIGINT)
        with trio.move_on_after(control.grace):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_when, proc.wait, nursery.cancel_scope)
                nursery.start_soon(_cancel_when, control.force.wait, nursery.cancel_scope)
        if proc.returncode is not None:
            return "interrupted"
    kill_group(proc.pid)
    await proc.wait()
    return "killed"


async def _cancel_when(fn: Callable[[], Awaitable[object]], scope: trio.CancelScope) -> None:
    await fn()
    scope.cancel()
