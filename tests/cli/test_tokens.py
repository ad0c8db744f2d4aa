"""`tfward token create`: a random token and the config entry holding only its sha256."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

from harness import demo_workspace, write_config


async def test_token_create_prints_a_token_and_a_config_entry_that_loads_as_toml(
    run_main: Any,
) -> None:
    result = await run_main(["token", "create", "--name", "ci", "--role", "plan"])
    assert result.code == 0
    lines = result.out.splitlines()
    token = lines[0].removeprefix("token: ")
    assert token.startswith("tfw_") and len(token) > 40
    entry = result.out[result.out.index("[[api_token]]") :]
    loaded = tomllib.loads(entry)
    assert loaded == {
        "api_token": [
            {"name": "ci", "role": "plan", "sha256": hashlib.sha256(token.encode()).hexdigest()}
        ]
    }
    assert token not in entry


async def test_every_token_is_new_and_json_output_has_the_same_parts(run_main: Any) -> None:
    first = json.loads(
        (await run_main(["token", "create", "--name", "a", "--role", "admin", "--json"])).out
    )
    second = json.loads(
        (await run_main(["token", "create", "--name", "a", "--role", "admin", "--json"])).out
    )
    assert first["token"] != second["token"]
    assert first["sha256"] == hashlib.sha256(first["token"].encode()).hexdigest()
    assert tomllib.loads(first["config"])["api_token"][0]["sha256"] == first["sha256"]


async def test_an_unknown_role_or_a_bad_name_is_a_usage_error(run_main: Any) -> None:
    bad_role = await run_main(["token", "create", "--name", "ci", "--role", "root"])
    assert bad_role.code == 2 and "invalid choice" in bad_role.err
    bad_name = await run_main(["token", "create", "--name", 'c i"', "--role", "read"])
    assert bad_name.code == 2 and "--name" in bad_name.err


async def test_check_config_names_the_tokens_it_would_accept(run_main: Any, tmp_path: Path) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path)])
    bare = await run_main(["check-config", str(config.path)])
    assert bare.code == 0
    assert f"none configured: the local admin token {config.daemon.data_dir}/admin.token" in (
        bare.out
    )
    created = json.loads(
        (await run_main(["token", "create", "--name", "ci", "--role", "plan", "--json"])).out
    )
    config.path.write_text(config.path.read_text() + "\n" + created["config"])
    named = await run_main(["check-config", str(config.path)])
    assert named.code == 0 and "API tokens: ci (plan)" in named.out
    assert created["token"] not in named.out
