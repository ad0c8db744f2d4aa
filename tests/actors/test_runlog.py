"""The run log (tfward/actors/runlog.py) against a real SQLite store: output kept whole and in
order, secrets masked, parser failures survived (seed H4), flush failures retried (seed H3)."""

from __future__ import annotations

import functools
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import trio
import trio.testing
from harness import create_demo_run
from sqlalchemy import Connection
from storagefaults import ReadOnlyDatabase

from tfward.actors.output import OutputParser
from tfward.actors.runlog import MASK, RunLog
from tfward.errors import StorageUnavailable
from tfward.store import artifacts
from tfward.store.changes import Key
from tfward.store.db import Store, sqlite_url

T = TypeVar("T")


class FlakyStore(Store):
    """A real store whose next `fail_writes` writes fail, as storage would, before touching
    the database."""

    fail_writes = 0

    async def write(
        self, fn: Callable[[Connection], T], *, patient: bool | None = None, lease: bool = False
    ) -> T:
        if self.fail_writes:
            self.fail_writes -= 1
            raise StorageUnavailable("io_error", "the disk went away")
        return await super().write(fn, patient=patient, lease=lease)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FlakyStore]:
    store = FlakyStore(sqlite_url(tmp_path / "tfward.db"))
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def run_id(store: Store) -> str:
    return store.run_sync(lambda conn: create_demo_run(conn, "plan_and_apply"))


def stored(store: Store, run_id: str) -> bytes:
    return b"".join(data for _, data in store.run_sync(lambda c: artifacts.read_log(c, run_id)))


def stored_seqs(store: Store, run_id: str) -> list[int]:
    return [seq for seq, _ in store.run_sync(lambda c: artifacts.read_log(c, run_id))]


def pieces(data: bytes, sizes: Iterator[int]) -> Iterator[bytes]:
    at = 0
    while at < len(data):
        size = next(sizes)
        yield data[at : at + size]
        at += size


def _random_sizes(seed: int, most: int) -> Iterator[int]:
    rng = random.Random(seed)
    while True:
        yield rng.randint(1, most)


def _constant(size: int) -> Iterator[int]:
    while True:
        yield size


TERRAFORM_OUTPUT = (
    b"".join(
        f"thing.item[{i}]: Creation complete after {i % 7}s [id=\u2500{i:05d}]\n".encode()
        for i in range(2000)
    )
    + "╷\n│ Error: Invalid reference\n│ \n│   on main.tf line 3:\n╵\n".encode()
)


@pytest.mark.parametrize(
    "sizes",
    [
        pytest.param(lambda: _constant(1), id="one-byte-at-a-time"),
        pytest.param(lambda: _constant(7), id="seven-bytes"),
        pytest.param(lambda: _constant(4096), id="pipe-sized-reads"),
        pytest.param(lambda: _random_sizes(1, 100), id="random-small-reads"),
        pytest.param(lambda: _random_sizes(2, 70_000), id="random-large-reads"),
        pytest.param(lambda: _constant(len(TERRAFORM_OUTPUT)), id="everything-at-once"),
    ],
)
async def test_output_split_at_any_byte_boundary_is_stored_whole_and_in_order(
    store: Store, run_id: str, sizes: Callable[[], Iterator[int]]
) -> None:
    log = RunLog(run_id, store)
    await log.open()
    for n, piece in enumerate(pieces(TERRAFORM_OUTPUT, sizes())):
        log.write(piece)
        if n % 500 == 0:
            await log.flush()
    await log.close()
    assert stored(store, run_id) == TERRAFORM_OUTPUT
    assert log.parser.facts.completed == 2000
    assert log.parser.facts.first_error == "Invalid reference"


async def test_every_stored_chunk_ends_at_a_line_boundary(store: Store, run_id: str) -> None:
    log = RunLog(run_id, store)
    await log.open()
    for piece in pieces(TERRAFORM_OUTPUT, _random_sizes(3, 300)):
        log.write(piece)
        await log.flush()
    await log.close()
    chunks = store.run_sync(lambda c: artifacts.read_log(c, run_id))
    assert [seq for seq, _ in chunks] == list(range(len(chunks)))
    assert all(data.endswith(b"\n") for _, data in chunks)


async def test_a_log_opened_again_continues_after_the_chunks_already_stored(
    store: Store, run_id: str
) -> None:
    plan_log = RunLog(run_id, store)
    await plan_log.open()
    plan_log.write(b"planned\n")
    await plan_log.close()
    apply_log = RunLog(run_id, store)
    await apply_log.open()
    apply_log.write(b"applied\n")
    await apply_log.close()
    assert stored(store, run_id) == b"planned\napplied\n"
    assert stored_seqs(store, run_id) == [0, 1]


# ---- masking --------------------------------------------------------------------------------

SECRET_LINE = b"export TF_VAR_password=hunter2-very-secret; done\n"


@pytest.mark.parametrize("cut", range(1, len(SECRET_LINE)), ids=lambda c: f"cut-at-{c}")
async def test_a_secret_split_across_two_writes_is_still_masked(
    store: Store, run_id: str, cut: int
) -> None:
    log = RunLog(run_id, store, secrets=["hunter2-very-secret"])
    await log.open()
    log.write(SECRET_LINE[:cut])
    log.write(SECRET_LINE[cut:])
    await log.close()
    assert stored(store, run_id) == b"export TF_VAR_password=" + MASK + b"; done\n"


async def test_a_secret_that_contains_another_secret_is_masked_whole(
    store: Store, run_id: str
) -> None:
    log = RunLog(run_id, store, secrets=["abc", "abcdef", ""])
    await log.open()
    log.write(b"x=abcdef y=abc\n")
    await log.close()
    assert stored(store, run_id) == b"x=*** y=***\n"


async def test_a_secret_in_the_trailing_partial_line_is_masked_by_close(
    store: Store, run_id: str
) -> None:
    log = RunLog(run_id, store, secrets=["s3cr3t"])
    await log.open()
    log.write(b"token s3c")
    log.write(b"r3t")
    await log.close()
    assert stored(store, run_id) == b"token ***\n"


async def test_a_secret_terraform_prints_escaped_is_masked_in_every_form(
    store: Store, run_id: str
) -> None:
    secret = 'relsecretB-<&>"\xe9\\n-4242'
    log = RunLog(run_id, store, secrets=[secret])
    await log.open()
    # A plan line (Go's %q), a tfvars snippet of a type error, `Outputs:` of jsonencode().
    log.write('      + value = "relsecretB-<&>\\"\xe9\\\\n-4242"\n'.encode())
    log.write(b'   3:   "num": "relsecretB-<&>\\"\\u00e9\\\\n-4242"\n')
    log.write('enc = "{\\"pw\\":\\"relsecretB-\\\\u003c\\\\u0026\\\\u003e'
              '\\\\\\"\xe9\\\\\\\\n-4242\\"}"\n'.encode())
    await log.close()
    assert stored(store, run_id).decode().splitlines() == [
        '      + value = "***"',
        '   3:   "num": "***"',
        'enc = "{\\"pw\\":\\"***\\"}"',
    ]


async def test_secrets_learned_while_the_run_goes_on_are_masked_from_then_on(
    store: Store, run_id: str
) -> None:
    log = RunLog(run_id, store, secrets=["tfwr_credential"])
    await log.open()
    log.write(b"before: network-secret tfwr_credential\n")
    log.add_secrets(["network-secret", ""])
    log.write(b"after: network-secret\n")
    await log.close()
    assert stored(store, run_id) == b"before: network-secret ***\nafter: ***\n"
    assert sorted(log.mask_values()) == ["network-secret", "tfwr_credential"]


async def test_an_error_line_of_tfward_itself_is_the_first_error_of_the_command(
    store: Store, run_id: str
) -> None:
    log = RunLog(run_id, store)
    await log.open()
    log.note("Error: run r of workspace rogue may not read the state of workspace 'network'")
    log.write(b"\nError: HTTP remote state endpoint invalid auth\n")
    await log.close()
    assert log.failure("terraform plan", 1) == (
        "terraform plan failed (exit 1): run r of workspace rogue may not read the state of "
        "workspace 'network'"
    )


# ---- the trailing partial line --------------------------------------------------------------


async def test_the_trailing_partial_line_is_held_back_until_close_stores_it(
    store: Store, run_id: str
) -> None:
    log = RunLog(run_id, store)
    await log.open()
    log.write(b"whole line\nhalf a li")
    await log.flush()
    assert stored(store, run_id) == b"whole line\n"
    log.write(b"ne")
    await log.close()
    assert stored(store, run_id) == b"whole line\nhalf a line\n"
    assert log.closed


async def test_a_flush_tells_followers_only_once_it_committed_and_they_read_it_from_memory(
    store: FlakyStore, run_id: str
) -> None:
    log = RunLog(run_id, store)
    await log.open()
    with store.changes.subscribe(Key.log(run_id)) as followers:
        log.write(b"first line\nhalf")
        assert not followers.pending  # nothing stored yet
        store.fail_writes = 1
        with pytest.raises(StorageUnavailable):
            await log.flush()
        assert not followers.pending and log.window.end == 0  # refused: nothing to tell
        await log.flush()
        assert followers.pending
        assert log.window.read(0, 1 << 20) == b"first line\n" == stored(store, run_id)


async def test_a_log_opened_again_continues_the_byte_offsets_of_the_stored_log(
    store: Store, run_id: str
) -> None:
    plan_log = RunLog(run_id, store)
    await plan_log.open()
    plan_log.write(b"planned\n")
    await plan_log.close()
    apply_log = RunLog(run_id, store)
    await apply_log.open()
    assert apply_log.window.read(0, 100) is None  # the plan's lines are the store's
    apply_log.write(b"applied\n")
    await apply_log.close()
    assert apply_log.window.read(8, 100) == b"applied\n"
    start, data = store.run_sync(lambda c: artifacts.read_log_at(c, run_id, 8, 100))
    assert (start, data) == (8, b"applied\n")


# ---- parser failures (seed H4) ----------------------------------------------------------------


class BrokenParser(OutputParser):
    """A parser with a bug that shows only on one line."""

    def line(self, text: str) -> None:
        if "Error: the poison line" in text:
            raise ValueError("unexpected diagnostic shape")
        super().line(text)


async def test_a_parser_that_raises_on_one_line_loses_no_output_and_the_log_says_so(
    store: Store, run_id: str
) -> None:
    log = RunLog(run_id, store, parser=BrokenParser())
    await log.open()
    output = [
        b"thing.a: Creating...\n",
        "│ Error: the poison line\n".encode(),
        b"thing.b: Creation complete after 1s [id=b]\n",
        "│ Error: Provider produced inconsistent result\n".encode(),
        b"Plan: 1 to add, 0 to change, 0 to destroy.\n",
        b"the last line\n",
    ]
    for line in output:
        log.write(line)
    await log.close()

    text = stored(store, run_id)
    assert (
        b"[tfward] output parser error (ValueError: unexpected diagnostic shape); "
        b"output continues\n"
    ) in text
    without_notes = b"".join(
        ln for ln in text.splitlines(keepends=True) if not ln.startswith(b"[tfward]")
    )
    assert without_notes == b"".join(output)
    assert log.parser_errors == 1
    facts = log.parser.facts
    assert facts.completed == 1
    assert facts.first_error == "Provider produced inconsistent result"
    assert facts.plan_summary == "Plan: 1 to add, 0 to change, 0 to destroy."


async def test_each_interesting_line_reaches_the_parser_once_and_whole(
    store: Store, run_id: str
) -> None:
    class Recording(OutputParser):
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[str] = []

        def line(self, text: str) -> None:
            self.lines.append(text)
            super().line(text)

    parser = Recording()
    log = RunLog(run_id, store, parser=parser)
    await log.open()
    log.write("│ Error: Plan: is not a keyword here, Error: nor this\n".encode())
    log.write(b"boring line\nApply complete! Resources: 1 added, 0 changed, 0 destroyed.\n")
    log.write(b"demo_thing.a: Still creating... [10s elapsed]")
    await log.close()
    assert parser.lines == [
        "│ Error: Plan: is not a keyword here, Error: nor this",
        "Apply complete! Resources: 1 added, 0 changed, 0 destroyed.",
        "demo_thing.a: Still creating... [10s elapsed]",
    ]


async def test_a_parser_that_raises_on_every_line_still_loses_no_output(
    store: Store, run_id: str
) -> None:
    class AlwaysBroken(OutputParser):
        def line(self, text: str) -> None:
            raise RuntimeError("parser bug")

    log = RunLog(run_id, store, parser=AlwaysBroken())
    await log.open()
    output = b"".join(f"Error: number {i}\n".encode() for i in range(50))
    for piece in pieces(output, _random_sizes(4, 40)):
        log.write(piece)
    await log.close()
    text = stored(store, run_id)
    assert text.count(b"output parser error") == 50
    assert (
        b"".join(ln for ln in text.splitlines(keepends=True) if not ln.startswith(b"[tfward]"))
        == output
    )


# ---- flush failures (seed H3) -------------------------------------------------------------------


async def test_a_failed_flush_keeps_the_pending_lines_for_the_next_flush(
    store: FlakyStore, run_id: str
) -> None:
    log = RunLog(run_id, store)
    await log.open()
    log.write(b"one\ntwo\n")
    await log.flush()
    log.write(b"three\n")
    store.fail_writes = 1
    with pytest.raises(StorageUnavailable, match="the disk went away"):
        await log.flush()
    log.write(b"four\n")
    await log.flush()
    assert stored(store, run_id) == b"one\ntwo\nthree\nfour\n"
    assert stored_seqs(store, run_id) == [0, 1]


async def test_a_failed_close_can_be_retried_and_stores_the_partial_line_once(
    store: FlakyStore, run_id: str
) -> None:
    log = RunLog(run_id, store)
    await log.open()
    log.write(b"done\nno newline at the end")
    store.fail_writes = 1
    with pytest.raises(StorageUnavailable):
        await log.close()
    assert not log.closed
    await log.close()
    assert stored(store, run_id) == b"done\nno newline at the end\n"
    assert log.closed


async def test_a_flush_cancelled_while_waiting_for_the_database_keeps_the_pending_lines(
    store: Store, run_id: str
) -> None:
    log = RunLog(run_id, store)
    await log.open()
    log.write(b"the last words of terraform\n")
    release = threading.Event()
    flush_scope = trio.CancelScope()

    async def flush_until_cancelled() -> None:
        with flush_scope:
            await log.flush()

    async with trio.open_nursery() as nursery:
        # Another writer holds the store's single write slot (as the funnel of another run may).
        nursery.start_soon(store.write, lambda conn: release.wait(10))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(flush_until_cancelled)
        await trio.testing.wait_all_tasks_blocked()
        flush_scope.cancel()  # the pipeline cancels its flusher when the run ends
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    await log.close()
    assert stored(store, run_id) == b"the last words of terraform\n"


async def test_the_flushers_pass_stores_what_was_pending_and_leaves_lines_added_meanwhile(
    store: Store, run_id: str
) -> None:
    """The flusher's pass (`drain=False`) does not chase the lines a run adds while it writes:
    they wait for its next pass, so its writes do not queue one after another in front of the
    run's own when a stage ends. `close` (the default, `drain`) stores everything."""
    log = RunLog(run_id, store)
    await log.open()
    log.write(b"plan output\n")
    release = threading.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.write, lambda conn: release.wait(10))  # the run's own write
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(functools.partial(log.flush, drain=False))
        await trio.testing.wait_all_tasks_blocked()
        log.note("a line of the next stage")
        release.set()
    assert stored(store, run_id) == b"plan output\n"
    assert stored_seqs(store, run_id) == [0]
    await log.close()
    assert stored(store, run_id) == b"plan output\n[tfward] a line of the next stage\n"


async def test_a_flush_with_nothing_pending_writes_nothing(store: FlakyStore, run_id: str) -> None:
    log = RunLog(run_id, store)
    await log.open()
    store.fail_writes = 1
    await log.flush()  # would raise if it tried to write
    assert store.fail_writes == 1


# ---- facts from terraform's output --------------------------------------------------------------


def _box(*lines: str) -> str:
    """A diagnostic the way Terraform 1.0 draws it (blank lines inside are "│ ", with a space)."""
    return "╷\n" + "".join(f"│ {line}\n" for line in lines) + "╵\n"


BOXED_ERROR = _box(
    "Error: Unsupported argument",
    "",
    '  on main.tf line 3, in resource "demo_thing" "a":',
    '   3:   colour = "red"',
    "",
    'An argument named "colour" is not expected here.',
)
STALE_PLAN = _box(
    "Error: Saved plan is stale",
    "",
    "The given plan file can no longer be applied because the state was changed",
    "by another operation after the plan was created.",
)


@pytest.mark.parametrize(
    ("output", "first_error", "stale_plan"),
    [
        pytest.param("Error: Invalid reference\n", "Invalid reference", False, id="plain-error"),
        pytest.param(BOXED_ERROR, "Unsupported argument", False, id="terraform-1.0-boxed-error"),
        pytest.param(
            BOXED_ERROR + "╷\n│ Error: Second problem\n╵\n",
            "Unsupported argument",
            False,
            id="only-the-first-error-is-kept",
        ),
        pytest.param(
            "demo_thing.a: Creating...\nApply complete! Resources: 1 added.\n",
            None,
            False,
            id="no-error",
        ),
        pytest.param(
            "  Error: with leading spaces\n", "with leading spaces", False, id="indented-error"
        ),
        pytest.param(
            BOXED_ERROR + STALE_PLAN,
            "Unsupported argument",
            True,
            id="stale-plan-after-another-error",
        ),
        pytest.param(STALE_PLAN, "Saved plan is stale", True, id="stale-plan-as-the-only-error"),
    ],
)
async def test_the_parser_learns_the_first_error_and_a_stale_plan_from_terraform_output(
    store: Store, run_id: str, output: str, first_error: str | None, stale_plan: bool
) -> None:
    log = RunLog(run_id, store)
    await log.open()
    for piece in pieces(output.encode(), _constant(5)):  # splits inside the box characters
        log.write(piece)
    await log.close()
    assert (log.parser.facts.first_error, log.parser.facts.stale_plan) == (first_error, stale_plan)
    assert stored(store, run_id) == output.encode()


async def test_the_parser_counts_completed_resources_and_keeps_the_plan_summary(
    store: Store, run_id: str
) -> None:
    log = RunLog(run_id, store)
    await log.open()
    log.write(
        b"demo_thing.a: Creation complete after 0s [id=a]\n"
        b"demo_thing.b: Destruction complete after 1s\n"
        b"Plan: 2 to add, 0 to change, 1 to destroy.\n"
    )
    await log.close()
    facts = log.parser.facts
    assert (facts.completed, facts.plan_summary) == (
        2,
        "Plan: 2 to add, 0 to change, 1 to destroy.",
    )


# ---- output files and storage faults (docs/architecture.md §10) ------------------------------


class GrowingFile:
    """An output file terraform appends to, feeding the log through `attach` as the driver
    does: the bytes reach the file first, then the log."""

    def __init__(self, log: RunLog, path: Path) -> None:
        self.path = path
        path.write_bytes(b"")
        self.sink = log.attach(path)

    def append(self, data: bytes) -> None:
        with open(self.path, "ab") as fh:
            fh.write(data)
        self.sink.write(data)


def chunk_marks(store: Store, run_id: str) -> list[tuple[str | None, int | None]]:
    from sqlalchemy import select

    from tfward.store.tables import run_log_chunks

    rows = store.run_sync(
        lambda c: c.execute(
            select(run_log_chunks.c.source, run_log_chunks.c.source_end)
            .where(run_log_chunks.c.run_id == run_id)
            .order_by(run_log_chunks.c.seq)
        ).all()
    )
    return [(r.source, r.source_end) for r in rows]


async def test_the_flusher_keeps_every_line_while_the_database_is_read_only_and_stores_them_after(
    tmp_path: Path, store: Store, run_id: str
) -> None:
    log = RunLog(run_id, store, secrets=["hunter2"])
    await log.open()
    output = GrowingFile(log, tmp_path / "1-apply.log")
    lines = [f"demo_thing.t[{i}]: Creation complete [pw=hunter2]\n".encode() for i in range(300)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(log.flusher)
        with ReadOnlyDatabase(tmp_path / "tfward.db"):
            for line in lines:
                output.append(line)
                await trio.sleep(0.005)  # terraform goes on printing, never told anything
            assert store.health.failing
        with trio.fail_after(30):
            while log.total_bytes and stored(store, run_id).count(b"\n") < len(lines):
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    output.sink.end()
    await log.close()
    assert stored(store, run_id) == b"".join(lines).replace(b"hunter2", MASK)
    assert chunk_marks(store, run_id)[-1] == ("1-apply.log", output.path.stat().st_size)


async def test_over_the_memory_bound_output_is_read_back_from_its_file_masked_in_order_once(
    tmp_path: Path, store: FlakyStore, run_id: str
) -> None:
    log = RunLog(run_id, store, secrets=["hunter2"], memory_bound=4096)
    await log.open()
    output = GrowingFile(log, tmp_path / "1-apply.log")
    log.note("terraform apply")
    lines = [f"line {i} secret hunter2 {'x' * (i % 90)}\n".encode() for i in range(3000)]
    for n, line in enumerate(lines):
        output.append(line)
        if n == 1500:
            log.note("halfway")
    store.fail_writes = 1
    with pytest.raises(StorageUnavailable):
        await log.flush()
    assert log._memory <= 4096 + 200  # what waits is mostly in the file, not in memory
    output.append(b"the last line has no newline")
    output.sink.end()
    await log.close()
    want = (
        b"[tfward] terraform apply\n"
        + b"".join(lines[:1501])
        + b"[tfward] halfway\n"
        + b"".join(lines[1501:])
        + b"the last line has no newline\n"
    ).replace(b"hunter2", MASK)
    assert stored(store, run_id) == want
    assert chunk_marks(store, run_id)[-1] == ("1-apply.log", output.path.stat().st_size)


async def test_recovery_appends_exactly_what_the_log_lacks_of_each_output_file(
    tmp_path: Path, store: Store, run_id: str
) -> None:
    output_dir = tmp_path / ".tfward"
    output_dir.mkdir()
    first = RunLog(run_id, store, secrets=["hunter2"])
    await first.open()
    plan = GrowingFile(first, output_dir / "1-plan.log")
    plan.append(b"Plan: 2 to add\n")
    plan.sink.end()
    apply = GrowingFile(first, output_dir / "2-apply.log")
    apply.append(b"a: Creating...\n")
    await first.flush()
    apply.append(b"a: Creation complete [hunter2]\n")  # in memory only when the daemon dies
    # After the daemon died, terraform went on writing; recovery stopped it gracefully.
    with open(apply.path, "ab") as fh:  # noqa: ASYNC230 — a small local file
        fh.write(b"b: Creation complete\nApply complete! Resources: 2 added.")
    second = RunLog(run_id, store, secrets=["hunter2"])
    await second.open()
    added = await second.recover_output(output_dir)
    await second.close()
    assert added > 0
    assert stored(store, run_id) == (
        b"Plan: 2 to add\na: Creating...\na: Creation complete [***]\nb: Creation complete\n"
        b"Apply complete! Resources: 2 added.\n"
    )
    assert second.parser.facts.apply_complete
    third = RunLog(run_id, store)  # a second recovery adds nothing more
    await third.open()
    assert await third.recover_output(output_dir) == 0


async def test_a_long_stretch_read_back_from_its_file_is_stored_a_bounded_piece_at_a_time(
    tmp_path: Path, store: FlakyStore, run_id: str
) -> None:
    log = RunLog(run_id, store, memory_bound=1024, flush_bytes=1 << 20)
    await log.open()
    output = GrowingFile(log, tmp_path / "1-apply.log")
    lines = [f"{i:06d} {'y' * (i % 200)}\n".encode() for i in range(40_000)]  # ~4.5 MB
    for line in lines:
        output.append(line)
    assert log._memory <= 1024
    output.sink.end()
    await log.close()
    assert stored(store, run_id) == b"".join(lines)
    marks = [end for _, end in chunk_marks(store, run_id) if end is not None]
    assert len(marks) >= 4 and marks == sorted(marks)  # one transaction a piece, in order
    assert marks[-1] == output.path.stat().st_size


def test_a_log_says_whether_its_run_learned_secrets_beyond_those_it_was_given() -> None:
    """What decides where an auto-applied run's plan JSON is made (actors/planner.py): a run
    that learned secrets (another workspace's state it read) masks its plan JSON with them,
    and only the run knows them."""
    log = RunLog("run-x", Store(sqlite_url(Path("/nonexistent/never-opened.db"))), ["given", ""])
    assert not log.learned_secrets()
    log.add_secrets(["given", ""])
    assert not log.learned_secrets()
    log.add_secrets(["from-another-state"])
    assert log.learned_secrets() and log.mask_values() == ["from-another-state", "given"]
