"""The exceptions tfward raises on purpose, all under one base class.

The CLI and the HTTP layer catch ``TfwardError`` to tell "the input or the environment is
wrong" (print the message, exit non-zero) from bugs (let the traceback through). Anything
that is not a ``TfwardError`` is treated as a bug.

    Exception
     └── TfwardError          base class; never raised directly
          ├── ConfigError         the config file is missing, is not TOML, or fails validation
          │                       (every problem of the file at once: `problems`)
          ├── AlreadyRunning      another process holds the data dir's (or database's) lock
          │                       (files.lock_exclusive, at daemon start; CLI: exit 2)
          ├── InvalidTransition   the run state machine refuses an action (runs/model.py; API: 409)
          ├── NotFound            a workspace, run, state version does not exist (API: 404)
          ├── BadRequest          a request body names unknown fields or bad values (API: 422)
          ├── WorkspaceLocked     the workspace lock is held by someone else (store; API: 409)
          ├── StateRejected       a state file is older or of another lineage than the current
          │                       one, or is not a terraform state (store/states.py)
          ├── PlanUnusable        a saved plan is missing, corrupt, or stale: re-plan (seed 003)
          ├── AccessDenied        a run-task token is missing, invalid, used, or for another
          │                       result (runtasks/callbacks.py; API: 401, or 403)
          ├── StorageUnavailable  the database or the data dir's disk does not take a write (or
          │                       a read) now: full, read-only, locked, failing (store/health.py;
          │                       API: 503)
          ├── FencedOut           this daemon no longer holds the lease of the workspace a write
          │                       belongs to: another daemon took it over (store/fencing.py);
          │                       the run task ends quietly, the new owner finishes the run
          └── StageFailed         terraform or a stage of the pipeline failed; carries the
                                  run's error kind (actors/pipeline.py)

When you add a class below, add it to the tree above as well.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "AccessDenied",
    "AlreadyRunning",
    "BadRequest",
    "ConfigError",
    "FencedOut",
    "InvalidTransition",
    "NotFound",
    "PlanUnusable",
    "StageFailed",
    "StateRejected",
    "StorageUnavailable",
    "TfwardError",
    "WorkspaceLocked",
]


class TfwardError(Exception):
    """Base class for every error tfward raises on purpose."""


class ConfigError(TfwardError):
    """The config file can't be used.

    ``file`` is the path as the caller gave it (so messages read the way the operator typed
    it), ``key_path`` locates the value (``workspace[1].vars.region``; empty when the problem
    is the file as a whole) and ``message`` says what was expected and what was found.

    The config loader collects every problem of a file before it refuses it: ``problems``
    holds them in file order (just this error when it stands alone), and ``file``,
    ``key_path`` and ``message`` are the first one's. ``str()`` is one problem per line.
    """

    file: Path
    key_path: str
    message: str
    problems: tuple[ConfigError, ...]

    def __init__(
        self,
        file: str | os.PathLike[str],
        key_path: str,
        message: str,
        problems: tuple[ConfigError, ...] = (),
    ) -> None:
        # Passing every argument to Exception keeps the error picklable (trio/multiprocessing
        # and pytest-xdist re-create exceptions from .args).
        super().__init__(file, key_path, message, problems)
        self.file = Path(file)
        self.key_path = key_path
        self.message = message
        self.problems = problems or (self,)

    @classmethod
    def collected(cls, problems: Sequence[ConfigError]) -> ConfigError:
        """One error for several problems (at least one), the first one's fields in front;
        a single problem is returned as it is."""
        first = problems[0]
        if len(problems) == 1:
            return first
        return cls(first.file, first.key_path, first.message, tuple(problems))

    def line(self) -> str:
        """This problem alone, on one line."""
        if self.key_path:
            return f"{self.file}: {self.key_path}: {self.message}"
        return f"{self.file}: {self.message}"

    def __str__(self) -> str:
        return "\n".join(problem.line() for problem in self.problems)


class AlreadyRunning(TfwardError):
    """Another process holds an exclusive lock tfward needs: a second daemon on the same data
    dir or database. ``pid`` is the holder's (None while it is still writing it), ``lock_file``
    the file locked, ``what`` what it guards ("the data dir /var/lib/tfward")."""

    def __init__(self, what: str, lock_file: Path, pid: int | None) -> None:
        super().__init__(what, lock_file, pid)
        self.what = what
        self.lock_file = Path(lock_file)
        self.pid = pid

    def __str__(self) -> str:
        holder = f"pid {self.pid}" if self.pid is not None else "another process"
        return (
            f"{self.what} is in use by another tfward ({holder} holds {self.lock_file}); "
            "stop it first: each daemon needs its own data_dir and SQLite database"
        )


class InvalidTransition(TfwardError):
    """The run state machine refused an action; the message says why, for an API client."""


class NotFound(TfwardError):
    """A named object does not exist. Raised by the store; the API answers 404."""


class BadRequest(TfwardError):
    """A request is well-formed JSON but wrong: unknown fields, bad values. The API answers 422."""


class WorkspaceLocked(TfwardError):
    """The workspace lock is held by someone else. The message uses the wording HCP clients
    match on: ``The workspace is locked by Run run-...`` / ``... locked by User <name>``."""


class StateRejected(TfwardError):
    """A state file cannot become the current state: lower serial, other lineage, not JSON."""


class PlanUnusable(TfwardError):
    """A saved plan cannot be applied (missing, corrupt, or stale); the run is planned again."""


class AccessDenied(TfwardError):
    """A request carrying a run-task access token is refused. ``status`` is 401 (no token, bad
    signature, expired, already used or revoked) or 403 (a valid token for another result)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return self.message


class StorageUnavailable(TfwardError):
    """Storage does not answer: the database or the data dir's disk refused a write or a read
    (full, read-only, locked by another process, I/O error). Raised by the store
    (store/health.py) after its own retries; callers that must not fail wait and try again,
    the API answers 503 with ``reason``. ``problem`` is a `store.health.Problem` value."""

    def __init__(self, problem: str, reason: str) -> None:
        super().__init__(problem, reason)
        self.problem = problem
        self.reason = reason

    def __str__(self) -> str:
        return f"storage degraded ({self.problem}): {self.reason}"


class FencedOut(TfwardError):
    """A write that belongs to a workspace's execution (a run's status, stage, log, state, plan,
    lock or outbox rows) was refused because this daemon no longer holds the workspace's
    lease with the epoch it started with: another daemon took the workspace over (it found
    this one dead, or paused for longer than the lease). Raised by the store
    (store/fencing.py) before the write, in its transaction, so nothing was written. Never a
    storage fault: nothing waits for it; the run task ends without touching the run again."""

    def __init__(self, workspace_id: str, node_id: str, epoch: int) -> None:
        super().__init__(workspace_id, node_id, epoch)
        self.workspace_id = workspace_id
        self.node_id = node_id
        self.epoch = epoch

    def __str__(self) -> str:
        return (
            f"fenced out: {self.node_id} no longer holds the lease of workspace "
            f"{self.workspace_id} (epoch {self.epoch}); another daemon took it over"
        )


class StageFailed(TfwardError):
    """A stage of the run pipeline failed. ``kind`` is the run's ``error_kind``;
    ``error_class`` (``transient`` / ``permanent``) what runs/classify.py made of a failed
    terraform command, None to class the failure by its kind."""

    def __init__(self, kind: str, message: str, error_class: str | None = None) -> None:
        super().__init__(kind, message, error_class)
        self.kind = kind
        self.message = message
        self.error_class = error_class

    def __str__(self) -> str:
        return self.message
