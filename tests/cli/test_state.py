"""`tfward state list|show|download|rollback` after a real apply."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import demo_workspace, running_daemon, write_config


async def test_state_list_show_download_and_rollback(tmp_path: Path, tfward: Any) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=2)])
    async with running_daemon(config) as (daemon, api):
        cli = tfward(daemon)
        assert (await cli("apply", "demo", "--auto-approve")).code == 0
        [sv] = json.loads((await cli("state", "list", "demo", "--json")).out)
        assert sv["resource_count"] == 2
        table = await cli("state", "list", "demo")
        assert table.out.splitlines()[1].split()[:4] == [sv["id"], str(sv["serial"]), "apply", "2"]

        shown = json.loads((await cli("state", "show", sv["id"], "--json")).out)
        assert shown["id"] == sv["id"] and "ids" in shown["outputs"]
        assert "output ids:" in (await cli("state", "show", sv["id"])).out

        target = tmp_path / "out" / "demo.tfstate"
        target.parent.mkdir()
        written = await cli("state", "download", sv["id"], "-o", str(target))
        assert written.code == 0 and f"wrote {target}" in written.err
        state = json.loads(target.read_text())
        assert state["serial"] == sv["serial"] and len(state["resources"]) == 1
        assert target.stat().st_mode & 0o777 == 0o600
        to_stdout = await cli("state", "download", sv["id"])
        assert json.loads(to_stdout.out) == state

        current = await cli("state", "rollback", "demo", sv["id"])
        assert current.code == 2 and "is already the current state (HTTP 409)" in current.err
        assert (await cli("destroy", "demo", "--auto-approve")).code == 0
        rolled = await cli("state", "rollback", "demo", sv["id"])
        assert rolled.code == 0 and "is now the current state" in rolled.out
        versions = await api.state_versions("demo")
        assert len(versions) == 3 and versions[0]["rolled_back_from"] == sv["id"]
        assert versions[0]["resource_count"] == 2


async def test_state_of_a_workspace_without_state(tmp_path: Path, tfward: Any) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path)])
    async with running_daemon(config) as (daemon, _):
        cli = tfward(daemon)
        empty = await cli("state", "list", "demo")
        assert empty.code == 0 and "has no state yet" in empty.out
        missing = await cli("state", "download", "sv-nope", "-o", str(tmp_path / "x"))
        assert missing.code == 2 and "`tfward state list WORKSPACE`" in missing.err
        assert not (tmp_path / "x").exists()


async def test_state_decrypt_opens_the_backups_of_a_real_apply_and_says_why_it_cannot_in_one_line(
    tmp_path: Path, tfward: Any, capsys: Any
) -> None:
    from tfward.cli.main import main

    config = write_config(tmp_path, [demo_workspace(tmp_path, things=2)])
    async with running_daemon(config) as (daemon, api):
        assert (await tfward(daemon)("apply", "demo", "--auto-approve")).code == 0
    (backup,) = (config.daemon.data_dir / "state-backups" / "demo").iterdir()
    assert backup.name.endswith(".tfstate.sealed") and b"demo_thing" not in backup.read_bytes()
    plain = tmp_path / "plain.tfstate"
    args = ["state", "decrypt", str(backup), "--config", str(config.path)]
    assert main([*args, "-o", str(plain)]) == 0
    assert len(json.loads(plain.read_text())["resources"]) == 1
    assert plain.stat().st_mode & 0o777 == 0o600
    (config.daemon.data_dir / "secret.key").unlink()
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no secret key at" in err, err
