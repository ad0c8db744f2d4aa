"""Reading a run's log while it grows: what was stored last from memory, the rest from the store.

The run log (runlog.py) keeps the chunks it stored last in a `LogWindow` (up to WINDOW_BYTES),
each at its byte offset in the stored log. Every follower of a live run reads new lines from
that window, so twenty followers of one run cost one flush, not twenty reads of the store
(docs/architecture.md §13). A follower behind the window (it came late, or resumed from an old
offset) reads the store until it has caught up.

Offsets are bytes of the log as stored (`run_log_chunks.log_offset`): a follower is sent
exactly what `GET /api/v1/runs/{id}/logs` returns, in the same places, and an offset is a
place to resume from whichever way the bytes before it were read. The window holds only what
is stored (it is filled after the flush committed), so what a follower saw never differs from
what the store holds; lines reach followers one flush (0.2 s) after terraform printed them.
"""

from __future__ import annotations

import functools
from collections import deque

from tfward.store import artifacts
from tfward.store.db import Store

WINDOW_BYTES = 4 << 20
# Stored chunks are joined in the window up to this size (an eighth of its bound at most), so
# it holds few pieces and still lets the oldest go a piece at a time.
_PIECE = 64 << 10


class LogWindow:
    """The last stored bytes of a run's log, from `start` to `end` (the stored log's length)."""

    def __init__(self, start: int = 0, bound: int = WINDOW_BYTES) -> None:
        self.bound = bound
        self.start = self.end = start
        self._pieces: deque[tuple[int, bytes]] = deque()
        self._size = 0

    def reset(self, end: int) -> None:
        """The stored log is `end` bytes long and the window holds none of them."""
        self._pieces.clear()
        self.start = self.end = end
        self._size = 0

    def add(self, data: bytes) -> None:
        """`data` was stored right after `end`; the oldest bytes go beyond the bound."""
        if not data:
            return
        if self._pieces and len(self._pieces[-1][1]) + len(data) <= min(_PIECE, self.bound // 8):
            offset, last = self._pieces.pop()
            self._pieces.append((offset, last + data))
        else:
            self._pieces.append((self.end, data))
        self.end += len(data)
        self._size += len(data)
        while self._size > self.bound and len(self._pieces) > 1:
            _, dropped = self._pieces.popleft()
            self._size -= len(dropped)
            self.start = self._pieces[0][0]

    def read(self, offset: int, limit: int) -> bytes | None:
        """About `limit` bytes from `offset` on (empty when nothing is stored past it), or None
        when the window no longer holds `offset` (read the store)."""
        if offset < self.start:
            return None
        if offset >= self.end:
            return b""
        parts: list[bytes] = []
        size = 0
        for begin, data in reversed(self._pieces):  # followers are mostly near the end
            parts.append(data)
            size += len(data)
            if begin <= offset:
                break
        parts.reverse()
        return whole_lines(b"".join(parts)[offset - (self.end - size) :], limit)


def whole_lines(data: bytes, limit: int) -> bytes:
    """The first whole lines of `data` worth at most `limit` bytes (at least one line)."""
    if len(data) <= limit:
        return data
    cut = data.rfind(b"\n", 0, limit) + 1 or data.find(b"\n", limit) + 1
    return data[:cut] if cut else data


async def read_at(
    store: Store, window: LogWindow | None, run_id: str, offset: int, limit: int
) -> bytes:
    """About `limit` bytes of the run's stored log from `offset` on (empty: nothing more is
    stored now), from the live log's window when it holds them, else from the store. A store
    read is one `Store.read` (abandoned on cancellation; StorageUnavailable when the database
    does not read)."""
    if window is not None:
        found = window.read(offset, limit)
        if found is not None:
            return found
    read = functools.partial(artifacts.read_log_at, run_id=run_id, offset=offset, limit=limit)
    _, data = await store.read(read)
    return whole_lines(data, limit)
