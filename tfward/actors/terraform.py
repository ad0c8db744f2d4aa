"""The terraform driver: one terraform process, its output, and how it is stopped.

Terraform runs in its own session and process group, so its provider plugins can be reached
with one `killpg` and none outlives the run. Output (stdout and stderr merged) is handed to a
sink chunk by chunk as it arrives; the sink never blocks the reader.

Stopping (DESIGN §3): when the caller's cancel scope is cancelled (user cancel, stage timeout,
daemon shutdown), the process group gets SIGINT, as from a terminal's Ctrl-C, then `grace`
seconds to exit, then SIGKILL. SIGINT goes to the group, not the pid: terraform 1.0 runs
itself under panicwrap, whose parent ignores SIGINT, so only the child terraform process acts
on it (it stops starting operations, lets in-flight ones finish and writes state); provider
plugins ignore SIGINT by design (go-plugin eats interrupts). Setting the `force` event
(force-cancel) skips the rest of the grace period.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import trio

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
    on_start: Callable[[int], Awaitable[None]] | None = None,
    stderr_sink: OutputSink | None = None,
) -> int:
    """Run one terraform command to completion and return its exit code.

    On cancellation: SIGINT, wait up to `control.grace` (or until `control.force`), SIGKILL the
    process group, collect the remaining output, then re-raise Cancelled. On any exit path the
    process group is killed and reaped before this returns, so no provider process is left.
    stderr goes to `stderr_sink` when given (to keep stdout machine-readable), else to `sink`."""
    proc = await trio.lowlevel.open_process(
        list(argv),
        cwd=str(cwd),
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        start_new_session=True,
        stderr=subprocess.PIPE if stderr_sink else subprocess.STDOUT,
    )
    assert proc.stdout is not None
    streams: list[tuple[trio.abc.ReceiveStream, OutputSink]] = [(proc.stdout, sink)]
    if stderr_sink is not None:
        assert proc.stderr is not None
        streams.append((proc.stderr, stderr_sink))
    # The reader keeps going while the run is being cancelled (the last lines terraform prints
    # matter most); it ends at EOF, or DRAIN_TIMEOUT after the group is dead if a stray process
    # outside the group still holds the pipe.
    pump_scopes = [trio.CancelScope(shield=True) for _ in streams]
    pumped = [trio.Event() for _ in streams]
    try:
        async with trio.open_nursery() as nursery:
            for (stream, stream_sink), scope, done in zip(
                streams, pump_scopes, pumped, strict=True
            ):
                nursery.start_soon(
                    _pump, stream, stream_sink, scope, done, name=f"terraform-output-{proc.pid}"
                )
            try:
                if on_start is not None:
                    await on_start(proc.pid)
                await proc.wait()
            except trio.Cancelled:
                with trio.CancelScope(shield=True):
                    stopped = await _stop(proc, control)
                log.info("terraform pid %d stopped (%s)", proc.pid, stopped)
                raise
            finally:
                with trio.CancelScope(shield=True):
                    _killpg(proc.pid)
                    if proc.returncode is None:
                        await proc.wait()
                    with trio.move_on_after(DRAIN_TIMEOUT):
                        for done in pumped:
                            await done.wait()
                    for scope in pump_scopes:
                        scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            for stream, _ in streams:
                await stream.aclose()
    assert proc.returncode is not None
    return proc.returncode


DRAIN_TIMEOUT = 5.0


async def _pump(
    stream: trio.abc.ReceiveStream, sink: OutputSink, scope: trio.CancelScope, done: trio.Event
) -> None:
    """Copy output to the sink until EOF or until `scope` is cancelled by its owner."""
    try:
        with scope:
            while data := await stream.receive_some(1 << 16):
                sink.write(data)
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        pass
    finally:
        done.set()


async def _stop(proc: trio.Process, control: StopControl) -> str:
    """SIGINT the group, wait for terraform to exit within the grace period, else SIGKILL it."""
    if proc.returncode is not None:
        return "exited"
    if not control.force.is_set():
        _signal_group(proc.pid, signal.SIGINT)
        with trio.move_on_after(control.grace):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_when, proc.wait, nursery.cancel_scope)
                nursery.start_soon(_cancel_when, control.force.wait, nursery.cancel_scope)
        if proc.returncode is not None:
            return "interrupted"
    _killpg(proc.pid)
    await proc.wait()
    return "killed"


async def _cancel_when(fn: Callable[[], Awaitable[object]], scope: trio.CancelScope) -> None:
    await fn()
    scope.cancel()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _killpg(pgid: int) -> None:
    """SIGKILL every process left in terraform's group (provider plugins). The group id is
    terraform's pid; it cannot be reused while any member is alive."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
