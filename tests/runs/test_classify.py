"""The failure classifier (tfward/runs/classify.py) against what the real terraform 1.0.3
printed when it failed (tests/runs/terraform_failures.toml, written by
scripts/capture_terraform_failures.py, which says how each was produced)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from tfward.runs.classify import RULES, class_of_kind, classify, flatten
from tfward.runs.model import ErrorClass, ErrorKind

CAPTURES: list[dict[str, Any]] = tomllib.loads(
    (Path(__file__).with_name("terraform_failures.toml")).read_text()
)["capture"]


@pytest.mark.parametrize("capture", CAPTURES, ids=[c["name"] for c in CAPTURES])
def test_each_captured_failure_gets_its_class_from_the_rule_that_names_it(
    capture: dict[str, Any],
) -> None:
    verdict = classify(capture["exit"], capture["output"])
    assert (str(verdict.error_class), verdict.rule or "") == (capture["expect"], capture["rule"])


def test_every_rule_of_the_table_is_backed_by_a_captured_message() -> None:
    backed = {c["rule"] for c in CAPTURES}
    assert [r.name for r in RULES if r.name not in backed] == []


def test_both_classes_have_captures_from_init_and_from_later_commands() -> None:
    seen = {(c["expect"], c["command"] == "init") for c in CAPTURES}
    assert seen == {("transient", True), ("transient", False), ("permanent", True),
                    ("permanent", False)}  # fmt: skip


@pytest.mark.parametrize("capture", CAPTURES[:3], ids=[c["name"] for c in CAPTURES[:3]])
def test_a_diagnostic_drawn_in_a_box_and_wrapped_elsewhere_is_classed_the_same(
    capture: dict[str, Any],
) -> None:
    # What terraform prints on a terminal: the diagnostic framed, lines cut at other widths.
    words = capture["output"].split()
    lines = [" ".join(words[i : i + 5]) for i in range(0, len(words), 5)]
    boxed = "╷\n" + "\n".join(f"│ {line}" for line in lines) + "\n╵\n"
    assert classify(1, boxed) == classify(capture["exit"], capture["output"])


def test_flattening_drops_the_box_and_joins_wrapped_lines() -> None:
    boxed = "╷\n│ Error: could not\n│   connect to x:\n╵\n"
    assert flatten(boxed) == "Error: could not connect to x:"


def test_a_failure_no_rule_names_is_permanent() -> None:
    verdict = classify(1, "Error: something nobody has seen before\n")
    assert (verdict.error_class, verdict.rule) == (ErrorClass.PERMANENT, None)


def test_terraform_killed_by_a_signal_is_transient() -> None:
    verdict = classify(-9, "")
    assert (verdict.error_class, verdict.rule) == (ErrorClass.TRANSIENT, "killed_by_signal")
    assert "signal 9" in verdict.describe()


def test_every_error_kind_has_a_class() -> None:
    assert {kind: class_of_kind(kind) for kind in ErrorKind}[ErrorKind.HOOK] is (
        ErrorClass.PERMANENT
    )
    assert class_of_kind(ErrorKind.TIMEOUT) is ErrorClass.TRANSIENT
