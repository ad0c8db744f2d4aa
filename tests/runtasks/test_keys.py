"""The daemon secret: where it comes from, its first-start generation, and derived sub-keys."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from tfward.config import DaemonConfig
from tfward.errors import ConfigError
from tfward.runtasks.keys import derive, keys_from_secret, load_keys


def _daemon(data_dir: Path, secret_key_file: Path | None = None) -> DaemonConfig:
    return DaemonConfig(
        listen_host="127.0.0.1",
        listen_port=0,
        data_dir=data_dir,
        database_url="sqlite://",
        public_url="http://127.0.0.1:0",
        organization="tests",
        max_concurrent_runs=1,
        shutdown_grace=1.0,
        secret_key_file=secret_key_file,
    )


def test_the_first_start_generates_a_private_secret_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tfward.runtasks.keys"):
        keys = load_keys(_daemon(tmp_path / "data"), env={})
    path = tmp_path / "data" / "secret.key"
    assert len(path.read_bytes()) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.source == str(path)
    assert "generated a new secret key" in caplog.text


def test_a_restart_reuses_the_generated_secret(tmp_path: Path) -> None:
    first, second = (load_keys(_daemon(tmp_path), env={}) for _ in range(2))
    assert (first.jwt, first.encryption) == (second.jwt, second.encryption)


def test_secret_key_file_wins_over_the_credentials_directory(tmp_path: Path) -> None:
    configured, credentials = tmp_path / "configured.key", tmp_path / "creds"
    configured.write_bytes(b"c" * 40)
    credentials.mkdir()
    (credentials / "tfward.key").write_bytes(b"d" * 40)
    keys = load_keys(_daemon(tmp_path, configured), env={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert keys.jwt == derive(b"c" * 40, "jwt") and keys.source == str(configured)


def test_the_systemd_credential_is_used_when_present(tmp_path: Path) -> None:
    (tmp_path / "tfward.key").write_bytes(b"e" * 32)
    keys = load_keys(_daemon(tmp_path / "data"), env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert keys.encryption == derive(b"e" * 32, "encryption")
    assert not (tmp_path / "data" / "secret.key").exists()


def test_an_empty_credentials_directory_falls_back_to_the_data_dir(tmp_path: Path) -> None:
    keys = load_keys(_daemon(tmp_path / "data"), env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert keys.source == str(tmp_path / "data" / "secret.key")


@pytest.mark.parametrize("content", [b"", b"short"])
def test_a_secret_file_shorter_than_32_bytes_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "weak.key"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="at least 32 bytes") as caught:
        load_keys(_daemon(tmp_path, path), env={})
    assert caught.value.key_path == "daemon.secret_key_file"


def test_a_missing_secret_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the secret key"):
        load_keys(_daemon(tmp_path, tmp_path / "nope.key"), env={})


def test_each_purpose_gets_its_own_32_byte_key() -> None:
    keys = keys_from_secret(b"z" * 32)
    assert len(keys.jwt) == len(keys.encryption) == 32
    assert keys.jwt != keys.encryption != b"z" * 32
    assert keys_from_secret(b"z" * 32).jwt == keys.jwt
    assert "jwt=" not in repr(keys)
