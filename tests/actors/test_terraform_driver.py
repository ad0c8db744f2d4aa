"""The terraform driver (`run_terraform` in tfward/actors/terraform.py) with small real child
processes standing in for terraform: exit codes, output, and every way of stopping it."""

from __future__ import annotations

import os
import random
import signal
import sys
import textwrap
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest
import trio

from tfward.actors.terraform import PREALLOCATE, StopControl, read_exit_code, run_terraform

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
    exit_code: bool = True,
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
        exit_code=exit_code,
    )


# Both ways a command starts: through the exit-code shim (an apply) and directly (the rest).
both = pytest.mark.parametrize("exit_code", [True, False], ids=["shim", "direct"])


async def run_and_cancel_when(
    marker: bytes,
    argv: Sequence[str],
    tmp_path: Path,
    sink: Collector,
    control: StopControl,
    exit_code: bool = True,
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
            await run(argv, tmp_path, sink=sink, control=control, exit_code=exit_code)
    assert scope.cancelled_caught, "the child ended before it was cancelled"
    return trio.current_time() - cancelled_at[0]


# ---- exit codes and output ------------------------------------------------------------------


@both
@pytest.mark.parametrize("code", [0, 1, 2, 7], ids=lambda c: f"exit-{c}")
async def test_the_exit_code_of_the_process_is_returned(
    tmp_path: Path, code: int, exit_code: bool
) -> None:
    with trio.fail_after(BOUND):
        assert await run(sh(f"exit {code}"), tmp_path, exit_code=exit_code) == code


async def test_a_process_killed_by_a_signal_returns_128_plus_the_signal_as_a_shell_says_it(
    tmp_path: Path,
) -> None:
    with trio.fail_after(BOUND):
        assert await run(sh("kill -TERM $$"), tmp_path) == 128 + 15


async def test_a_process_started_directly_and_killed_by_a_signal_returns_minus_the_signal(
    tmp_path: Path,
) -> None:
    """What runs/classify.py reads as "killed by a signal" (transient: an OOM kill, say)."""
    with trio.fail_after(BOUND):
        assert await run(sh("kill -KILL $$"), tmp_path, exit_code=False) == -9


async def test_a_process_started_directly_leads_its_group_and_leaves_no_exit_file(
    tmp_path: Path,
) -> None:
    """Without the shim the driver's child is the command itself (no shell in between)."""
    sink = Collector()
    pids: list[int] = []

    async def on_start(pid: int) -> None:
        pids.append(pid)

    with trio.fail_after(BOUND):
        await run(sh("echo $$"), tmp_path, sink=sink, on_start=on_start, exit_code=False)
    assert pids == [int(sink.data)]
    assert list((tmp_path / ".tfward").iterdir()) == []


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


async def test_on_start_receives_the_pid_that_leads_the_process_group(tmp_path: Path) -> None:
    pids: list[int] = []

    async def on_start(pid: int) -> None:
        pids.append(pid)

    sink = Collector()
    with trio.fail_after(BOUND):
        await run(python("import os; print(os.getpgrp())"), tmp_path, sink=sink, on_start=on_start)
    assert pids == [int(sink.data)]


async def test_an_on_start_that_fails_is_logged_and_the_process_runs_to_its_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def on_start(pid: int) -> None:
        raise RuntimeError("could not record the pid")

    sink = Collector()
    with trio.fail_after(BOUND):
        code = await run(sh("sleep 0.5; echo still here"), tmp_path, sink=sink, on_start=on_start)
    assert (code, bytes(sink.data)) == (0, b"still here\n")
    assert "could not record the pid" in caplog.text


async def test_an_on_start_still_waiting_when_the_process_exits_is_cancelled(
    tmp_path: Path,
) -> None:
    ended: list[str] = []

    async def on_start(pid: int) -> None:
        try:
            await trio.sleep_forever()  # as a pid record waiting for storage would
        finally:
            ended.append("cancelled")

    with trio.fail_after(BOUND):
        assert await run(sh("exit 0"), tmp_path, on_start=on_start) == 0
    assert ended == ["cancelled"]


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


@both
async def test_cancel_sends_sigint_and_a_child_that_exits_on_it_finishes_its_cleanup(
    tmp_path: Path, exit_code: bool
) -> None:
    sink = Collector()
    took = await run_and_cancel_when(
        b"ready", EXITS_ON_SIGINT, tmp_path, sink, StopControl(grace=60), exit_code
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


@both
async def test_sigint_reaches_the_whole_process_group_so_a_wrapped_terraform_sees_it(
    tmp_path: Path, exit_code: bool
) -> None:
    sink = Collector()
    took = await run_and_cancel_when(
        b"ready", PANICWRAP_LIKE, tmp_path, sink, StopControl(grace=60), exit_code
    )
    assert bytes(sink.data) == b"ready\nworker got SIGINT\n"
    assert took < BOUND


@both
async def test_a_child_that_ignores_sigint_is_killed_when_the_grace_period_ends(
    tmp_path: Path, exit_code: bool
) -> None:
    sink = Collector()
    took = await run_and_cancel_when(
        b"ready", IGNORES_SIGINT, tmp_path, sink, StopControl(grace=0.5), exit_code
    )
    pid = int(sink.data.split()[0])
    assert sink.data.endswith(b"ready\nignoring SIGINT\n")
    assert 0.5 <= took < BOUND
    await assert_dies(pid)


@both
async def test_force_during_the_grace_period_kills_at_once(tmp_path: Path, exit_code: bool) -> None:
    sink = Collector()
    control = StopControl(grace=60)
    sink.when(b"ignoring SIGINT", control.force.set)  # force-cancel after the SIGINT landed
    took = await run_and_cancel_when(b"ready", IGNORES_SIGINT, tmp_path, sink, control, exit_code)
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
@both
async def test_a_grandchild_in_the_process_group_does_not_survive(
    tmp_path: Path, script: str, exit_code: bool
) -> None:
    sink = Collector()
    with trio.fail_after(BOUND):
        with trio.CancelScope() as scope:
            sink.when(b"ready", scope.cancel)
            started = trio.current_time()
            control = StopControl(grace=0.5)
            await run(sh(script), tmp_path, sink=sink, control=control, exit_code=exit_code)
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
    assert [[name.rsplit(".", 1)[1] for name in names] for names in seen] == [
        ["err", "exit", "out"]
    ]
    assert [p.suffix for p in output_dir.iterdir()] == [".exit"]  # the exit code stays
    assert (bytes(sink.data), bytes(err.data)) == (b"out\n", b"err\n")


def output_files(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.suffix != ".exit"]


async def test_the_output_files_default_to_a_directory_in_the_working_directory_and_are_removed(
    tmp_path: Path,
) -> None:
    with trio.fail_after(BOUND):
        await run(sh("echo hello"), tmp_path)
    assert output_files(tmp_path / ".tfward") == []


async def test_the_output_files_are_removed_after_a_cancel(tmp_path: Path) -> None:
    await run_and_cancel_when(
        b"ready", EXITS_ON_SIGINT, tmp_path, Collector(), StopControl(grace=60)
    )
    assert output_files(tmp_path / ".tfward") == []


async def test_a_command_that_cannot_start_raises_and_leaves_no_output_files(
    tmp_path: Path,
) -> None:
    with pytest.raises(FileNotFoundError):
        await run([str(tmp_path / "no-such-terraform")], tmp_path, stderr_sink=Collector())
    assert not (tmp_path / ".tfward").exists()


# ---- the exit-status shim ---------------------------------------------------------------------


def exit_file(directory: Path) -> Path:
    (found,) = directory.glob("*.exit")
    return found


@pytest.mark.parametrize("code", [0, 1, 2], ids=lambda c: f"exit-{c}")
async def test_the_shim_writes_the_exit_code_beside_the_output(tmp_path: Path, code: int) -> None:
    with trio.fail_after(BOUND):
        assert await run(sh(f"exit {code}"), tmp_path) == code
    assert read_exit_code(exit_file(tmp_path / ".tfward")) == code


async def test_the_exit_file_says_nothing_while_the_command_runs(tmp_path: Path) -> None:
    seen: list[int | None] = []
    sink = Collector()
    sink.when(b"ready", lambda: seen.append(read_exit_code(exit_file(tmp_path / ".tfward"))))
    with trio.fail_after(BOUND):
        await run(sh("echo ready; sleep 0.2"), tmp_path, sink=sink)
    assert seen == [None]
    assert read_exit_code(exit_file(tmp_path / ".tfward")) == 0


async def test_the_shim_outlives_the_sigint_of_a_cancel_and_records_how_terraform_exited(
    tmp_path: Path,
) -> None:
    sink = Collector()
    await run_and_cancel_when(b"ready", EXITS_ON_SIGINT, tmp_path, sink, StopControl(grace=60))
    assert bytes(sink.data).endswith(b"clean exit\n")
    assert read_exit_code(exit_file(tmp_path / ".tfward")) == 130


# ---- the outer process dying ------------------------------------------------------------------

# Like terraform 1.0: an outer process that ignores SIGINT and waits for an inner one, which on
# SIGINT finishes what it does and writes its state. The outer prints the inner's pid.
INNER = textwrap.dedent("""
    import os, signal, sys, time
    def interrupted(*_):
        os.write(1, b"inner got SIGINT, writing state\\n")
        time.sleep(0.3)
        open("state", "w").write("complete")
        os.write(1, b"inner wrote state\\n")
        sys.exit(1)
    signal.signal(signal.SIGINT, interrupted)
    os.write(1, b"inner ready\\n")
    while True:
        time.sleep(1)
""")
OUTER = python(f"""
    import os, signal, subprocess, sys
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inner = subprocess.Popen([sys.executable, "-c", {INNER!r}])
    os.write(1, f"outer {{os.getpid()}} inner {{inner.pid}}\\n".encode())
    sys.exit(inner.wait())
""")


def pids_of(sink: Collector) -> dict[str, int]:
    words = bytes(sink.data).split(b"\n", 1)[0].split()
    return {words[0].decode(): int(words[1]), words[2].decode(): int(words[3])}


@both
async def test_the_outer_process_killed_is_a_cancel_of_the_group_and_the_inner_one_writes_state(
    tmp_path: Path, exit_code: bool
) -> None:
    sink = Collector()
    sink.when(b"inner ready", lambda: os.kill(pids_of(sink)["outer"], signal.SIGKILL))
    with trio.fail_after(BOUND):
        control = StopControl(grace=5)
        code = await run(OUTER, tmp_path, sink=sink, control=control, exit_code=exit_code)
    assert code == (128 + 9 if exit_code else -9)
    assert bytes(sink.data).endswith(b"inner got SIGINT, writing state\ninner wrote state\n")
    assert (tmp_path / "state").read_text() == "complete"
    await assert_dies(pids_of(sink)["inner"])


async def test_the_shim_killed_is_a_cancel_of_the_group_too(tmp_path: Path) -> None:
    sink = Collector()
    shim: list[int] = []

    async def on_start(pid: int) -> None:
        shim.append(pid)

    sink.when(b"inner ready", lambda: os.kill(shim[0], signal.SIGKILL))
    with trio.fail_after(BOUND):
        code = await run(OUTER, tmp_path, sink=sink, on_start=on_start, control=StopControl(5))
    assert code == -9
    assert (tmp_path / "state").read_text() == "complete"
    await assert_dies(pids_of(sink)["inner"])


@both
async def test_a_group_that_ignores_the_sigint_after_its_outer_process_died_is_killed_after_grace(
    tmp_path: Path, exit_code: bool
) -> None:
    sink = Collector()
    script = "sleep 60 & echo $! left; trap '' INT; echo ready"
    started = trio.current_time()
    with trio.fail_after(BOUND):
        control = StopControl(grace=0.5)
        await run(sh(script), tmp_path, sink=sink, control=control, exit_code=exit_code)
    await assert_dies(int(sink.data.split()[0]))
    assert trio.current_time() - started < BOUND


# ---- output files a sink keeps ---------------------------------------------------------------


class Keeper(Collector):
    """A sink that keeps its output files (as the run log does)."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[Path] = []
        self.ended = 0

    def attach(self, path: Path) -> Keeper:
        self.paths.append(path)
        return self

    def end(self) -> None:
        self.ended += 1


async def test_an_output_file_a_sink_keeps_stays_has_space_set_aside_and_is_ended(
    tmp_path: Path,
) -> None:
    keeper, out = Keeper(), Collector()
    with trio.fail_after(BOUND):
        await run(sh("echo out; echo err >&2"), tmp_path, sink=out, stderr_sink=keeper)
    (kept,) = keeper.paths
    assert kept.suffix == ".log" and kept.read_bytes() == b"err\n" and keeper.ended == 1
    assert kept.stat().st_blocks * 512 >= PREALLOCATE  # space for output a full disk refuses
    assert sorted(p.suffix for p in (tmp_path / ".tfward").iterdir()) == [".exit", ".log"]
