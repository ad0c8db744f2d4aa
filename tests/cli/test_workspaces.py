"""`tfward workspaces [show NAME]`, `lock`, `unlock`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import demo_workspace, running_daemon, write_config


async def test_workspaces_lists_them_and_json_parses(tmp_path: Path, tfward: Any) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, "a"), demo_workspace(tmp_path, "b")])
    async with running_daemon(config) as (daemon, _):
        cli = tfward(daemon)
        listed = await cli("workspaces")
        assert listed.code == 0
        assert [line.split()[0] for line in listed.out.splitlines()] == ["WORKSPACE", "a", "b"]
        found = json.loads((await cli("workspaces", "--json")).out)
        assert [ws["name"] for ws in found] == ["a", "b"]
        one = json.loads((await cli("workspaces", "show", "b", "--json")).out)
        assert one["name"] == "b" and one["lock"] is None
        shown = await cli("workspaces", "show", "a")
        assert "lock:        unlocked" in shown.out and "state:       none" in shown.out


async def test_lock_and_unlock_a_workspace(tmp_path: Path, tfward: Any) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path)])
    async with running_daemon(config) as (daemon, api):
        cli = tfward(daemon)
        locked = await cli("lock", "demo", "--reason", "maintenance")
        assert locked.code == 0 and "maintenance" in locked.out
        assert (await api.workspace("demo"))["lock"]["reason"] == "maintenance"
        listed = await cli("workspaces")
        # Who holds it: the name of the token (the daemon's local admin token is "admin").
        assert "admin" in listed.out.splitlines()[1]
        assert (await api.workspace("demo"))["lock"]["locked_by"] == "admin"
        unlocked = await cli("unlock", "demo")
        assert unlocked.code == 0 and "unlocked" in unlocked.out
        assert (await api.workspace("demo"))["lock"] is None
