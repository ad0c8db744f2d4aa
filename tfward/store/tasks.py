"""Persistence of run-task results.

A result is created `pending` with its access token (encrypted) and the token's `jti`; it
becomes `running` once the task service accepted the request or called back `running`, and
ends `passed`, `failed`, `timeout` or `webhook_error`. Every write that makes a result final
clears the token ciphertext and stamps `token_revoked_at` in the same statement, and only
moves a result that is not final yet, so a late callback and the waiter's timeout can never
both win.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, insert, select, update

from tfward.errors import NotFound

from .tables import run_task_results

PENDING, RUNNING = "pending", "running"
PASSED, FAILED, TIMEOUT, WEBHOOK_ERROR = "passed", "failed", "timeout", "webhook_error"
UNFINISHED = (PENDING, RUNNING)
FINAL = (PASSED, FAILED, TIMEOUT, WEBHOOK_ERROR)


@dataclass(frozen=True, slots=True)
class TaskResult:
    """A result as the code sees it; the token ciphertext is read separately, on purpose."""

    id: str
    run_id: str
    workspace_id: str
    task_name: str
    stage: str
    enforcement: str
    status: str
    message: str | None
    url: str | None
    outcomes: list[dict[str, Any]]
    token_jti: str | None
    token_expires_at: datetime | None
    token_revoked_at: datetime | None
    created_at: datetime
    updated_at: datetime
    last_progress_at: datetime | None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL


@dataclass(frozen=True, slots=True)
class NewResult:
    id: str
    run_id: str
    workspace_id: str
    task_name: str
    stage: str
    enforcement: str
    token_ciphertext: bytes
    token_jti: str
    token_expires_at: datetime


def _result(row: Row[Any]) -> TaskResult:
    m = row._mapping
    return TaskResult(
        id=m["id"],
        run_id=m["run_id"],
        workspace_id=m["workspace_id"],
        task_name=m["task_name"],
        stage=m["stage"],
        enforcement=m["enforcement"],
        status=m["status"],
        message=m["message"],
        url=m["url"],
        outcomes=list(m["outcomes"] or []),
        token_jti=m["token_jti"],
        token_expires_at=m["token_expires_at"],
        token_revoked_at=m["token_revoked_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        last_progress_at=m["last_progress_at"],
    )


_PUBLIC = [c for c in run_task_results.c if c.name != "token_ciphertext"]


def create(conn: Connection, results: Sequence[NewResult], when: datetime) -> None:
    conn.execute(
        insert(run_task_results),
        [
            {
                "id": r.id,
                "run_id": r.run_id,
                "workspace_id": r.workspace_id,
                "task_name": r.task_name,
                "stage": r.stage,
                "enforcement": r.enforcement,
                "status": PENDING,
                "outcomes": [],
                "token_ciphertext": r.token_ciphertext,
                "token_jti": r.token_jti,
                "token_expires_at": r.token_expires_at,
                "created_at": when,
                "updated_at": when,
            }
            for r in results
        ],
    )


def get(conn: Connection, result_id: str) -> TaskResult:
    row = conn.execute(select(*_PUBLIC).where(run_task_results.c.id == result_id)).first()
    if row is None:
        raise NotFound(f"run task result {result_id} not found")
    return _result(row)


def token_ciphertext(conn: Connection, result_id: str) -> bytes | None:
    raw = conn.execute(
        select(run_task_results.c.token_ciphertext).where(run_task_results.c.id == result_id)
    ).scalar()
    return None if raw is None else bytes(raw)


def list_for_run(conn: Connection, run_id: str, stage: str | None = None) -> list[TaskResult]:
    query = (
        select(*_PUBLIC)
        .where(run_task_results.c.run_id == run_id)
        .order_by(run_task_results.c.created_at, run_task_results.c.task_name)
    )
    if stage is not None:
        query = query.where(run_task_results.c.stage == stage)
    return [_result(row) for row in conn.execute(query)]


def get_many(conn: Connection, ids: Sequence[str]) -> list[TaskResult]:
    rows = conn.execute(select(*_PUBLIC).where(run_task_results.c.id.in_(list(ids))))
    found = {r.id: r for r in map(_result, rows)}
    return [found[i] for i in ids if i in found]


def mark_running(conn: Connection, result_id: str, when: datetime) -> bool:
    """The task service took the request: `pending` -> `running`, progress now. Returns False
    when a callback got there first (the result is already `running` or final)."""
    result = conn.execute(
        update(run_task_results)
        .where(run_task_results.c.id == result_id, run_task_results.c.status == PENDING)
        .values(status=RUNNING, last_progress_at=when, updated_at=when)
    )
    return result.rowcount == 1


def progress(
    conn: Connection,
    result_id: str,
    when: datetime,
    *,
    message: str | None,
    url: str | None,
    outcomes: list[dict[str, Any]] | None,
) -> bool:
    """A `running` callback: refresh the no-progress timer; keep what the service sent."""
    values: dict[str, Any] = {"status": RUNNING, "last_progress_at": when, "updated_at": when}
    if message is not None:
        values["message"] = message
    return _update_unfinished(conn, result_id, values, url=url, outcomes=outcomes)


def finish(
    conn: Connection,
    result_id: str,
    status: str,
    when: datetime,
    *,
    message: str | None,
    url: str | None = None,
    outcomes: list[dict[str, Any]] | None = None,
) -> bool:
    """Make the result final and revoke its token, unless it is final already (then False)."""
    assert status in FINAL, status
    values: dict[str, Any] = {
        "status": status,
        "message": message,
        "updated_at": when,
        "token_ciphertext": None,
        "token_revoked_at": when,
    }
    return _update_unfinished(conn, result_id, values, url=url, outcomes=outcomes)


def _update_unfinished(
    conn: Connection,
    result_id: str,
    values: dict[str, Any],
    *,
    url: str | None,
    outcomes: list[dict[str, Any]] | None,
) -> bool:
    """Write `values` (and what the service sent) if the result is not final yet."""
    if url is not None:
        values["url"] = url
    if outcomes is not None:
        values["outcomes"] = outcomes
    result = conn.execute(
        update(run_task_results)
        .where(run_task_results.c.id == result_id, run_task_results.c.status.in_(UNFINISHED))
        .values(**values)
    )
    return result.rowcount == 1


def abandon(conn: Connection, ids: Sequence[str], when: datetime, message: str) -> None:
    """The run stopped waiting (cancel, shutdown): revoke the tokens of the results that are
    not final and say why; their status stays what it was."""
    conn.execute(
        update(run_task_results)
        .where(
            run_task_results.c.id.in_(list(ids)),
            run_task_results.c.status.in_(UNFINISHED),
        )
        .values(message=message, updated_at=when, token_ciphertext=None, token_revoked_at=when)
    )


# Built once: the termination funnel runs it for every run.
_REVOKE_OF_RUN = update(run_task_results).where(
    run_task_results.c.run_id == bindparam("b_run_id"),
    run_task_results.c.token_revoked_at.is_(None),
)


def revoke_for_run(conn: Connection, run_id: str, when: datetime) -> None:
    """The run ended: every token of its results is revoked (termination contract)."""
    conn.execute(
        _REVOKE_OF_RUN, {"b_run_id": run_id, "token_ciphertext": None, "token_revoked_at": when}
    )
