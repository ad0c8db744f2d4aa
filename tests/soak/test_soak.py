"""The chaos soak, short: five kill -9s of a real daemon running real terraform, every
invariant checked after each restart (bench/soak.py; the 50-kill run and its numbers are in
bench/README.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


def load_soak() -> object:
    spec = importlib.util.spec_from_file_location("tfward_bench_soak", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_five_kill_9s_at_random_moments_break_no_invariant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    soak = load_soak()
    code = soak.main(  # type: ignore[attr-defined]
        ["--kills", "5", "--seed", "5", "--drain-timeout", "60", "--tmp", str(tmp_path)]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "PASS: 0 invariant violations" in printed
