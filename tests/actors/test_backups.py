"""State backup files (tfward/actors/backups.py): sealed, read back, pruned to the newest of the
stored states while a backup of a state the database does not hold is kept, and plain backups
of earlier versions sealed (docs/architecture.md §10)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tfward.actors import backups
from tfward.store.sealing import Sealer, SealError

SEALER = Sealer(bytes(range(32)))


def backup(directory: Path, serial: int, raw: bytes, run: str = "run-aaaa") -> Path:
    sha = hashlib.sha256(raw).hexdigest()
    return backups.write(directory, backups.name(serial, sha, run), raw, SEALER)


def test_a_backup_is_sealed_private_and_reads_back(tmp_path: Path) -> None:
    path = backup(tmp_path / "demo", 3, b'{"secret": "hunter2"}')
    assert path.name.endswith(".tfstate.sealed") and b"hunter2" not in path.read_bytes()
    assert path.stat().st_mode & 0o777 == 0o600
    assert backups.read(path, SEALER) == b'{"secret": "hunter2"}'
    with pytest.raises(SealError):
        backups.read(path, Sealer(bytes(32)))


def test_pruning_keeps_the_newest_stored_ones_and_every_one_the_database_lacks(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "demo"
    stored = [backup(directory, n, f"state {n}".encode()) for n in range(1, 6)]
    unstored = backup(directory, 2, b"refused by the database")
    shas = {hashlib.sha256(f"state {n}".encode()).hexdigest() for n in range(1, 6)}
    gone = backups.prune(directory, shas, keep=2)
    assert sorted(gone) == sorted(stored[:3])
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [stored[3].name, stored[4].name, unstored.name]
    )


def test_the_backups_of_one_run_are_found_by_its_id(tmp_path: Path) -> None:
    mine = backup(tmp_path, 7, b"mine", run="run-mine")
    backup(tmp_path, 8, b"theirs", run="run-other")
    assert [b.path for b in backups.of_run(tmp_path, "run-mine")] == [mine]


def test_plain_backups_of_an_earlier_version_are_sealed_at_start(tmp_path: Path) -> None:
    old = tmp_path / "demo" / "000004-0123456789ab.tfstate"
    old.parent.mkdir()
    old.write_bytes(b'{"serial": 4, "secret": "hunter2"}')
    assert backups.seal_plain(tmp_path, SEALER) == 1
    (sealed,) = (tmp_path / "demo").iterdir()
    assert sealed.name == "000004-0123456789ab.tfstate.sealed"
    assert backups.read(sealed, SEALER) == b'{"serial": 4, "secret": "hunter2"}'
    assert [b.serial for b in backups.listing(tmp_path / "demo")] == [4]
