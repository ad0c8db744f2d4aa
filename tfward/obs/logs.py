"""The daemon's own log: JSON lines (or text) on stdout, with run and job context (seed M9).

The run pipeline and the outbox worker set context variables (`run_id`, `workspace`, `stage`,
`job_id`); a `logging.Filter` copies them onto every record made in that task (trio tasks and
worker threads inherit the context of the task that started them). journald picks stdout up;
`tfward serve --log-format text` is for humans.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

FIELDS = ("run_id", "workspace", "stage", "job_id")

run_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("run_id", default=None)
workspace: contextvars.ContextVar[str | None] = contextvars.ContextVar("workspace", default=None)
stage: contextvars.ContextVar[str | None] = contextvars.ContextVar("stage", default=None)
job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)

_VARS = {"run_id": run_id, "workspace": workspace, "stage": stage, "job_id": job_id}


def bind(**values: str | None) -> None:
    """Set context fields for the rest of the current task (and tasks it starts later)."""
    for name, value in values.items():
        _VARS[name].set(value)


@contextmanager
def bound(**values: str | None) -> Iterator[None]:
    """Set context fields for the duration of a block."""
    tokens = [(_VARS[name], _VARS[name].set(value)) for name, value in values.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class ContextFilter(logging.Filter):
    """Adds the context fields to every record (None where they do not apply)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _VARS.items():
            if not hasattr(record, name):
                setattr(record, name, var.get())
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context fields that are
    set, and the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = " ".join(
            f"{name}={getattr(record, name)}"
            for name in FIELDS
            if getattr(record, name, None) is not None
        )
        if not context:
            return text
        first, newline, rest = text.partition("\n")
        return f"{first} [{context}]{newline}{rest}"


# Libraries whose info lines say nothing an operator needs on every start: Alembic announces
# its plugins and dialect each time (the store logs its own line when the schema changes).
QUIET = {"alembic": logging.WARNING}


def setup(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Send the root logger's records to `stream` (stdout) as JSON lines or text. Every logger
    propagates here, Hypercorn's too (daemon/service.py hands it `hypercorn.error`), so each
    record is written once, in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    for name, floor in QUIET.items():
        logging.getLogger(name).setLevel(max(floor, root.level))
