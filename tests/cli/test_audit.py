"""`tfward audit [--action A] [--limit N] [--json]` against a real daemon."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import demo_workspace, running_daemon, write_config


async def test_audit_lists_what_admins_did_newest_first(tmp_path: Path, tfward: Any) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path)])
    async with running_daemon(config) as (daemon, api):
        cli = tfward(daemon)
        assert (await cli("lock", "demo")).code == 0
        assert (await cli("unlock", "demo", "--force")).code == 0
        refused = await cli("unlock", "demo", "--force")
        assert refused.code == 2 and "demo is not locked" in refused.err
        assert (await cli("lock", "demo")).code == 0  # not an admin action: not recorded

        listed = await cli("audit")
        events = json.loads((await cli("audit", "--json")).out)
        limited = json.loads((await cli("audit", "--json", "--limit", "1")).out)
        by_action = await cli("audit", "--action", "state_download")
        bad = await cli("audit", "--action", "nope")
    lines = listed.out.splitlines()
    assert listed.code == 0 and lines[0].split() == ["TIME", "AGO", "WHO", "ACTION", "TARGET",
                                                     "OUTCOME"]  # fmt: skip
    assert "refused: workspace demo is not locked" in lines[1] and "force_unlock" in lines[2]
    assert [(e["actor"], e["action"], e["outcome"]) for e in events] == [
        ("admin", "force_unlock", "refused"),
        ("admin", "force_unlock", "ok"),
    ]
    assert [e["id"] for e in limited] == [events[0]["id"]]
    assert by_action.code == 0 and by_action.out.strip() == "no admin actions recorded"
    assert bad.code == 2 and "expected one of force_unlock, force_cancel" in bad.err
