"""Run views built once per change and served as bytes: the API's hottest read.

`GET /api/v1/runs/{id}`, its long-poll and the run event stream all want the same thing: the
run's view (views.run_view) encoded as JSON. `RunViews` encodes a run's view once and keeps the
bytes until the run changes: the store's change hub (store/changes.py) tells it synchronously,
right after the commit and before the writer's caller goes on, so a client that sees a write
answered (`POST .../confirm` -> 202) never reads the view from before it. Most writes of a run
say what the run now is (a transition reads and writes the whole run in its transaction): that
run is kept, to be encoded when first asked for, and nothing is read. Other changes drop the
entry, and the next caller reads the run once. A read that raced a change is not kept (an
epoch counts changes). Entries also expire after the hub's fallback interval, so a change made
by another process shows within it, as everywhere else (docs/architecture.md §13). At most
`size` runs are kept, least recently used out first.

The JSON is encoded exactly as Quart's `jsonify` would (sorted keys, compact, ASCII, a final
newline), so the bytes do not depend on which path served them (fastpath.py).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import trio

from tfward.runs.model import Run
from tfward.store import runs as run_store
from tfward.store.changes import Key, Topic
from tfward.store.db import Store

from .views import run_view

SIZE = 2048


def encode(value: Any) -> bytes:
    """JSON as Quart's jsonify writes it, without the final newline."""
    return json.dumps(value, ensure_ascii=True, sort_keys=True, separators=(",", ":")).encode()


def envelope(view: bytes) -> bytes:
    """`{"data": view}` as jsonify writes it (sorted keys: `data` is the only one)."""
    return b'{"data":' + view + b"}\n"


@dataclass(frozen=True, slots=True)
class _Known:
    """A run as a committed write left it, not encoded yet."""

    run: Run
    expires: float


@dataclass(frozen=True, slots=True)
class RunEntry:
    """A run as read once, its view encoded (`view`) and as a whole answer (`body`)."""

    run: Run
    view: bytes
    body: bytes
    expires: float


class RunViews:
    """The cache; one per daemon, fed by the store's change hub."""

    def __init__(self, store: Store, size: int = SIZE) -> None:
        self.store = store
        self.size = size
        self._entries: OrderedDict[str, RunEntry | _Known] = OrderedDict()
        self._epoch = 0
        self._reading: dict[str, trio.Event] = {}
        self.hits = self.misses = 0
        store.changes.listen(self._changed)

    def _changed(self, key: Key, value: object) -> None:
        if key.topic is Topic.RUN:
            self._epoch += 1
            if isinstance(value, Run):  # the run as the write left it: nothing to read
                self._keep(key.id, _Known(value, self._expiry()))
            else:
                self._entries.pop(key.id, None)

    def cached(self, run_id: str) -> RunEntry | None:
        """The run's entry if one is kept and fresh (no await: the fast path's hit)."""
        entry = self._entries.get(run_id)
        if entry is None or entry.expires <= trio.current_time():
            return None
        if isinstance(entry, _Known):
            entry = self._entries[run_id] = _entry(entry.run, entry.expires)
        self._entries.move_to_end(run_id)
        self.hits += 1
        return entry

    async def get(self, run_id: str) -> RunEntry:
        """The run's entry, read from the store when none is kept; callers that ask while a
        read of the run is in flight wait for it (twenty followers woken by one change make
        one read). Raises NotFound for an unknown run and StorageUnavailable when the database
        does not read; a cancelled read is abandoned (Store.read) and another caller reads."""
        while (entry := self.cached(run_id)) is None:
            reading = self._reading.get(run_id)
            if reading is None:
                return await self._read(run_id)
            await reading.wait()  # filled by then, unless a change raced it or it failed
        return entry

    async def _read(self, run_id: str) -> RunEntry:
        self.misses += 1
        epoch = self._epoch
        done = self._reading[run_id] = trio.Event()
        try:
            run = await self.store.read(lambda c: run_store.get_run(c, run_id))
        finally:
            del self._reading[run_id]
            done.set()
        entry = _entry(run, self._expiry())
        if epoch == self._epoch:  # no run changed while it was read: it is current
            self._keep(run_id, entry)
        return entry

    def _expiry(self) -> float:
        return trio.current_time() + self.store.changes.fallback

    def _keep(self, run_id: str, entry: RunEntry | _Known) -> None:
        self._entries[run_id] = entry
        self._entries.move_to_end(run_id)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)


def _entry(run: Run, expires: float) -> RunEntry:
    view = encode(run_view(run))
    return RunEntry(run, view, envelope(view), expires)
