"""Persistence of run artifacts: configuration versions, plan files, log chunks."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, func, insert, select, update

from tfward.errors import BadRequest, NotFound, PlanUnusable
from tfward.ids import new_id, now
from tfward.obs.metrics import PlanReason

from . import sealing
from .changes import Key, touch
from .tables import configuration_versions, plan_artifacts, run_log_chunks


@dataclass(frozen=True, slots=True)
class ConfigurationVersion:
    id: str
    workspace_id: str
    sha256: str
    size: int
    file_count: int
    created_at: datetime


_CV_COLUMNS = [c for c in configuration_versions.c if c.name != "archive"]
# Built once, as those below: every run runs them, and building one cost more than running it.
_CV_BY_SHA256 = select(*_CV_COLUMNS).where(
    configuration_versions.c.workspace_id == bindparam("ws_id"),
    configuration_versions.c.sha256 == bindparam("sha256"),
)
_INSERT_CV = insert(configuration_versions)


def put_configuration(
    conn: Connection, ws_id: str, archive: bytes, file_count: int, sha256: str
) -> ConfigurationVersion:
    """Store a configuration snapshot, content-addressed: the same content reuses its row."""
    row = conn.execute(_CV_BY_SHA256, {"ws_id": ws_id, "sha256": sha256}).first()
    if row is not None:
        return ConfigurationVersion(
            row.id, row.workspace_id, row.sha256, row.size, row.file_count, row.created_at
        )
    cv = ConfigurationVersion(new_id("cv"), ws_id, sha256, len(archive), file_count, now())
    conn.execute(
        _INSERT_CV,
        {
            "id": cv.id,
            "workspace_id": ws_id,
            "sha256": sha256,
            "size": cv.size,
            "file_count": file_count,
            "archive": archive,
            "created_at": cv.created_at,
        },
    )
    return cv


def list_configurations(conn: Connection, ws_id: str) -> list[ConfigurationVersion]:
    rows = conn.execute(
        select(*_CV_COLUMNS)
        .where(configuration_versions.c.workspace_id == ws_id)
        .order_by(configuration_versions.c.created_at.desc())
    )
    return [
        ConfigurationVersion(r.id, r.workspace_id, r.sha256, r.size, r.file_count, r.created_at)
        for r in rows
    ]


def configuration_of_workspace(
    conn: Connection, cv_id: str, ws_id: str, workspace: str
) -> ConfigurationVersion:
    """The configuration version `cv_id`, which must be one of the workspace's (a run may
    apply an older configuration of its own workspace; another's goes through a release).
    BadRequest naming the version otherwise."""
    row = conn.execute(select(*_CV_COLUMNS).where(configuration_versions.c.id == cv_id)).first()
    if row is None:
        raise BadRequest(f"configuration version {cv_id} not found")
    if row.workspace_id != ws_id:
        raise BadRequest(
            f"configuration version {cv_id} is not one of workspace {workspace}'s (list them "
            f"at GET /api/v1/workspaces/{workspace}/configuration-versions); a release can "
            "roll another workspace's configuration out"
        )
    return ConfigurationVersion(
        row.id, row.workspace_id, row.sha256, row.size, row.file_count, row.created_at
    )


_ARCHIVE = select(configuration_versions.c.sha256, configuration_versions.c.archive).where(
    configuration_versions.c.id == bindparam("cv_id")
)


def configuration_archive(conn: Connection, cv_id: str) -> tuple[str, bytes]:
    """Returns (sha256, archive bytes)."""
    row = conn.execute(_ARCHIVE, {"cv_id": cv_id}).first()
    if row is None:
        raise NotFound(f"configuration version {cv_id} not found")
    return row.sha256, bytes(row.archive)


def plan_sha256(plan_file: bytes) -> str:
    """The plan hash: the sha256 of the plan file, as `put_plan` stores it."""
    return hashlib.sha256(plan_file).hexdigest()


_DELETE_PLAN = plan_artifacts.delete().where(plan_artifacts.c.run_id == bindparam("run_id"))
_INSERT_PLAN = insert(plan_artifacts)
_UPDATE_PLAN = update(plan_artifacts).where(plan_artifacts.c.run_id == bindparam("b_run_id"))
_PLAN_FILE = select(plan_artifacts.c.plan_file, plan_artifacts.c.plan_sha256).where(
    plan_artifacts.c.run_id == bindparam("run_id")
)


def put_plan(conn: Connection, run_id: str, plan_file: bytes, plan_json: bytes | None) -> str:
    """Store a plan and its JSON with their sha256; returns the plan's sha256 (the plan hash).
    `plan_json` None: `show -json` runs after the run and `put_plan_json` stores it then."""
    plan_sha = plan_sha256(plan_file)
    conn.execute(_DELETE_PLAN, {"run_id": run_id})
    conn.execute(
        _INSERT_PLAN,
        {
            "run_id": run_id,
            "plan_file": sealing.seal(conn, plan_file, "plan_file"),
            "plan_sha256": plan_sha,
            "created_at": now(),
            **_plan_json_values(conn, plan_json),
        },
    )
    return plan_sha


def put_plan_json(conn: Connection, run_id: str, plan_json: bytes) -> None:
    """Store the plan JSON of a plan stored without it (`show -json` ran after the run)."""
    result = conn.execute(_UPDATE_PLAN, {"b_run_id": run_id, **_plan_json_values(conn, plan_json)})
    if result.rowcount != 1:
        raise NotFound(f"run {run_id} has no plan")


_PLAN_JSON_MISSING = select(plan_artifacts.c.run_id).where(
    plan_artifacts.c.run_id == bindparam("run_id"), plan_artifacts.c.plan_json.is_(None)
)


def plan_json_missing(conn: Connection, run_id: str) -> bool:
    """Whether the run has a plan whose JSON is not stored yet (a failed `show -json` stores
    the document `null`: that is stored)."""
    return conn.execute(_PLAN_JSON_MISSING, {"run_id": run_id}).first() is not None


def _plan_json_values(conn: Connection, plan_json: bytes | None) -> dict[str, object]:
    if plan_json is None:
        return {"plan_json": None, "plan_json_sha256": None}
    return {
        "plan_json": sealing.seal(conn, plan_json, "plan_json"),
        "plan_json_sha256": hashlib.sha256(plan_json).hexdigest(),
    }


def get_plan_file(conn: Connection, run_id: str) -> tuple[bytes, str] | None:
    """Returns (plan bytes, recorded sha256), or None when the artifact is gone. Raises
    PlanUnusable when the sealed plan does not decrypt: it is damaged, so it is re-planned."""
    row = conn.execute(_PLAN_FILE, {"run_id": run_id}).first()
    if row is None:
        return None
    try:
        return sealing.unseal(conn, row.plan_file, "plan_file"), row.plan_sha256
    except sealing.SealError:
        raise PlanUnusable(PLAN_CORRUPT) from None


def get_plan_json(conn: Connection, run_id: str) -> bytes:
    """The stored plan JSON (`null` when `show -json` failed and the run went on without it).
    NotFound for a run without a plan, or whose JSON is not stored yet: `show -json` runs
    after the run (outbox job `plan_json`)."""
    row = conn.execute(
        select(plan_artifacts.c.plan_json).where(plan_artifacts.c.run_id == run_id)
    ).first()
    if row is None:
        raise NotFound(f"run {run_id} has no plan")
    if row.plan_json is None:
        raise NotFound(
            f"run {run_id} has no plan JSON yet: terraform show -json runs after the run, "
            "as a follow-up job (see the outbox)"
        )
    return sealing.unseal(conn, row.plan_json, "plan_json")


@dataclass(frozen=True, slots=True)
class LogChunk:
    """A piece of a run's log; `source`/`source_end`: the output file its terraform output came
    from and the offset the log holds that file up to, with this chunk."""

    data: bytes
    source: str | None = None
    source_end: int | None = None


_INSERT_CHUNKS = insert(run_log_chunks)


def append_log(
    conn: Connection,
    run_id: str,
    first_seq: int,
    chunks: Sequence[LogChunk | bytes],
    first_offset: int | None = None,
) -> None:
    """Store chunks of a run's log from `first_seq` on. `first_offset` is the byte offset in
    the log where the first starts (None: read it, from the end of what is stored)."""
    if first_offset is None:
        first_offset = log_end(conn, run_id)[1]
    rows = []
    offset = first_offset
    for i, chunk in enumerate(chunks):
        if isinstance(chunk, bytes):
            chunk = LogChunk(chunk)
        rows.append(
            {
                "run_id": run_id,
                "seq": first_seq + i,
                "data": chunk.data,
                "created_at": now(),
                "source": chunk.source,
                "source_end": chunk.source_end,
                "log_offset": offset,
            }
        )
        offset += len(chunk.data)
    conn.execute(_INSERT_CHUNKS, rows)
    touch(conn, Key.log(run_id))


def log_sources(conn: Connection, run_id: str) -> dict[str, int]:
    """Output file -> the offset the stored log holds it up to, for every file of the run
    that has reached the log (recovery appends the rest of each)."""
    rows = conn.execute(
        select(run_log_chunks.c.source, func.max(run_log_chunks.c.source_end))
        .where(run_log_chunks.c.run_id == run_id, run_log_chunks.c.source.is_not(None))
        .group_by(run_log_chunks.c.source)
    )
    return {str(source): int(end) for source, end in rows}


_LAST_CHUNK = (
    select(run_log_chunks.c.seq, run_log_chunks.c.log_offset, func.length(run_log_chunks.c.data))
    .where(run_log_chunks.c.run_id == bindparam("run_id"))
    .order_by(run_log_chunks.c.seq.desc())
    .limit(1)
)


def log_end(conn: Connection, run_id: str) -> tuple[int, int]:
    """(the next chunk's seq, the byte length of the stored log) of a run."""
    row = conn.execute(_LAST_CHUNK, {"run_id": run_id}).first()
    if row is None:
        return 0, 0
    return int(row[0]) + 1, int(row[1] or 0) + int(row[2])


def next_log_seq(conn: Connection, run_id: str) -> int:
    return log_end(conn, run_id)[0]


def read_log(
    conn: Connection, run_id: str, after_seq: int = -1, limit: int | None = None
) -> list[tuple[int, bytes]]:
    rows = conn.execute(
        select(run_log_chunks.c.seq, run_log_chunks.c.data)
        .where(run_log_chunks.c.run_id == run_id, run_log_chunks.c.seq > after_seq)
        .order_by(run_log_chunks.c.seq)
        .limit(limit)
    )
    return [(r.seq, bytes(r.data)) for r in rows]


def log_size(conn: Connection, run_id: str) -> int:
    """How many bytes the run's stored log holds (SQLite reads a blob's length from its
    header, not its content)."""
    total = conn.execute(
        select(func.coalesce(func.sum(func.length(run_log_chunks.c.data)), 0)).where(
            run_log_chunks.c.run_id == run_id
        )
    ).scalar_one()
    return int(total)


def read_log_tail(conn: Connection, run_id: str, max_bytes: int) -> tuple[int, int, bytes]:
    """The last whole lines of the run's log, at most about `max_bytes` of them (a longer last
    line is cut at its start): (offset of the first byte returned, size of the whole log,
    the bytes). Only the chunks that hold the tail are read."""
    sizes = conn.execute(
        select(run_log_chunks.c.seq, func.length(run_log_chunks.c.data))
        .where(run_log_chunks.c.run_id == run_id)
        .order_by(run_log_chunks.c.seq.desc())
    ).all()
    total = sum(int(n) for _, n in sizes)
    wanted, first = 0, None
    for seq, n in sizes:
        wanted += int(n)
        first = seq
        if wanted >= max_bytes:
            break
    if first is None:
        return 0, 0, b""
    data = b"".join(d for _, d in read_log(conn, run_id, after_seq=first - 1))
    start = total - len(data)
    if len(data) > max_bytes:
        cut = len(data) - max_bytes
        newline = data.find(b"\n", cut - 1)
        cut = newline + 1 if 0 <= newline < len(data) - 1 else cut
        data, start = data[cut:], start + cut
    return start, total, data


_CHUNKS_PER_READ = 256


def read_log_at(conn: Connection, run_id: str, offset: int, limit: int) -> tuple[int, bytes]:
    """The stored log of a run from byte `offset` on, about `limit` bytes of it (whole chunks
    after the first, at most _CHUNKS_PER_READ chunks): (where the bytes start, the bytes). The
    start is `offset`; nothing when the stored log ends there (or before)."""
    first = conn.execute(
        select(func.max(run_log_chunks.c.seq)).where(
            run_log_chunks.c.run_id == run_id, run_log_chunks.c.log_offset <= offset
        )
    ).scalar()
    rows = conn.execute(
        select(run_log_chunks.c.log_offset, run_log_chunks.c.data)
        .where(run_log_chunks.c.run_id == run_id, run_log_chunks.c.seq >= (first or 0))
        .order_by(run_log_chunks.c.seq)
        .limit(_CHUNKS_PER_READ)
    )
    parts: list[bytes] = []
    start, size = offset, 0
    for row in rows:
        data = bytes(row.data)
        begin = int(row.log_offset or 0)
        if begin + len(data) <= offset:
            continue  # the chunk ends before the offset (offset at its very end)
        if not parts:
            start = max(begin, offset)
            data = data[start - begin :]
        parts.append(data)
        size += len(data)
        if size >= limit:
            break
    return start, b"".join(parts)


# plan_problem's answers, and what /metrics counts each under (tfward_plan_integrity_failures).
PLAN_LOST = "the saved plan was lost"
PLAN_CORRUPT = "the saved plan is corrupt (sha256 mismatch)"
STATE_MOVED = "the workspace state changed since this run was planned"
PLAN_PROBLEM_REASONS = {
    PLAN_LOST: PlanReason.LOST,
    PLAN_CORRUPT: PlanReason.SHA256_MISMATCH,
    STATE_MOVED: PlanReason.STATE_MOVED,
}


def plan_problem(
    conn: Connection,
    run_id: str,
    plan_hash: str | None,
    current_state_id: str | None,
    planned_state_id: str | None,
) -> str | None:
    """Why a run's saved plan cannot be applied, or None: the plan artifact is lost or corrupt,
    or the workspace state moved since the plan (seed 003). One check for the pipeline's
    restore and for recovery, so the two can never disagree."""
    return checked_plan(conn, run_id, plan_hash, current_state_id, planned_state_id)[0]


def checked_plan(
    conn: Connection,
    run_id: str,
    plan_hash: str | None,
    current_state_id: str | None,
    planned_state_id: str | None,
) -> tuple[str | None, bytes | None]:
    """`plan_problem`, and the plan file it read when there is none (the restore applies it)."""
    try:
        plan = get_plan_file(conn, run_id)
    except PlanUnusable as exc:
        return str(exc), None
    if plan is None:
        return PLAN_LOST, None
    if hashlib.sha256(plan[0]).hexdigest() != plan[1] or plan[1] != plan_hash:
        return PLAN_CORRUPT, None
    if current_state_id != planned_state_id:
        return STATE_MOVED, None
    return None, plan[0]
