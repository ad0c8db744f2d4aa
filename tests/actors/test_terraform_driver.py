"""The terraform driver (`run_terraform` in tfward/actors/terraform.py) with small real child
processes standing in for terraform: exit codes, output, and every way of stopping it."""

from __future__ import annotations

import os
import random
import sys
import textwrap
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest
import trio

from tfward.actors.terraform import StopControl, run_terraform

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
BOUND = 10.0  # seconds any test here may take at most; every wait is under trio.fail_after


class Collector:
    """An output sink that keeps everything and runs callbacks when a marker first appears."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._callbacks: list[tuple[bytes, Callable[[], object]]] = []

    def write(self, data: bytes | bytearray) -> None:
        self.data += data
        due = [(m, fn) for m, fn in self._callbacks if m in self.data]
        self._callbacks = [(m, fn) for m, fn in self._callbacks if m not in self.data]
        for _, fn in due:
            fn()

    def when(self, marker: bytes, fn: Callable[[], object]) -> None:
        self._callbacks.append((marker, fn))


def python(source: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(source)]


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


async def assert_dies(pid: int, *, within: float = 2.0) -> None:
    """Fail unless process `pid` has exited, or exits within `within` seconds.

    `os.kill(pid, 0)` cannot tell: in this sandbox PID 1 does not reap orphans, so a killed
    grandchild stays a zombie that it still finds, and a process that got SIGKILL closes its
    pipes (ending our read) a moment before it is a zombie. A pidfd becomes readable exactly when
    the process has exited; none of the processes here exits on its own within `within`."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with trio.fail_after(within):
            await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


async def run(
    argv: Sequence[str],
    tmp_path: Path,
    *,
    sink: Collector | None = None,
    control: StopControl | None = None,
    output_dir: Path | None = None,
    on_start: Callable[[int], Awaitable[None]] | None = None,
    stderr_sink: Collector | None = None,
) -> int:
    return await run_terraform(
        argv,
        cwd=tmp_path,
        env=ENV,
        sink=sink or Collector(),
        control=control or StopControl(grace=BOUND),
        output_dir=output_dir,
        on_start=on_start,
        stderr_sink=stderr_sink,
    )


async def run_and_cancel_when(
    marker: bytes, argv: Sequence[str], tmp_path: Path, sink: Collector, control: StopControl
) -> float:
    """Run `argv`, cancel the caller's scope once `marker` is in the output, and return how long
    the driver took to give up after the cancel."""
    cancelled_at: list[float] = []

    def cancel() -> None:
        cancelled_at.append(trio.current_time())
        scope.cancel()

    with trio.fail_after(BOUND):
        with trio.CancelScope() as scope:
            sink.when(marker, cancel)
            await run(argv, tmp_path, sink=sink, control=control)
    assert scope.cancelled_caught, "the child ended before it was cancelled"
    return trio.current_time() - cancelled_at[0]


# ---- exit codes and output ------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 2, 7], ids=lambda c: f"exit-{c}")
async def test_the_exit_code_of_the_process_is_returned(tmp_path: Path, code: int) -> None:
    with trio.fail_after(BOUND):
        assert await run(sh(f"exit {code}"), tmp_path) == code


async def test_a_process_killed_by_a_signal_returns_the_negative_signal_number(
    tmp_path: Path,
) -> None:
    with trio.fail_after(BOUND):
        assert await run(sh("kill -TERM $$"), tmp_path) == -15


async def test_the_process_runs_in_the_given_directory(tmp_path: Path) -> None:
    sink = Collector()
    with trio.fail_after(BOUND):
        await run(sh("pwd -P"), tmp_path, sink=sink)
    assert sink.data.decode().strip() == str(await trio.Path(tmp_path).resolve())


def numbered_lines(count: int) -> list[str]:
    """Lines of random length (0 to 300 filler bytes); the child builds the same list."""
    rng = random.Random(7)
    return [f"line {i} " + "x" * rng.randint(0, 300) + "\n" for i in range(count)]


async def test_all_output_reaches_the_sink_in_order(tmp_path: Path) -> None:
    # Writes of every size, stdout and stderr interleaved: both are one pipe when no stderr
    # sink is given, so the order is the order of the writes.
    child = python("""
        import os, random
        rng = random.Random(7)
        for i in range(3000):
            line = f"line {i} " + "x" * rng.randint(0, 300) + "\\n"
            os.write(2 if i % 5 == 0 else 1, line.encode())
    """)
    sink = Collector()
    with trio.fail_after(BOUND):
        assert await run(child, tmp_path, sink=sink) == 0
    assert sink.data.decode() == "".join(numbered_lines(3000))


async def test_the_last_bytes_before_exit_arrive_even_without_a_newline(tmp_path: Path) -> None:
    # The last bytes, written just before exit and without a newline, still arrive.
    sink = Collector()
    with trio.fail_after(BOUND):
        await run(sh("printf 'first\\n'; printf 'last words'"), tmp_path, sink=sink)
    assert bytes(sink.data) == b"first\nlast words"


async def test_stderr_goes_to_the_stderr_sink_when_one_is_given(tmp_path: Path) -> None:
    out, err = Collector(), Collector()
    with trio.fail_after(BOUND):
        await run(
            sh("echo out1; echo err1 >&2; echo out2; echo err2 >&2"),
            tmp_path,
            sink=out,
            stderr_sink=err,
        )
    assert (bytes(out.data), bytes(err.data)) == (b"out1\nout2\n", b"err1\nerr2\n")


async def test_stderr_is_merged_into_the_sink_in_order_without_a_stderr_sink(
    tmp_path: Path,
) -> None:
    sink = Collector()
    with trio.fail_after(BOUND):
        await run(sh("echo out1; echo err1 >&2; echo out2"), tmp_path, sink=sink)
    assert bytes(sink.data) == b"out1\nerr1\nout2\n"


async def test_on_start_receives_the_pid_of_the_process(tmp_path: Path) -> None:
    pids: list[int] = []

    async def on_start(pid: int) -> None:
        pids.append(pid)

    sink = Collector()
    with trio.fail_after(BOUND):
        await run(sh("echo $$"), tmp_path, sink=sink, on_start=on_start)
    assert pids == [int(sink.data)]


async def test_an_on_start_that_fails_kills_the_process_and_the_error_propagates(
    tmp_path: Path,
) -> None:
    pids: list[int] = []

    async def on_start(pid: int) -> None:
        pids.append(pid)
        raise RuntimeError("could not record the pid")

    with trio.fail_after(BOUND):
        with pytest.RaisesGroup(
            pytest.RaisesExc(RuntimeError, match="could not record the pid"),
            allow_unwrapped=True,
            flatten_subgroups=True,
        ):
            await run(sh("exec sleep 60"), tmp_path, on_start=on_start)
    await assert_dies(pids[0])


# ---- stopping -------------------------------------------------------------------------------

# Each line is one os.write, so a signal handler cannot land in the middle of one.
EXITS_ON_SIGINT = python("""
    import os, signal, sys, time
    def interrupted(*_):
        os.write(1, b"got SIGINT, cleaning up\\n")
        time.sleep(0.2)
        os.write(1, b"clean exit\\n")
        sys.exit(130)
    signal.signal(signal.SIGINT, interrupted)
    os.write(1, b"ready\\n")
    while True:
        time.sleep(1)
""")

IGNORES_SIGINT = python("""
    import os, signal, time
    signal.signal(signal.SIGINT, lambda *_: os.write(1, b"ignoring SIGINT\\n"))
    os.write(1, f"{os.getpid()} ready\\n".encode())
    while True:
        time.sleep(1)
""")


async def test_cancel_sends_sigint_and_a_child_that_exits_on_it_finishes_its_cleanup(
    tmp_path: Path,
) -> None:
    sink = Collector()
    took = await run_and_cancel_when(
        b"ready", EXITS_ON_SIGINT, tmp_path, sink, StopControl(grace=60)
    )
    assert bytes(sink.data) == b"ready\ngot SIGINT, cleaning up\nclean exit\n"
    assert took < BOUND  # it ended by itself, long before the 60 s grace would end in SIGKILL


# Terraform 1.0 runs under panicwrap: a parent that ignores SIGINT, and a child that acts on it.
PANICWRAP_WORKER = textwrap.dedent("""
    import os, signal, sys, time
    def interrupted(*_):
        os.write(1, b"worker got SIGINT\\n")
        sys.exit(130)
    signal.signal(signal.SIGINT, interrupted)
    os.write(1, b"ready\\n")
    while True:
        time.sleep(1)
""")
PANICWRAP_LIKE = python(f"""
    import signal, subprocess, sys
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker = subprocess.Popen([sys.executable, "-c", {PANICWRAP_WORKER!r}])
    sys.exit(worker.wait())
""")


async def test_sigint_reaches_the_whole_process_group_so_a_wrapped_terraform_sees_it(
    tmp_path: Path,
) -> None:
    sink = Collector()
    took = await run_and_cancel_when(
        b"ready", PANICWRAP_LIKE, tmp_path, sink, StopControl(grace=60)
    )
    assert bytes(sink.data) == b"ready\nworker got SIGINT\n"
    assert took < BOUND


async def test_a_child_that_ignores_sigint_is_killed_when_the_grace_period_ends(
    tmp_path: Path,
) -> None:
    sink = Collector()
    took = await run_and_cancel_when(
        b"ready", IGNORES_SIGINT, tmp_path, sink, StopControl(grace=0.5)
    )
    pid = int(sink.data.split()[0])
    assert sink.data.endswith(b"ready\nignoring SIGINT\n")
    assert 0.5 <= took < BOUND
    await assert_dies(pid)


async def test_force_during_the_grace_period_kills_at_once(tmp_path: Path) -> None:
    sink = Collector()
    control = StopControl(grace=60)
    sink.when(b"ignoring SIGINT", control.force.set)  # force-cancel after the SIGINT landed
    took = await run_and_cancel_when(b"ready", IGNORES_SIGINT, tmp_path, sink, control)
    assert sink.data.endswith(b"ignoring SIGINT\n")
    assert took < 5
    await assert_dies(int(sink.data.split()[0]))


async def test_force_set_before_the_cancel_kills_without_sigint(tmp_path: Path) -> None:
    sink = Collector()
    control = StopControl(grace=60)
    control.force.set()
    took = await run_and_cancel_when(b"ready", IGNORES_SIGINT, tmp_path, sink, control)
    assert b"ignoring SIGINT" not in sink.data
    assert took < 5


# ---- the process group ------------------------------------------------------------------------

GRANDCHILD = "sleep 60 & echo $! grandchild; "


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(GRANDCHILD, id="child-exits-leaving-it-behind"),
        pytest.param(GRANDCHILD + "echo ready; wait", id="child-cancelled"),
    ],
)
async def test_a_grandchild_in_the_process_group_does_not_survive(
    tmp_path: Path, script: str
) -> None:
    sink = Collector()
    with trio.fail_after(BOUND):
        with trio.CancelScope() as scope:
            sink.when(b"ready", scope.cancel)
            started = trio.current_time()
            await run(sh(script), tmp_path, sink=sink, control=StopControl(grace=0.5))
    grandchild = int(sink.data.split()[0])
    await assert_dies(grandchild)
    # It was killed, not waited for: `sleep 60` would have kept going far beyond this.
    assert trio.current_time() - started < BOUND


# ---- output files ---------------------------------------------------------------------------


async def test_output_goes_through_files_in_the_output_dir_that_are_removed_afterwards(
    tmp_path: Path,
) -> None:
    output_dir = tmp_path / "out"
    seen: list[list[str]] = []

    async def on_start(pid: int) -> None:
        seen.append(sorted(p.name for p in output_dir.iterdir()))

    sink, err = Collector(), Collector()
    with trio.fail_after(BOUND):
        await run(
            sh("echo out; echo err >&2"),
            tmp_path,
            sink=sink,
            stderr_sink=err,
            output_dir=output_dir,
            on_start=on_start,
        )
    assert [[name.rsplit(".", 1)[1] for name in names] for names in seen] == [["err", "out"]]
    assert list(output_dir.iterdir()) == []
    assert (bytes(sink.data), bytes(err.data)) == (b"out\n", b"err\n")


async def test_the_output_files_default_to_a_directory_in_the_working_directory_and_are_removed(
    tmp_path: Path,
) -> None:
    with trio.fail_after(BOUND):
        await run(sh("echo hello"), tmp_path)
    assert list((tmp_path / ".tfward").iterdir()) == []


async def test_the_output_files_are_removed_after_a_cancel(tmp_path: Path) -> None:
    await run_and_cancel_when(
        b"ready", EXITS_ON_SIGINT, tmp_path, Collector(), StopControl(grace=60)
    )
    assert list((tmp_path / ".tfward").iterdir()) == []


async def test_a_command_that_cannot_start_raises_and_leaves_no_output_files(
    tmp_path: Path,
) -> None:
    with pytest.raises(FileNotFoundError):
        await run([str(tmp_path / "no-such-terraform")], tmp_path, stderr_sink=Collector())
    assert list((tmp_path / ".tfward").iterdir()) == []
