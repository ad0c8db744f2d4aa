"""`tfward state list|show|download|rollback` after a real apply; `state pull|push` through
terraform's http backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import demo_workspace, running_daemon, write_config
from statebackend import lock_info, outputs_workspace, state_doc


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
        ids = json.dumps(shown["outputs"]["ids"]["value"])  # a list: shown as JSON
        assert ids.startswith('["')
        for command in (("state", "show", sv["id"]), ("workspaces", "show", "demo")):
            lines = (await cli(*command)).out.splitlines()
            assert [line.split(None, 2)[2] for line in lines if line.startswith("output ids:")] == [
                ids
            ], command

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


async def test_state_pull_and_push_go_through_the_http_backend_and_its_checks(
    tmp_path: Path, tfward: Any
) -> None:
    config = write_config(tmp_path, [outputs_workspace(tmp_path, "w", {"a": "b"})])
    lineage = "6a72abb9-3d00-e825-c58e-caa8878a2fa7"
    async with running_daemon(config) as (daemon, api):
        cli = tfward(daemon)
        empty = await cli("state", "pull", "w")
        assert (empty.code, empty.out) == (0, "") and "w has no state yet" in empty.err

        first = tmp_path / "first.tfstate"
        first.write_bytes(state_doc(2, lineage, {"a": "pushed"}))
        pushed = await cli("state", "push", "w", str(first))
        assert pushed.code == 0, pushed.err
        assert "(serial 2, http-backend) is the current state of w" in pushed.out
        assert (await cli("state", "pull", "w")).out.encode() == first.read_bytes()
        target = tmp_path / "pulled.tfstate"
        saved = await cli("state", "pull", "w", "-o", str(target))
        assert saved.code == 0 and target.read_bytes() == first.read_bytes()
        assert target.stat().st_mode & 0o777 == 0o600
        listed = await cli("state", "list", "w")
        assert listed.out.splitlines()[1].split()[-1] == "admin"  # BY: the token's name

        older = tmp_path / "older.tfstate"
        older.write_bytes(state_doc(1, lineage))
        refused = await cli("state", "push", "w", str(older))
        assert refused.code == 2
        assert "state serial 1 is not newer than the current serial 2 (HTTP 409)" in refused.err
        missing = await cli("state", "push", "w", str(tmp_path / "nope.tfstate"))
        assert missing.code == 2 and "cannot read" in missing.err

        # While terraform holds the lock, only its lock ID may push.
        taken = await api.http.request("LOCK", "/api/v1/workspaces/w/state", json=lock_info("L1"))
        assert taken.status_code == 200
        shown = await cli("workspaces", "show", "w")
        assert "[OperationTypeApply by ops@build-host, lock ID L1], since" in shown.out
        newer = tmp_path / "newer.tfstate"
        newer.write_bytes(state_doc(3, lineage))
        blocked = await cli("state", "push", "w", str(newer))
        assert blocked.code == 2 and "only the holder may write the state" in blocked.err
        allowed = await cli("state", "push", "w", str(newer), "--lock-id", "L1", "--json")
        assert allowed.code == 0 and json.loads(allowed.out)["serial"] == 3


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
