"""How the CLI shows things: tables, key/value blocks, and the live progress line of a run.

`Progress` owns the terminal while a run is followed: the run's log goes to stdout, and on a
TTY one status line at the bottom of stderr is redrawn in place (status, stage, elapsed). When
stderr is not a TTY, each change of status or stage is one plain line instead.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from tfward.runs.model import APPLY_STAGES, PLAN_STAGES

SPINNER = "|/-\\"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(headers)] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def fields(pairs: Sequence[tuple[str, Any]]) -> str:
    """`key: value` lines with aligned values; pairs whose value is None are left out."""
    shown = [(k, _cell(v)) for k, v in pairs if v is not None]
    width = max((len(k) for k, _ in shown), default=0)
    return "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in shown)


def as_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def output_value(output: Mapping[str, Any]) -> str:
    """A state output as terraform shows values: a string as it is, anything else as JSON
    (`["a", "b"]`, `true`, `null`), a sensitive one as `(sensitive)`."""
    if output.get("sensitive"):
        return "(sensitive)"
    value = output.get("value")
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def ago(value: str | None, now: datetime | None = None) -> str:
    when = parse_time(value)
    if when is None:
        return "-"
    return duration(((now or datetime.now(UTC)) - when).total_seconds()) + " ago"


def changes(run: Mapping[str, Any]) -> str:
    if run.get("has_changes") is None:
        return "-"
    c = run["resource_changes"]
    return f"+{c['add']} ~{c['change']} -{c['destroy']}"


def run_duration(run: Mapping[str, Any]) -> str:
    ts = run["timestamps"]
    start, end = parse_time(ts["created_at"]), parse_time(ts["finished_at"])
    if start is None:
        return "-"
    return duration(((end or datetime.now(UTC)) - start).total_seconds())


def where(run: Mapping[str, Any]) -> str:
    """`planning 2/6 init`: the status, and within a phase which stage of how many."""
    status, stage = str(run["status"]), run.get("stage")
    if not stage:
        return status
    for stages in (PLAN_STAGES, APPLY_STAGES):
        names = [str(s) for s in stages]
        if stage in names:
            return f"{status} {names.index(stage) + 1}/{len(names)} {stage}"
    return f"{status} {stage}"


def outcome(run: Mapping[str, Any]) -> str:
    """One line on how a run ended (or where it stopped)."""
    text = f"run {run['id']} {run['status']} after {run_duration(run)}"
    if run["status"] in ("applied", "planned_and_finished", "apply_pending"):
        c = run["resource_changes"]
        if run.get("has_changes") is False:
            text += ": no changes"
        elif run.get("has_changes") and run["status"] == "applied":
            text += f": {c['add']} added, {c['change']} changed, {c['destroy']} destroyed"
        elif run.get("has_changes"):
            text += f": {c['add']} to add, {c['change']} to change, {c['destroy']} to destroy"
    if run.get("error_message"):
        kind = f" ({run['error_kind']})" if run.get("error_kind") else ""
        text += f"{kind}: {run['error_message']}"
    if run.get("plan_json_error"):
        text += f" (no plan JSON: {run['plan_json_error']})"
    return text


class Progress:
    """The log on stdout and, below it, one live status line on stderr (TTY) or plain status
    lines (not a TTY). Not thread-safe: one trio task loop drives it."""

    def __init__(
        self,
        run_id: str,
        *,
        err: TextIO | None = None,
        live: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run_id = run_id
        self.err = err or sys.stderr
        self.live = self.err.isatty() if live is None else live
        self.clock = clock
        self.started = clock()
        self.text = "waiting for the daemon"
        self.note = ""
        self._drawn = False
        self._at_line_start = True
        self._frame = 0

    def update(self, run: Mapping[str, Any], note: str = "") -> None:
        """A new view of the run; in plain mode a line is printed when where it is changed."""
        text = where(run)
        changed = (text, note) != (self.text, self.note)
        self.text, self.note = text, note
        if self.live:
            self.draw()
        elif changed:
            self._line(f"tfward: {self.run_id} {text}" + (f" ({note})" if note else ""))

    def draw(self) -> None:
        if not self.live or not self._at_line_start:
            return
        self._frame += 1
        elapsed = duration(self.clock() - self.started)
        line = f"{SPINNER[self._frame % len(SPINNER)]} {self.run_id}  {self.text}  {elapsed}"
        if self.note:
            line += f"  ({self.note})"
        width = shutil.get_terminal_size((100, 24)).columns - 1
        self.err.write("\r\x1b[K" + line[:width])
        self.err.flush()
        self._drawn = True

    def clear(self) -> None:
        if self._drawn:
            self.err.write("\r\x1b[K")
            self.err.flush()
            self._drawn = False

    def log(self, data: bytes) -> None:
        """Write log output to stdout with the status line out of its way."""
        if not data:
            return
        self.clear()
        sys.stdout.flush()
        out = getattr(sys.stdout, "buffer", None)
        if out is not None:
            out.write(data)
            out.flush()
        else:
            sys.stdout.write(data.decode("utf-8", "replace"))
            sys.stdout.flush()
        self._at_line_start = data.endswith(b"\n")
        self.draw()

    def message(self, text: str) -> None:
        """A line for the user on stderr (never mixed into the log on stdout)."""
        self._line(text)

    def _line(self, text: str) -> None:
        self.clear()
        sys.stdout.flush()
        if not self._at_line_start:
            self.err.write("\n")
            self._at_line_start = True
        self.err.write(text + "\n")
        self.err.flush()
