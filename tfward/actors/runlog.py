"""A run's log: masked, parsed line by line, stored in chunks, readable while it grows.

Terraform's output arrives in arbitrary pieces, read from the output files the driver gives it
(`attach`). The log keeps each file's trailing partial line back, masks the sensitive values of
the workspace in whole lines (so a secret split across two reads is still caught) in every
form terraform prints them (`runs/masking.SecretMask`: quoted, escaped, `\\uXXXX`), hands
interesting lines to the output parser, and appends the result to a pending buffer. A flusher
task owned by the run's nursery stores the buffer as chunks in one transaction at a time
(seed H3: the whole log is kept). A parser exception is recorded in the log and never stops
the reader (seed H4).

Storage faults (docs/architecture.md §10): a flush that fails keeps every byte; the flusher
waits for storage (backoff, woken by its recovery) and tries again, and terraform never
notices. Up to `memory_bound` bytes wait in memory; past that, terraform output waiting to be
stored is dropped from memory and read back from its output file, which holds it already,
when it is stored (masked like live output). Each stored chunk records which output file it
holds and how far into it the log has got (`LogChunk.source_end`), so recovery after a crash
appends exactly the rest of each file. Output files stay in the run directory until it goes
(the state keeper also reads the state terraform prints there when it can write it nowhere).

Followers (docs/architecture.md §13): each flush that committed is added to the log's `window`
(logtail.py) at its byte offset in the stored log, and the store publishes the run's log key;
followers of a live run read new lines from the window, not from the store.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from tfward.errors import FencedOut, StorageUnavailable
from tfward.runs.masking import MASK as TEXT_MASK
from tfward.runs.masking import SecretMask
from tfward.store import artifacts
from tfward.store.artifacts import LogChunk
from tfward.store.db import Store
from tfward.store.health import Backoff

from .logtail import LogWindow
from .output import INTERESTING, OutputParser

log = logging.getLogger(__name__)

MASK = TEXT_MASK.encode()  # the plan JSON the API serves uses the same marker
FLUSH_INTERVAL = 0.2
CHUNK_BYTES = 1 << 20
# Bytes a flush stores in one transaction at most (so a backlog never sits in memory whole).
FLUSH_BYTES = 4 * CHUNK_BYTES
# Output waiting to be stored that is kept in memory; beyond it, it is read from its file again.
MEMORY_BOUND = 16 * CHUNK_BYTES
READ_BLOCK = 1 << 20



class OutputFile:
    """One output file of a terraform command feeding the log: the driver's sink for it.
    Offsets are bytes of the file: `cut` is just after the last whole line handed to the log,
    `stored` how far the stored log holds it."""

    def __init__(self, owner: RunLog, path: Path, offset: int = 0) -> None:
        self.owner, self.path, self.name = owner, path, path.name
        self.cut = self.stored = offset
        self.partial = b""
        self.ended = False

    def write(self, data: bytes | bytearray) -> None:
        self.owner._from_file(self, bytes(data))

    def end(self) -> None:
        """The command is over and the file read to its end: a last line without a newline
        is logged now, with one."""
        self.owner._end_file(self)


@dataclass
class _Piece:
    """Pending output: masked bytes in memory, or (`data` None) bytes [start, end) of its file.
    `pinned` pieces stay in memory (a last line given the newline its file lacks)."""

    data: bytes | None
    source: OutputFile | None = None
    start: int = 0
    end: int = 0
    pinned: bool = False

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.end - self.start


@dataclass
class RunLog:
    """The log of one run; followers read what it stored last from `window`."""

    run_id: str
    store: Store
    secrets: Iterable[str] = ()
    parser: OutputParser = field(default_factory=OutputParser)
    memory_bound: int = MEMORY_BOUND
    flush_bytes: int = FLUSH_BYTES
    _partial: bytes = b""
    _pending: list[_Piece] = field(default_factory=list)
    _memory: int = 0  # bytes of `_pending` held in memory
    _files: list[OutputFile] = field(default_factory=list)
    _next_seq: int | None = None  # where the stored log goes on; None until opened
    _masker: SecretMask = field(default_factory=SecretMask)
    _secrets: set[str] = field(default_factory=set)
    _given: frozenset[str] = frozenset()  # the secrets it was created with
    window: LogWindow = field(default_factory=LogWindow)
    closed: bool = False
    total_bytes: int = 0
    parser_errors: int = 0

    def failure(self, what: str, code: int) -> str:
        """The error message of a failed terraform command: its exit code and the first
        `Error:` line terraform printed (already masked)."""
        first = self.parser.facts.first_error
        return f"{what} failed (exit {code})" + (f": {first}" if first else "")

    def __post_init__(self) -> None:
        self._given = frozenset(s for s in self.secrets if s)
        self.add_secrets(self._given)

    def add_secrets(self, values: Iterable[str]) -> None:
        """Mask these strings too from now on, in every form terraform writes them: the run's
        own credential, and what it learns while it runs (the sensitive outputs of another
        workspace's state it read)."""
        self._secrets |= {s for s in values if s}
        self._masker = SecretMask(self._secrets)

    def mask_values(self) -> list[str]:
        """Every secret this log masks (the plan JSON of the run masks the same)."""
        return sorted(self._secrets)

    def learned_secrets(self) -> bool:
        """Whether it masks secrets the run learned while it ran, beyond those it was given."""
        return not self._secrets <= self._given

    async def open(self, end: tuple[int, int] | None = None) -> None:
        """Continue after the chunks already stored (an apply appends to its plan's log):
        `end` — the next chunk's seq and the stored log's length (`artifacts.log_end`) — when
        the caller read it in a transaction of its own (the pipeline's first), else read now.
        Waits for storage in a patient context. A log never opened opens before its first
        flush."""
        if end is None:
            end = await self.store.read(lambda c: artifacts.log_end(c, self.run_id))
        self._next_seq, offset = end
        self.window.reset(offset)

    # ---- input ----------------------------------------------------------------------------

    def attach(self, path: Path, offset: int = 0) -> OutputFile:
        """Take terraform output from `path` (from `offset` on). The file must stay until the
        log is closed: output dropped from memory is read back from it."""
        source = OutputFile(self, path, offset)
        self._files.append(source)
        return source

    def write(self, data: bytes | bytearray) -> None:
        """Output that has no file behind it (kept in memory until stored)."""
        data = self._partial + data
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        if cut:
            self._add(data[:cut])

    def note(self, message: str) -> None:
        """A line of tfward's own, marked so readers tell it from terraform's output."""
        self._add(f"[tfward] {message}\n".encode())

    def _from_file(self, source: OutputFile, data: bytes) -> None:
        data = source.partial + data
        cut = data.rfind(b"\n") + 1
        source.partial = data[cut:]
        if cut:
            start, source.cut = source.cut, source.cut + cut
            self._add(data[:cut], source, start)

    def _end_file(self, source: OutputFile) -> None:
        source.ended = True
        if source.partial:
            tail, source.partial = source.partial, b""
            start, source.cut = source.cut, source.cut + len(tail)
            self._add(tail + b"\n", source, start, end=source.cut)

    def _add(
        self,
        lines: bytes,
        source: OutputFile | None = None,
        start: int = 0,
        *,
        end: int | None = None,
    ) -> None:
        pinned = end is not None  # the bytes differ from the file's: keep them in memory
        end = start + len(lines) if end is None else end
        lines = self._mask(lines)
        self._parse(lines)
        last = self._pending[-1] if self._pending else None
        if (
            source and not pinned and last and last.source is source and last.data is None
            and last.end == start
        ):
            last.end = end  # this file is being read back from disk already: keep it there
        else:
            self._pending.append(_Piece(lines, source, start, end, pinned and source is not None))
            self._memory += len(lines)
        self.total_bytes += len(lines)
        if self._memory > self.memory_bound:
            self._spill()

    def _mask(self, lines: bytes) -> bytes:
        return self._masker.data(lines)

    def _parse(self, lines: bytes) -> None:
        end = -1
        for match in INTERESTING.finditer(lines):
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
                self._pending.append(_Piece(message.encode()))
                self._memory += len(message)

    def _spill(self) -> None:
        """Over the memory bound: terraform output waiting to be stored is dropped from memory;
        its file holds it, and the flush reads it back. Adjacent ranges of a file merge."""
        merged: list[_Piece] = []
        for piece in self._pending:
            if piece.source is not None and piece.data is not None and not piece.pinned:
                piece = _Piece(None, piece.source, piece.start, piece.end)
            last = merged[-1] if merged else None
            if (
                last is not None and piece.data is None and last.data is None
                and last.source is piece.source and last.end == piece.start
            ):
                last.end = piece.end
            else:
                merged.append(piece)
        self._pending = merged
        self._memory = sum(len(p.data) for p in merged if p.data is not None)

    # ---- storing --------------------------------------------------------------------------

    async def flusher(self) -> None:
        """Store pending output every FLUSH_INTERVAL until cancelled; the owner calls `close`.
        A flush storage refuses is tried again after a backoff (cut short when storage
        recovers); nothing is lost meanwhile and the flusher never fails for it."""
        backoff = Backoff()
        while True:
            await trio.sleep(FLUSH_INTERVAL)
            try:
                await self.flush(drain=False)
            except StorageUnavailable:
                await self.store.health.wait(backoff.next())
            except FencedOut:
                # Another daemon took the workspace over: it finishes the run (and stores
                # the rest of the output files, if it reaches them); this one stops writing.
                log.warning("run %s: the workspace was taken over; log writes stop", self.run_id)
                return
            except Exception:  # nothing may take terraform down through the flusher: the
                # bytes stay pending, the run's close (in the funnel) tries them again
                log.exception("run %s: storing its log failed; trying again", self.run_id)
                await trio.sleep(backoff.next())
            else:
                backoff.reset()

    async def flush(self, *, patient: bool = False, drain: bool = True) -> None:
        """Store everything pending, FLUSH_BYTES per transaction. One attempt, or with
        `patient` as patient as the calling context (`store.health.patient`); on error every
        byte stays pending. Without `drain`, only what was pending when it began (the
        flusher's pass: lines added meanwhile wait for the next one, so its writes do not
        chase the run's own, one after another, when a stage ends)."""
        due = sum(piece.size for piece in self._pending)
        while self._pending and (drain or due > 0):
            if self._next_seq is None:
                await self.open()
            assert self._next_seq is not None
            first_seq = self._next_seq
            batch = self._take(self.flush_bytes)
            try:
                chunks, rest = await trio.to_thread.run_sync(self._chunks, batch, self.flush_bytes)
                append = functools.partial(
                    artifacts.append_log, run_id=self.run_id, first_seq=first_seq,
                    chunks=chunks, first_offset=self.window.end,
                )
                await self.store.write(append, patient=None if patient else False)
            except BaseException:
                # Also on Cancelled: Store.write never abandons a started write, so a cancel
                # means nothing was stored.
                self._pending[:0] = batch
                self._memory += sum(len(p.data) for p in batch if p.data is not None)
                raise
            due -= sum(piece.size for piece in batch)
            if rest is not None:
                self._pending.insert(0, rest)  # a range read only in part this time
                due += rest.size
            self._next_seq = first_seq + len(chunks)
            for chunk in chunks:
                self.window.add(chunk.data)  # stored: followers may read it from memory
                for source in self._files:
                    if source.name == chunk.source and chunk.source_end is not None:
                        source.stored = max(source.stored, chunk.source_end)

    def _take(self, budget: int) -> list[_Piece]:
        """Pieces from the front of the queue worth about `budget` bytes."""
        batch: list[_Piece] = []
        size = 0
        while self._pending and size < budget:
            piece = self._pending.pop(0)
            batch.append(piece)
            size += piece.size
            if piece.data is not None:
                self._memory -= len(piece.data)
        return batch

    def _chunks(self, batch: list[_Piece], budget: int) -> tuple[list[LogChunk], _Piece | None]:
        """The batch as chunks of about CHUNK_BYTES (in a worker thread: ranges are read from
        their files). A chunk holds output of one file at most, and records how far into it.
        A last range bigger than what is left of `budget` is read up to a line boundary; the
        rest of it is returned, to be stored next."""
        chunks: list[LogChunk] = []
        parts: list[bytes] = []
        size = total = 0
        source: str | None = None
        end: int | None = None
        rest: _Piece | None = None
        for n, piece in enumerate(batch):
            if piece.source is not None and source not in (None, piece.source.name) or (
                size >= CHUNK_BYTES
            ):
                chunks.append(LogChunk(b"".join(parts), source, end))
                parts, size, source, end = [], 0, None, None
            piece_end = piece.end
            if piece.data is not None:
                data = piece.data
            else:
                room = budget - total if n == len(batch) - 1 else piece.size
                data, piece_end = self._read_back(piece, room)
                if piece_end < piece.end:
                    rest = _Piece(None, piece.source, piece_end, piece.end)
            parts.append(data)
            size, total = size + len(data), total + len(data)
            if piece.source is not None:
                source, end = piece.source.name, piece_end
        if parts:
            chunks.append(LogChunk(b"".join(parts), source, end))
        return chunks, rest

    def _read_back(self, piece: _Piece, room: int) -> tuple[bytes, int]:
        """Up to `room` bytes (at least CHUNK_BYTES and one whole line) of a range on disk,
        masked, and the offset where what was read ends."""
        assert piece.source is not None
        want = piece.end - piece.start
        first = min(want, max(room, CHUNK_BYTES))
        try:
            with open(piece.source.path, "rb") as fh:
                fh.seek(piece.start)
                raw = fh.read(first)
                while len(raw) < want and b"\n" not in raw:  # one line longer than `room`
                    more = fh.read(min(want - len(raw), READ_BLOCK))
                    if not more:
                        break
                    raw += more
        except OSError as exc:
            return f"[tfward] {want} bytes of terraform output are lost: {exc}\n".encode(), (
                piece.end
            )
        if len(raw) == want:
            return self._mask(raw), piece.end
        cut = raw.rfind(b"\n") + 1
        if cut and len(raw) >= first:
            return self._mask(raw[:cut]), piece.start + cut  # the rest is read next time
        lost = f"[tfward] {want - len(raw)} bytes of terraform output are lost: the file is short\n"
        return self._mask(raw) + lost.encode(), piece.end

    async def close(self) -> None:
        """Store the trailing partial lines and everything pending. Call shielded. Storage
        faults are waited out as the calling context allows (the funnel's gives up only when
        the daemon does); StorageUnavailable leaves every byte pending or in its file."""
        for source in self._files:
            if not source.ended:
                self._end_file(source)
        if self._partial:
            self._add(self._partial + b"\n")
            self._partial = b""
        await self.flush(patient=True)
        self.closed = True

    async def recover_output(self, output_dir: Path) -> int:
        """Append to the log whatever of the output files in `output_dir` it does not hold yet
        (after a crash: terraform kept writing after the daemon died). Returns the bytes added.
        The caller stores them (`close`)."""
        marks = await self.store.read(lambda c: artifacts.log_sources(c, self.run_id))
        added = 0
        paths = await trio.to_thread.run_sync(
            lambda: sorted(output_dir.glob("*.log")) if output_dir.is_dir() else []
        )
        for path in paths:
            source = self.attach(path, marks.get(path.name, 0))
            before = self.total_bytes
            offset = source.cut
            while block := await trio.to_thread.run_sync(_read_at, path, offset):
                source.write(block)
                offset += len(block)
            source.end()
            added += self.total_bytes - before
        return added


def _read_at(path: Path, offset: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read(READ_BLOCK)
