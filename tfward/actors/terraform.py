"""The terraform driver: one terraform process, its output, and how it is stopped.

Terraform runs in its own session and process group, so its provider plugins can be reached
with one `killpg` and none outlives the run. Output (stdout and stderr merged) goes to a file
that is read as it grows and handed to a sink; terraform never waits for the daemon, and
survives the daemon's death.

A command whose exit code recovery reads after a crash (`exit_code`: the run's `terraform
apply`) is started through a shim (`SHIM`, a few lines of /bin/sh): the shim runs terraform as
its child in the same process group and, when terraform exits, writes its exit code into
`<tag>.exit` beside the output, in place, into a file created before the start (so it needs no
free disk space). Recovery after a crash reads it: an apply whose terraform exited 0 ended
`applied` (docs/architecture.md §5). The shim catches SIGINT (a trap, which its child does not
inherit), so a cancel reaches terraform exactly as before and the shim outlives it. Other
commands (plan, init, show, hooks: nothing reads their exit code once the daemon is gone) start
directly, without the shim's shell (~2 ms) and its file.

Stopping (docs/architecture.md §3): when the caller's cancel scope is cancelled (user cancel,
stage timeout, daemon shutdown), the process group gets SIGINT, as from a terminal's Ctrl-C,
then `grace` seconds to exit, then SIGKILL. SIGINT goes to the group, not the pid: terraform
1.0 runs itself under panicwrap, whose parent ignores SIGINT, so only the child terraform
process acts on it (it stops starting operations, lets in-flight ones finish and writes
state); provider plugins ignore SIGINT by design (go-plugin eats interrupts). Setting the
`force` event (force-cancel) skips the rest of the grace period. When the driver's own child
exits while others of its group live on (the shim or terraform's panicwrap parent was killed,
the inner terraform may still be writing state), that is a cancel of the group too: SIGINT,
grace, SIGKILL — never an immediate SIGKILL.

Storage (docs/architecture.md §10): the output file a sink `attach`es (the run log) is kept
with the run directory, read back by the log if it had to drop lines from memory and by
recovery after a crash; other output files are removed when the command ends. A sink's
output file gets disk space set aside up front, so terraform's output is not lost to a disk
that fills up while it runs. A failure to record the pid (`on_start`) never stops terraform.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

import trio

from .procgroup import group_running, kill_group, signal_group

log = logging.getLogger(__name__)


class OutputSink(Protocol):
    def write(self, data: bytes | bytearray) -> None:
        """Take raw output; must not block."""


class FileOutput(Protocol):
    """What a `KeepsOutputFiles` sink hands back for one output file."""

    def write(self, data: bytes | bytearray) -> None: ...

    def end(self) -> None:
        """The process group has exited and the file is read to its end."""


@runtime_checkable
class KeepsOutputFiles(Protocol):
    """A sink that takes over an output file: the driver leaves it in place (it goes with the
    run directory), and the sink may read it again (the run log)."""

    def attach(self, path: Path) -> FileOutput: ...


# Run as `/bin/sh -c SHIM <exit file> terraform args...`; the exit file is $0.
SHIM = 'trap : INT\n"$@"\ncode=$?\nprintf "%d\\n" "$code" 1<>"$0"\nexit "$code"\n'
# The exit file before terraform exits: blank, so reading it says "no exit code yet".
EXIT_PLACEHOLDER = b" " * 15 + b"\n"
# Disk space set aside for each log output file (kept past the file's size: FALLOC_FL_KEEP_SIZE).
PREALLOCATE = 1 << 20
# After terraform's own process exits, how long the rest of its group may take to follow.
SETTLE = 1.0
GROUP_POLL = 0.05


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
    exit_code: bool = True,
) -> int:
    """Run one terraform command (or another child of a run: `label` names it in file names)
    to completion and return its exit code. Killed by signal N: 128 + N through the shim (it
    reports it the way a shell does), -N when started directly (what runs/classify.py reads
    as killed by a signal).

    Output goes to files in `output_dir` (default `<cwd>/.tfward`) named `<ns>-<label>.*` that
    are read as they grow, not to pipes: if the daemon dies (kill -9), terraform must not die of
    SIGPIPE halfway through an apply with a resource created and not yet in its state; it goes
    on, and recovery stops it gracefully.

    `on_start(pid)` runs beside the process (recording the pid); if it fails, the error is
    logged and terraform runs on. On cancellation: SIGINT, wait up to `control.grace` (or until
    `control.force`), SIGKILL the process group, collect the remaining output, then re-raise
    Cancelled. On any exit path the process group is stopped and reaped before this returns, so
    no provider process is left. stderr goes to `stderr_sink` when given (to keep stdout
    machine-readable), else to `sink`. With `exit_code`, the shim writes the exit code into an
    exit file, which stays (recovery reads it); without, the command starts directly and leaves
    no exit file. A binary that does not exist raises FileNotFoundError."""
    if shutil.which(argv[0], path=env.get("PATH")) is None:
        raise FileNotFoundError(f"{argv[0]}: no such executable")
    output_dir = output_dir or cwd / ".tfward"
    output_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{time.time_ns()}-{label}"
    outputs = [_Output.of(output_dir, tag, "out", sink)]
    if stderr_sink is not None:
        outputs.append(_Output.of(output_dir, tag, "err", stderr_sink))
    exit_file = output_dir / f"{tag}.exit" if exit_code else None
    proc = await _spawn(argv, cwd, env, outputs, exit_file)
    try:
        await _supervise(proc, outputs, control, on_start)
    finally:
        _remove([o.path for o in outputs if not o.kept])
    assert proc.returncode is not None
    return proc.returncode


async def _supervise(
    proc: trio.Process,
    outputs: list[_Output],
    control: StopControl,
    on_start: Callable[[int], Awaitable[None]] | None,
) -> None:
    """Tail the output and wait for the process; on cancellation stop it (SIGINT, grace,
    SIGKILL) and re-raise. On every path the group is stopped and reaped, and the output
    read to its end, before this returns."""
    exited = trio.Event()
    async with trio.open_nursery() as nursery:
        for output in outputs:
            nursery.start_soon(_tail, output, exited, name=f"terraform-output-{output.path.name}")
        reporting = trio.CancelScope()
        if on_start is not None:
            nursery.start_soon(_report_start, on_start, proc.pid, reporting)
        try:
            await proc.wait()
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                stopped = await _stop(proc, control)
            log.info("terraform pid %d stopped (%s)", proc.pid, stopped)
            raise
        finally:
            with trio.CancelScope(shield=True):
                reporting.cancel()
                if proc.returncode is not None:
                    await _outlived(proc.pid, control)
                kill_group(proc.pid)
                if proc.returncode is None:
                    await proc.wait()
                await _killed(proc.pid)
                exited.set()


@dataclass
class _Output:
    """One output file and where what is appended to it goes."""

    path: Path
    sink: OutputSink | FileOutput
    kept: bool  # the sink took the file over: it stays with the run directory

    @classmethod
    def of(cls, directory: Path, tag: str, stream: str, sink: OutputSink) -> _Output:
        if isinstance(sink, KeepsOutputFiles):
            path = directory / f"{tag}.log"  # recovery appends what the log lacks of *.log
            return cls(path, sink.attach(path), True)
        return cls(directory / f"{tag}.{stream}", sink, False)


async def _spawn(
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    outputs: list[_Output],
    exit_file: Path | None,
) -> trio.Process:
    # Creating local files is quick; they must exist before the child gets its descriptors.
    handles = _create_files(outputs, exit_file)
    shim = ["/bin/sh", "-c", SHIM, str(exit_file)] if exit_file is not None else []
    try:
        return await trio.lowlevel.open_process(
            [*shim, *argv], cwd=str(cwd), env=dict(env),
            stdin=subprocess.DEVNULL, stdout=handles[0],
            stderr=handles[1] if len(handles) > 1 else subprocess.STDOUT,
            start_new_session=True,
        )
    except BaseException:
        _remove([*(o.path for o in outputs), *([exit_file] if exit_file else [])])
        raise
    finally:
        for handle in handles:
            handle.close()  # the child has its own copies


def _create_files(outputs: list[_Output], exit_file: Path | None) -> list[BinaryIO]:
    handles: list[BinaryIO] = []
    try:
        for output in outputs:
            handles.append(open(output.path, "wb"))
            if output.kept:
                _preallocate(handles[-1].fileno(), PREALLOCATE)
        if exit_file is not None:
            _write_placeholder(exit_file)
    except BaseException:
        for handle in handles:
            handle.close()
        _remove([o.path for o in outputs])
        raise
    return handles


def _remove(paths: Sequence[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _write_placeholder(path: Path) -> None:
    try:
        path.write_bytes(EXIT_PLACEHOLDER)
    except OSError as exc:  # a full disk: the shim's write fails too; recovery then guesses
        log.warning("cannot create %s (%s): the exit code will not be kept on disk", path, exc)


def read_exit_code(path: Path) -> int | None:
    """The exit code the shim wrote into `path`, or None (no file, or terraform had not exited:
    it was killed along with the shim, or is still running)."""
    try:
        first = path.read_bytes().split(b"\n", 1)[0].strip()
    except OSError:
        return None
    return int(first) if first.isdigit() else None


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_FALLOC_FL_KEEP_SIZE = 1


def _preallocate(fd: int, size: int) -> None:
    """Set disk space aside for `fd` without changing its size; best effort (a filesystem
    without fallocate, or a disk already full, just gets none)."""
    _libc.fallocate(fd, _FALLOC_FL_KEEP_SIZE, ctypes.c_long(0), ctypes.c_long(size))


async def _report_start(
    on_start: Callable[[int], Awaitable[None]], pid: int, scope: trio.CancelScope
) -> None:
    with scope:
        try:
            await on_start(pid)
        except Exception:  # recording the pid must never stop terraform; recovery also finds
            # its processes by their working directory (docs/architecture.md §5)
            log.exception("could not record the pid %d of terraform; it runs on", pid)


async def _outlived(pgid: int, control: StopControl) -> None:
    """The driver's child has exited. If others of its group live on — the inner terraform
    whose panicwrap parent (or the shim) was killed, which may still be writing state — stop
    the group like a cancel: SIGINT, the grace period, SIGKILL."""
    # Not our children: there is no exit event to wait on, so poll.
    with trio.move_on_after(SETTLE):
        while group_running(pgid):  # noqa: ASYNC110
            await trio.sleep(GROUP_POLL)
        return
    log.warning(
        "terraform's process %d exited but its process group lives on: stopping it like a "
        "cancel (SIGINT, %.0fs grace, SIGKILL)",
        pgid,
        control.grace,
    )
    if not control.force.is_set():
        signal_group(pgid, signal.SIGINT)
        with trio.move_on_after(control.grace):
            while group_running(pgid) and not control.force.is_set():  # noqa: ASYNC110
                await trio.sleep(GROUP_POLL)
    kill_group(pgid)


async def _killed(pgid: int) -> None:
    """Wait (at most SETTLE) until the SIGKILLed group's members have died: a signal is
    delivered when the kernel next runs its target, so without this the run could be reported
    ended while a member of its group is still on its way out."""
    with trio.move_on_after(SETTLE):
        while group_running(pgid):  # noqa: ASYNC110
            await trio.sleep(GROUP_POLL)


TAIL_POLL = 0.02
TAIL_READ = 1 << 20


async def _tail(output: _Output, exited: trio.Event) -> None:
    """Hand what is appended to the file to its sink until the process group has exited and
    the file is read to its end. Shielded: the last lines (errors, "Interrupt received") matter
    most, and the owner sets `exited` on every path."""
    with trio.CancelScope(shield=True), open(output.path, "rb") as fh:  # noqa: ASYNC230
        while True:
            done = exited.is_set()  # read before the final pass: nothing written after is lost
            while data := fh.read(TAIL_READ):
                output.sink.write(data)
                await trio.lowlevel.checkpoint()
            if done:
                if output.kept:
                    output.sink.end()  # type: ignore[union-attr]
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
