"""Reading a growing run log (tfward/actors/logtail.py): the window of what was stored last,
and followers that fall behind it reading the real store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import create_demo_run

from tfward.actors.logtail import LogWindow, read_at, whole_lines
from tfward.actors.runlog import RunLog
from tfward.store import artifacts
from tfward.store.db import Store, sqlite_url


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(sqlite_url(tmp_path / "tfward.db"))
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def run_id(store: Store) -> str:
    return store.run_sync(lambda conn: create_demo_run(conn))


def lines(first: int, count: int) -> bytes:
    return b"".join(b"line %05d\n" % n for n in range(first, first + count))


def test_the_window_keeps_the_newest_bytes_within_its_bound_at_their_offsets() -> None:
    window = LogWindow(start=100, bound=30)
    for n in range(10):
        window.add(lines(n, 1))  # 11 bytes each
    assert window.end == 210
    assert window.start > 100 and window.end - window.start <= 30 + 11
    assert window.read(100, 1000) is None  # gone from memory: the store has it
    assert window.read(window.end, 1000) == b""  # nothing stored past the end yet
    assert window.read(199, 1000) == lines(9, 1)


def test_a_window_read_from_any_line_gives_every_later_line_once() -> None:
    window = LogWindow()
    text = lines(0, 2000)
    for n in range(0, 2000, 7):
        window.add(lines(n, min(7, 2000 - n)))
    got, offset = b"", 0
    while chunk := window.read(offset, 1000):
        got += chunk
        offset += len(chunk)
    assert got == text


def test_whole_lines_cut_at_a_line_end_within_the_limit_or_give_one_longer_line() -> None:
    assert whole_lines(b"ab\ncd\nef\n", 7) == b"ab\ncd\n"
    assert whole_lines(b"abcdefgh\nij\n", 4) == b"abcdefgh\n"
    assert whole_lines(b"ab\n", 100) == b"ab\n"


async def test_a_follower_behind_the_window_reads_the_store_and_gets_the_same_bytes(
    store: Store, run_id: str
) -> None:
    log = RunLog(run_id, store)
    log.window = LogWindow(bound=64)
    await log.open()
    for n in range(0, 300, 30):
        log.write(lines(n, 30))
        await log.flush()
    assert log.window.start > 0
    stored = b"".join(d for _, d in store.run_sync(lambda c: artifacts.read_log(c, run_id)))
    got, offset = b"", 0
    while chunk := await read_at(store, log.window, run_id, offset, 100):
        got += chunk
        offset += len(chunk)
    assert got == stored == lines(0, 300)
