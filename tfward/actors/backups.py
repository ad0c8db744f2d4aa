"""State backup files: a copy of every state before it is stored, sealed, pruned, read back.

`<data_dir>/state-backups/<workspace>/<serial>-<sha256[:12]>-<run id>.tfstate.sealed` is
written (0600, in a 0700 directory) before a state goes to the database, so a state the
database refuses or cannot take is never lost (docs/architecture.md §3, §10). It is sealed like
the database (AES-256-GCM under the daemon's encryption key, purpose `state_backup`): the
backups hold every secret terraform writes into a state. `tfward state decrypt FILE` gives an
operator the plain state back (for `terraform state push`).

Pruning (`[daemon] state_backups_keep`, default 10): of the backups whose state the database
holds, the newest `keep` per workspace stay; a backup whose state is not stored (refused, or
written while the database was down) is never pruned — it may be the only copy. Plain backups
of older versions are sealed at start.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tfward.store.sealing import Sealer, is_sealed

from . import workdir

log = logging.getLogger(__name__)

PURPOSE = "state_backup"
SUFFIX = ".tfstate.sealed"
_NAME = re.compile(r"(?P<serial>\d+)-(?P<sha>[0-9a-f]{12})(?:-(?P<run>[a-z]+-[a-z0-9]+))?\.")


@dataclass(frozen=True, slots=True)
class Backup:
    path: Path
    serial: int
    sha12: str
    run_id: str | None


def name(serial: int, sha256: str, run_id: str) -> str:
    return f"{serial:06d}-{sha256[:12]}-{run_id}{SUFFIX}"


def write(directory: Path, filename: str, raw: bytes, sealer: Sealer | None) -> Path:
    """Write a backup atomically, sealed (plain only without a key: tests that run bare)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if sealer is None:
        filename = filename.removesuffix(".sealed")
    path = directory / filename
    data = sealer.seal(raw, PURPOSE) if sealer is not None else raw
    workdir.write_file_atomic(path, data)
    path.chmod(0o600)
    return path


def read(path: Path, sealer: Sealer | None) -> bytes:
    """A backup's state, unsealed. Raises SealError for another key or a damaged file."""
    data = path.read_bytes()
    if is_sealed(data):
        if sealer is None:
            raise ValueError(f"{path} is sealed and no key was given")
        return sealer.open(data, PURPOSE)
    return data


def listing(directory: Path) -> list[Backup]:
    """The backups of one workspace, oldest serial first."""
    found: list[Backup] = []
    if not directory.is_dir():
        return found
    for path in directory.iterdir():
        match = _NAME.match(path.name)
        if match and path.name.endswith((SUFFIX, ".tfstate")):
            found.append(Backup(path, int(match["serial"]), match["sha"], match["run"]))
    return sorted(found, key=lambda b: (b.serial, b.path.stat().st_mtime_ns))


def of_run(directory: Path, run_id: str) -> list[Backup]:
    return [b for b in listing(directory) if b.run_id == run_id]


def prune(directory: Path, stored_sha256: set[str], keep: int) -> list[Path]:
    """Delete the backups of stored states beyond the newest `keep`; returns what went."""
    stored = {sha[:12] for sha in stored_sha256}
    kept = [b for b in listing(directory) if b.sha12 in stored]
    gone = [b.path for b in kept[: max(0, len(kept) - keep)]]
    for path in gone:
        path.unlink(missing_ok=True)
    return gone


def seal_plain(root: Path, sealer: Sealer) -> int:
    """Seal the plain backups earlier versions left under `root` (state-backups/); the count."""
    sealed = 0
    for path in sorted(root.glob("*/*.tfstate")):
        data = path.read_bytes()
        target = path.with_name(path.name + ".sealed")
        if is_sealed(data):
            path.rename(target)  # sealed already: only its name is an old one
            continue
        workdir.write_file_atomic(target, sealer.seal(data, PURPOSE))
        os.chmod(target, 0o600)
        path.unlink()
        sealed += 1
    return sealed
