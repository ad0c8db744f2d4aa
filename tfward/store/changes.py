"""Change events: what a committed transaction changed, told to whoever waits for it, in process.

Store functions say what they change on the transaction's connection (`touch(conn, key, ...)`):
a run, its log, a workspace (its lock, queue, latest run, drift, state), a release, the
outbox. `Store.write` hands those keys to its `ChangeHub` only once the transaction has
committed — a rollback tells nobody anything (docs/architecture.md §13).

A waiter subscribes to the keys it cares about *before* it reads, reads, and then waits on the
subscription: a change committed after the subscription was taken is never missed, and a
change to anything else never wakes it (a long-poll on run A sleeps through any number of
commits about run B). A subscription to a whole topic (`Key.every(Topic.WORKSPACE)`) hears
every key of the topic and learns which ones changed.

Writes the hub does not hear about — a connection used outside `Store.write`, or another
daemon's whose announcement was lost — are caught by the fallback: a wait never lasts longer
than `ChangeHub.fallback` (30 s), after which the waiter reads again anyway. Other daemons on
one PostgreSQL database announce their keys with NOTIFY (store/cluster.py); the lease loop's
listener calls `publish` with them, from a task of the daemon's trio loop
(docs/architecture.md §15).

Everything here runs in the trio thread (publishing sets trio events); `touch` and `take` are
the only functions called in the store's worker threads, on their own connection.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import trio
from sqlalchemy import Connection

# How long a waiter sleeps at most without hearing of a change: the re-check that catches
# writes this process did not make (docs/architecture.md §13).
FALLBACK = 30.0
INFO_KEY = "tfward.changes"
ANY = "*"


class Topic(enum.StrEnum):
    """What a change is about."""

    RUN = "run"  # a run's row: status, stage, plan, confirmation, ...
    LOG = "log"  # new chunks of a run's stored log
    WORKSPACE = "workspace"  # its lock, queued runs, latest run, drift, latest state
    RELEASE = "release"  # a release, its items, or the run of one of its items
    RELEASES = "releases"  # a release was created (one key)
    OUTBOX = "outbox"  # a row became due: queued, retried or re-queued (one key)


class Key(NamedTuple):
    """A topic and the id of what changed (`""` for the topics that have one key)."""

    topic: Topic
    id: str = ""

    @classmethod
    def run(cls, run_id: str) -> Key:
        return cls(Topic.RUN, run_id)

    @classmethod
    def log(cls, run_id: str) -> Key:
        return cls(Topic.LOG, run_id)

    @classmethod
    def workspace(cls, ws_id: str) -> Key:
        return cls(Topic.WORKSPACE, ws_id)

    @classmethod
    def release(cls, release_id: str) -> Key:
        return cls(Topic.RELEASE, release_id)

    @classmethod
    def every(cls, topic: Topic) -> Key:
        """Subscribing to this hears every key of `topic`."""
        return cls(topic, ANY)


OUTBOX = Key(Topic.OUTBOX)
RELEASES = Key(Topic.RELEASES)


# What a transaction changed: each key, with what it now holds when the writer knows it as a
# whole (a run as the transaction left it), else None.
Changes = dict[Key, object]


def touch(conn: Connection, *keys: Key) -> None:
    """Record in the caller's transaction that it changes `keys` (published after its commit).
    What they hold afterwards is not known here: a value an earlier `touch_with` gave is
    forgotten."""
    found: Changes = conn.info.setdefault(INFO_KEY, {})
    found.update(dict.fromkeys(keys))


def touch_with(conn: Connection, key: Key, value: object) -> None:
    """`touch(conn, key)`, and `value` is what the key holds once the transaction commits,
    unless a later statement of it changes the key again (whose `touch` forgets the value).
    Listeners get it with the key (a cache of views keeps it instead of reading it again)."""
    found: Changes = conn.info.setdefault(INFO_KEY, {})
    found[key] = value


def take(conn: Connection) -> Changes:
    """The keys the transaction on `conn` recorded, with their values where known, forgotten
    on the connection (which the pool hands to the next transaction)."""
    found: Changes = conn.info.pop(INFO_KEY, {})
    return found


class Subscription:
    """Keys one waiter listens to. `wait` returns the keys changed since the last `wait` (at
    once if some already did), or an empty set when the hub's fallback interval passed first
    (or it closed). Taken before the waiter reads, so nothing committed after that is missed.
    Use it as `with hub.subscribe(...) as sub:`; leaving the block drops it."""

    def __init__(self, hub: ChangeHub) -> None:
        self._hub = hub
        self.keys: set[Key] = set()
        self.changed: set[Key] = set()
        self._event = trio.Event()

    def watch(self, *keys: Key) -> bool:
        """Listen to these keys too; returns whether any was new (the caller then reads again:
        what changed before it listened was not heard)."""
        new = [key for key in keys if key not in self.keys]
        for key in new:
            self.keys.add(key)
            self._hub._subs.setdefault(key, set()).add(self)
        return bool(new)

    def close(self) -> None:
        for key in self.keys:
            subs = self._hub._subs.get(key)
            if subs is not None:
                subs.discard(self)
                if not subs:
                    del self._hub._subs[key]
        self.keys.clear()

    def _notify(self, key: Key) -> bool:
        """Note a change; whether this woke the subscription (it had nothing pending)."""
        woke = not self._event.is_set()
        self.changed.add(key)
        self._event.set()
        return woke

    @property
    def pending(self) -> bool:
        """Whether a change (or the hub's close) waits to be taken by `wait`."""
        return self._event.is_set()

    async def wait(self) -> set[Key]:
        """Wait for a change of a watched key, at most the hub's fallback interval (a caller
        that wants less wraps it in `trio.move_on_after`). Returns (and forgets) the keys that
        changed; empty after the fallback interval, or when the hub closed. Cancellation
        leaves pending changes for the next `wait`."""
        if not self._event.is_set() and not self._hub.closed:
            with trio.move_on_after(self._hub.fallback):
                await self._event.wait()
        changed, self.changed = self.changed, set()
        if self._event.is_set():
            self._event = trio.Event()
        return changed


class ChangeHub:
    """Publishes committed changes to subscriptions; counts what it published and whom it woke
    (per topic: `published`, `wakeups`), which tests and benchmarks read."""

    def __init__(self, fallback: float = FALLBACK) -> None:
        self.fallback = fallback
        self._subs: dict[Key, set[Subscription]] = {}
        self._listeners: list[Callable[[Key, object], None]] = []
        self.published: Counter[Topic] = Counter()
        self.wakeups: Counter[Topic] = Counter()
        self.closed = False

    @contextmanager
    def subscribe(self, *keys: Key) -> Iterator[Subscription]:
        """A subscription to `keys` (more with `watch`), dropped when the block is left."""
        sub = Subscription(self)
        sub.watch(*keys)
        try:
            yield sub
        finally:
            sub.close()

    def listen(self, fn: Callable[[Key, object], None]) -> None:
        """Call `fn(key, value)` synchronously for every key published (before any waiter
        runs), `value` what the key now holds or None when the writer did not say (`touch`):
        a cache of views replaces or drops what changed before the writer's caller goes on."""
        self._listeners.append(fn)

    def publish(self, keys: Iterable[Key] | Changes) -> None:
        """Tell every subscription of each key (or of its whole topic) that it changed; `keys`
        may carry their values (`take`). Called after a commit, in the trio thread; also the
        door for a remote source of changes (keys only)."""
        values: Changes = keys if isinstance(keys, dict) else {}
        for key in keys:
            self.published[key.topic] += 1
            value = values.get(key)
            for fn in self._listeners:
                fn(key, value)
            for subs in (self._subs.get(key), self._subs.get(Key.every(key.topic))):
                for sub in subs or ():
                    if sub._notify(key):
                        self.wakeups[key.topic] += 1

    def watching(self, key: Key) -> int:
        """How many subscriptions listen to exactly `key` (for tests and metrics)."""
        return len(self._subs.get(key, ()))

    def close(self) -> None:
        """The daemon stops serving: wake every waiter for good (streams end, long-polls
        answer). Idempotent."""
        self.closed = True
        for subs in list(self._subs.values()):
            for sub in subs:
                sub._event.set()
