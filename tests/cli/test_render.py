"""The progress line and tables, without a daemon."""

from __future__ import annotations

import io
from typing import Any

from tfward.cli.render import Progress, fields, outcome, output_value, table, where


def view(status: str, stage: str | None = None, **extra: Any) -> dict[str, Any]:
    run = {
        "id": "run-1",
        "status": status,
        "stage": stage,
        "has_changes": True,
        "resource_changes": {"add": 2, "change": 0, "destroy": 1},
        "error_kind": None,
        "error_message": None,
        "timestamps": {"created_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:01:05Z"},
    }
    return run | extra


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_where_names_the_stage_and_its_place_in_the_phase() -> None:
    assert where(view("planning", "init")) == "planning 2/6 init"
    assert where(view("applying", "saving_state")) == "applying 4/5 saving_state"
    assert where(view("apply_pending")) == "apply_pending"


def test_outcome_says_what_happened() -> None:
    assert (
        outcome(view("applied")) == "run run-1 applied after 1m05s: 2 added, 0 changed, 1 destroyed"
    )
    failed = outcome(view("failed", error_kind="apply", error_message="boom"))
    assert failed.endswith("failed after 1m05s (apply): boom")


def test_on_a_terminal_the_status_line_is_redrawn_in_place_below_the_log(capsys: Any) -> None:
    err = Tty()
    progress = Progress("run-1", err=err, clock=iter([0.0, 0.0, 3.0]).__next__)
    progress.update(view("planning", "init"))
    progress.log(b"terraform says hi\n")
    assert capsys.readouterr().out == "terraform says hi\n"
    drawn = err.getvalue()
    assert drawn.count("\r\x1b[K") >= 3  # drawn, cleared for the log line, drawn again
    assert drawn.endswith("run-1  planning 2/6 init  3s")
    progress.clear()
    assert err.getvalue().endswith("\r\x1b[K")


def test_without_a_terminal_each_change_is_one_plain_line() -> None:
    err = io.StringIO()
    progress = Progress("run-1", err=err)
    progress.update(view("planning", "init"))
    progress.update(view("planning", "init"))
    progress.update(view("planning", "planning"))
    assert err.getvalue().splitlines() == [
        "tfward: run-1 planning 2/6 init",
        "tfward: run-1 planning 4/6 planning",
    ]
    assert "\x1b" not in err.getvalue()


def test_table_aligns_columns_and_shows_missing_values_as_a_dash() -> None:
    assert table(("A", "LONGER"), [("x", None), ("yyy", 3)]).splitlines() == [
        "A    LONGER",
        "x    -",
        "yyy  3",
    ]


def test_outputs_show_as_terraform_writes_values_not_as_python_reprs() -> None:
    assert output_value({"value": ["a", "b"], "sensitive": False}) == '["a", "b"]'
    assert output_value({"value": {"k": True, "n": None}}) == '{"k": true, "n": null}'
    assert output_value({"value": "plain text"}) == "plain text"
    assert output_value({"value": 3}) == "3"
    assert output_value({"value": None, "sensitive": True}) == "(sensitive)"


def test_lists_in_fields_and_tables_read_as_json() -> None:
    assert fields([("targets", ["a.b", "c"])]) == 'targets: ["a.b", "c"]'
    assert table(("X",), [([1, "two"],)]).splitlines()[1] == '[1, "two"]'
