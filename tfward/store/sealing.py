"""Encryption at rest of the blobs that hold secrets: state versions and saved plans.

Terraform writes sensitive values in plain text into state files and plan files (a plan holds
every variable's value), and `show -json` repeats them; a state's outputs may hold a secret
terraform was never told is sensitive. The store seals those columns with AES-256-GCM under
the `encryption` key derived from the daemon's secret (runtasks/keys.py), so the database file
alone gives none of them away. What each blob is for (`purpose`: "state", "state_outputs",
"plan_file", "plan_json") is bound in as associated data: a blob moved to another column does
not open.

The store functions reach the sealer through their connection (`Store` puts it there), so no
caller can write such a column unsealed by forgetting to pass a key. Rows written before
sealing existed are plain; they still read, and `seal_plain_rows` seals them at start.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import ColumnElement, Connection, func, or_, select, update

from .tables import plan_artifacts, state_versions

MAGIC = b"tfw-sealed-v1:"
_NONCE = 12
INFO_KEY = "tfward.sealer"


class SealError(Exception):
    """A sealed blob cannot be opened: no key, another key, or damaged."""


class Sealer:
    """AES-256-GCM with a random nonce per blob: MAGIC + nonce + ciphertext-and-tag."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, data: bytes, purpose: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return MAGIC + nonce + self._aead.encrypt(nonce, data, purpose.encode())

    def open(self, blob: bytes, purpose: str) -> bytes:
        if not is_sealed(blob):
            return blob  # written before sealing existed
        body = blob[len(MAGIC) :]
        try:
            return self._aead.decrypt(body[:_NONCE], body[_NONCE:], purpose.encode())
        except InvalidTag:
            raise SealError(
                f"a sealed {purpose} does not open with this daemon's secret key: was the key "
                "file (secret_key_file, $CREDENTIALS_DIRECTORY/tfward.key or "
                "<data_dir>/secret.key) replaced?"
            ) from None


def is_sealed(blob: bytes) -> bool:
    return bytes(blob[: len(MAGIC)]) == MAGIC


def seal(conn: Connection, data: bytes, purpose: str) -> bytes:
    return _sealer(conn).seal(data, purpose)


def unseal(conn: Connection, blob: bytes, purpose: str) -> bytes:
    blob = bytes(blob)
    if not is_sealed(blob):
        return blob
    return _sealer(conn).open(blob, purpose)


def _sealer(conn: Connection) -> Sealer:
    sealer = conn.info.get(INFO_KEY)
    if sealer is None:
        raise SealError("this store was opened without the daemon's encryption key")
    return sealer  # type: ignore[no-any-return]


STATE_OUTPUTS = "state_outputs"


def seal_plain_rows(conn: Connection) -> int:
    """Seal the state, outputs and plan columns of rows written before sealing existed (or
    before migration 0007 for outputs); their count."""
    sealed = 0
    states = select(state_versions.c.id, state_versions.c.state, state_versions.c.outputs).where(
        or_(_plain(state_versions.c.state), _plain(state_versions.c.outputs))
    )
    for row in conn.execute(states):
        values = {
            column: seal(conn, bytes(getattr(row, column)), purpose)
            for column, purpose in (("state", "state"), ("outputs", STATE_OUTPUTS))
            if not is_sealed(getattr(row, column))
        }
        conn.execute(update(state_versions).where(state_versions.c.id == row.id).values(values))
        sealed += 1
    plans = select(
        plan_artifacts.c.run_id, plan_artifacts.c.plan_file, plan_artifacts.c.plan_json
    ).where(or_(_plain(plan_artifacts.c.plan_file), _plain(plan_artifacts.c.plan_json)))
    for plan in conn.execute(plans):
        values = {
            name: seal(conn, bytes(getattr(plan, name)), name)
            for name in ("plan_file", "plan_json")
            # A NULL plan JSON: `show -json` after the run has not stored it (yet).
            if getattr(plan, name) is not None and not is_sealed(getattr(plan, name))
        }
        conn.execute(
            update(plan_artifacts).where(plan_artifacts.c.run_id == plan.run_id).values(values)
        )
        sealed += 1
    return sealed


def _plain(column: ColumnElement[bytes]) -> ColumnElement[bool]:
    # Compared in SQL: finding the plain rows does not read every blob into Python.
    return func.substr(column, 1, len(MAGIC)) != MAGIC
