"""A workspace whose fake terraform's `show -json` fails on demand (seed M1): what the tests of
the plan (tests/actors/test_planner.py) and of `show -json` after the run
(tests/actors/test_planjson.py) share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import FAKE_TERRAFORM, demo_workspace

FAKE = {"binary": str(FAKE_TERRAFORM)}


def fake_show_workspace(tmp_path: Path, failure: str, **settings: Any) -> dict[str, Any]:
    """A workspace for the fake terraform (`FAKE`), whose `show -json` fails as `failure`
    says; every call is recorded in `calls.jsonl`."""
    script = tmp_path / "fake-script.json"
    show = {"invalid_json": True} if failure == "invalid_json" else {"exit": 1}
    script.write_text(json.dumps({"show": show}))
    ws = demo_workspace(tmp_path, things=1, **settings)
    ws["env"] |= {"FAKE_TF_SCRIPT": str(script), "FAKE_TF_CALLS": str(tmp_path / "calls.jsonl")}
    return ws


MESSAGES = {
    "invalid_json": "terraform show -json printed no JSON document: the plan cannot be reviewed",
    "exit_1": "terraform show -json failed (exit 1): the plan cannot be reviewed",
}


def commands(tmp_path: Path) -> list[str]:
    lines = (tmp_path / "calls.jsonl").read_text().splitlines()
    return [json.loads(line)["command"] for line in lines]
