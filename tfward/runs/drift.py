"""Drift in a refresh-only plan (pure)."""

from __future__ import annotations

import json


def drifted_addresses(plan_json: bytes) -> list[str]:
    """Addresses terraform found changed outside terraform: the `resource_drift` entries of
    `terraform show -json` whose actions are not a no-op, sorted. [] for an unreadable plan."""
    try:
        doc = json.loads(plan_json) or {}
    except ValueError:
        return []
    if not isinstance(doc, dict):
        return []
    found = set()
    for entry in doc.get("resource_drift") or []:
        actions = (entry.get("change") or {}).get("actions") or []
        if entry.get("address") and any(a != "no-op" for a in actions):
            found.add(str(entry["address"]))
    return sorted(found)
