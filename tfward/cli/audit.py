"""`tfward audit [--action A] [--limit N] [--json]`: the audit trail of admin actions, newest
first (`GET /api/v1/audit`, role admin)."""

from __future__ import annotations

import argparse
from typing import Any

from .client import EXIT_OK, Api, Settings
from .render import ago, as_json, table


def list_events(args: argparse.Namespace, settings: Settings) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.action:
        params["action"] = args.action
    with Api(settings) as api:
        events = api.get("/api/v1/audit", **params)
    if getattr(args, "json", False):
        print(as_json(events))
        return EXIT_OK
    rows = [
        (
            e["created_at"],
            ago(e["created_at"]),
            e["actor"],
            e["action"],
            e["target"],
            e["outcome"] + (f": {e['reason']}" if e["reason"] else ""),
        )
        for e in events
    ]
    headers = ("TIME", "AGO", "WHO", "ACTION", "TARGET", "OUTCOME")
    print(table(headers, rows) if rows else "no admin actions recorded")
    return EXIT_OK
