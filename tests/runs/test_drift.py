"""Drift in a refresh-only plan's JSON (pure)."""

from __future__ import annotations

import json

from tfward.runs.drift import drifted_addresses


def plan(*drift: tuple[str, list[str]]) -> bytes:
    return json.dumps({"format_version": "0.2", "resource_drift": [
        {"address": a, "change": {"actions": actions}} for a, actions in drift]}).encode()


def test_changed_and_deleted_resources_are_drift_and_no_ops_are_not() -> None:
    raw = plan(("b.x[1]", ["delete"]), ("a.x", ["update"]), ("c.x", ["no-op"]))
    assert drifted_addresses(raw) == ["a.x", "b.x[1]"]


def test_a_plan_without_drift_or_without_json_has_none() -> None:
    assert drifted_addresses(json.dumps({"format_version": "0.2"}).encode()) == []
    assert drifted_addresses(b"null") == []
    assert drifted_addresses(b"garbage") == []
