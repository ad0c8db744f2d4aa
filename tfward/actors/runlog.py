"""A run's log: masked, parsed line by line, stored in chunks, readable while it grows.

Terraform's output arrives in arbitrary pieces. `RunLog.write` keeps the trailing partial line
back, masks the sensitive values of the workspace in whole lines (so a secret split across two
reads is still caught) in every form terraform prints them (`runs/masking.SecretMask`: quoted,
escaped, `\\uXXXX`), hands interesting lines to the output parser, and appends the result to a
pending buffer. A flusher task owned by the run's nursery stores the buffer as chunks in one
transaction at a time (seed H3: the whole log is kept). A parser exception is recorded in the
log and never stops the reader (seed H4).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import trio

from tfward.runs.masking import MASK as TEXT_MASK
from tfward.runs.masking import SecretMask
from tfward.store import artifacts
from tfward.store.db import Store

log = logging.getLogger(__name__)

MASK = TEXT_MASK.encode()  # the plan JSON the API serves uses the same marker
FLUSH_INTERVAL = 0.2
CHUNK_BYTES = 1 << 20

# Lines worth parsing; everything else is only stored. A plain alternation (no `^.*...$`
# around it) scans at several hundred MB/s; the line is cut out around each hit.
_INTERESTING = re.compile(
    rb"Error: |Plan: |complete after|Still creating|Apply complete!|Saved plan is stale"
    rb"|Interrupt received"
)


@dataclass
class OutputFacts:
    """What the parser learned from terraform's output (progress, the first error)."""

    first_error: str | None = None
    stale_plan: bool = False
    completed: int = 0
    plan_summary: str | None = None


class OutputParser:
    """Reads terraform's human output. Each method call handles one line."""

    def __init__(self) -> None:
        self.facts = OutputFacts()

    def line(self, text: str) -> None:
        # tfward's own `[tfward] Error: ...` lines (a refused remote-state read) count too.
        stripped = text.strip(" │╷╵\t").removeprefix("[tfward] ")
        if "Saved plan is stale" in stripped:
            self.facts.stale_plan = True
        if stripped.startswith("Error: ") and self.facts.first_error is None:
            self.facts.first_error = stripped[len("Error: ") :]
        elif stripped.startswith("Plan: "):
            self.facts.plan_summary = stripped
        elif "complete after" in stripped:
            self.facts.completed += 1


@dataclass
class RunLog:
    """The log of one run; live readers wait on `changed`."""

    run_id: str
    store: Store
    secrets: Iterable[str] = ()
    parser: OutputParser = field(default_factory=OutputParser)
    _partial: bytes = b""
    _pending: list[bytes] = field(default_factory=list)
    _pending_bytes: int = 0
    _next_seq: int = 0
    _mask: SecretMask = field(default_factory=SecretMask)
    _secrets: set[str] = field(default_factory=set)
    changed: trio.Event = field(default_factory=trio.Event)
    closed: bool = False
    total_bytes: int = 0
    parser_errors: int = 0

    def failure(self, what: str, code: int) -> str:
        """The error message of a failed terraform command: its exit code and the first
        `Error:` line terraform printed (already masked)."""
        first = self.parser.facts.first_error
        return f"{what} failed (exit {code})" + (f": {first}" if first else "")

    def __post_init__(self) -> None:
        self.add_secrets(self.secrets)

    def add_secrets(self, values: Iterable[str]) -> None:
        """Mask these strings too from now on, in every form terraform writes them: the run's
        own credential, and what it learns while it runs (the sensitive outputs of another
        workspace's state it read)."""
        self._secrets |= {s for s in values if s}
        self._mask = SecretMask(self._secrets)

    def mask_values(self) -> list[str]:
        """Every secret this log masks (the plan JSON of the run masks the same)."""
        return sorted(self._secrets)

    async def open(self) -> None:
        """Continue after the chunks already stored (an apply appends to its plan's log)."""
        self._next_seq = await self.store.read(lambda c: artifacts.next_log_seq(c, self.run_id))

    def write(self, data: bytes | bytearray) -> None:
        data = self._partial + data
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        if cut:
            self._add(data[:cut])

    def note(self, message: str) -> None:
        """A line of tfward's own, marked so readers tell it from terraform's output."""
        self._add(f"[tfward] {message}\n".encode())

    def _add(self, lines: bytes) -> None:
        lines = self._mask.data(lines)
        self._parse(lines)
        self._pending.append(lines)
        self._pending_bytes += len(lines)
        self.total_bytes += len(lines)
        self._wake()

    def _parse(self, lines: bytes) -> None:
        end = -1
        for match in _INTERESTING.finditer(lines):
            if match.start() < end:
                continue  # a second keyword on a line already parsed
            start = lines.rfind(b"\n", 0, match.start()) + 1
            end = lines.find(b"\n", match.end())
            end = len(lines) if end < 0 else end
            try:
                self.parser.line(lines[start:end].decode("utf-8", "replace"))
            except Exception as exc:  # H4: a parser bug must not lose output
                self.parser_errors += 1
                log.exception("output parser failed on a line of run %s", self.run_id)
                message = (
                    f"[tfward] output parser error ({type(exc).__name__}: {exc}); "
                    "output continues\n"
                )
                self._pending.append(message.encode())

    def _wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def flusher(self) -> None:
        """Store pending output every FLUSH_INTERVAL until cancelled; the owner calls `close`."""
        while True:
            await trio.sleep(FLUSH_INTERVAL)
            await self.flush()

    async def flush(self) -> None:
        """Store everything pending, in chunks of about CHUNK_BYTES, one transaction."""
        if not self._pending:
            return
        chunks: list[bytes] = []
        current: list[bytes] = []
        size = 0
        for piece in self._pending:
            current.append(piece)
            size += len(piece)
            if size >= CHUNK_BYTES:
                chunks.append(b"".join(current))
                current, size = [], 0
        if current:
            chunks.append(b"".join(current))
        self._pending, self._pending_bytes = [], 0
        first = self._next_seq
        self._next_seq += len(chunks)
        try:
            await self.store.write(lambda c: artifacts.append_log(c, self.run_id, first, chunks))
        except BaseException:
            # Keep the lines for the next attempt (the funnel's final flush). Also on Cancelled:
            # Store.write never abandons a started write, so a cancel means nothing was stored.
            self._pending[:0] = chunks
            self._pending_bytes += sum(len(c) for c in chunks)
            self._next_seq = first
            raise

    async def close(self) -> None:
        """Store the trailing partial line and everything pending. Call shielded."""
        if self._partial:
            self._add(self._partial + b"\n")
            self._partial = b""
        await self.flush()
        self.closed = True
        self._wake()
