"""The daemon's one secret and the sub-keys derived from it (docs/architecture.md §9).

Where the secret comes from, first match wins:
1. `[daemon] secret_key_file`;
2. `$CREDENTIALS_DIRECTORY/tfward.key` (systemd `LoadCredential=`), when that file exists;
3. `<data_dir>/secret.key`, generated (32 random bytes, mode 0600) on the first start.
The secret never sits in the TOML file itself. Each use gets its own 32-byte key derived with
HKDF-SHA256, so a key leaked from one purpose says nothing about another.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tfward.config import DaemonConfig
from tfward.errors import ConfigError
from tfward.files import create_private

log = logging.getLogger(__name__)

SECRET_FILE = "secret.key"
CREDENTIAL_NAME = "tfward.key"
SECRET_BYTES = 32
PURPOSES = ("jwt", "encryption")


@dataclass(frozen=True, slots=True)
class Keys:
    """The derived sub-keys; `source` says where the secret came from (for the log)."""

    jwt: bytes = field(repr=False)
    encryption: bytes = field(repr=False)
    source: str


def derive(secret: bytes, purpose: str) -> bytes:
    """A 32-byte key for `purpose`, derived from the secret with HKDF-SHA256."""
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"tfward secret key v1",
        info=f"tfward/{purpose}".encode(),
    )
    return hkdf.derive(secret)


def keys_from_secret(secret: bytes, source: str = "given") -> Keys:
    if len(secret) < SECRET_BYTES:
        raise ValueError(f"the secret key must be at least {SECRET_BYTES} bytes")
    return Keys(jwt=derive(secret, "jwt"), encryption=derive(secret, "encryption"), source=source)


def load_keys(daemon: DaemonConfig, env: Mapping[str, str] | None = None) -> Keys:
    """Read (or on first start create) the secret and derive the keys. Synchronous: call it in
    a worker thread. Raises ConfigError for a configured file that cannot be used."""
    secret, source = load_secret(daemon, os.environ if env is None else env)
    return keys_from_secret(secret, source)


def load_secret(daemon: DaemonConfig, env: Mapping[str, str]) -> tuple[bytes, str]:
    if daemon.secret_key_file is not None:
        return _read(daemon.secret_key_file, "secret_key_file"), str(daemon.secret_key_file)
    credentials = env.get("CREDENTIALS_DIRECTORY")
    if credentials:
        path = Path(credentials) / CREDENTIAL_NAME
        if path.is_file():
            return _read(path, "$CREDENTIALS_DIRECTORY"), str(path)
    path = daemon.data_dir / SECRET_FILE
    _generate(path)
    return _read(path, "data_dir"), str(path)


def _read(path: Path, what: str) -> bytes:
    try:
        secret = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(path, f"daemon.{what}", f"cannot read the secret key: {exc}") from None
    if len(secret) < SECRET_BYTES:
        raise ConfigError(
            path,
            f"daemon.{what}",
            f"the secret key must hold at least {SECRET_BYTES} bytes, it holds {len(secret)}",
        )
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the secret key %s is readable by other users: chmod 600 it", path)
    return secret


def _generate(path: Path) -> None:
    if not create_private(path, secrets.token_bytes(SECRET_BYTES)):
        return
    log.warning(
        "generated a new secret key at %s (mode 0600); keep it with the database: run-task "
        "tokens are signed and encrypted with keys derived from it",
        path,
    )
