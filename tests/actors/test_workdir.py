"""Run directories (tfward/actors/workdir.py): where a module workspace's sensitive inputs go."""

from __future__ import annotations

import io
import json
import stat
import tarfile
from pathlib import Path
from typing import Any

from tfward.actors import workdir
from tfward.config import ModuleRef, WorkspaceConfig


def module_workspace(inputs: dict[str, Any], sensitive: set[str]) -> WorkspaceConfig:
    return WorkspaceConfig(
        name="mod",
        source=None,
        module=ModuleRef(source="example/things/demo", version="1.0.0"),
        inputs=inputs,
        vars={},
        env={},
        sensitive=frozenset(sensitive),
        auto_apply=False,
        init_timeout=1.0,
        plan_timeout=1.0,
        apply_timeout=1.0,
    )


def main_tf_json(ws: WorkspaceConfig) -> tuple[dict[str, Any], bytes]:
    archive = workdir.snapshot(ws).archive
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        member = tar.extractfile("main.tf.json")
        assert member is not None
        return json.loads(member.read()), archive


def test_a_sensitive_input_is_a_sensitive_root_variable_not_a_literal() -> None:
    doc, archive = main_tf_json(module_workspace({"token": "t0k3n", "size": 3}, {"token"}))
    assert doc["module"]["main"]["token"] == "${var.token}"
    assert doc["module"]["main"]["size"] == 3
    assert doc["variable"] == {"token": {"sensitive": True}}
    # Terraform refuses an output holding a sensitive value unless it says so.
    assert doc["output"]["main"] == {"value": "${module.main}", "sensitive": True}
    assert b"t0k3n" not in archive


def test_a_module_without_sensitive_inputs_keeps_its_outputs_visible() -> None:
    doc, _ = main_tf_json(module_workspace({"size": 3}, set()))
    assert "variable" not in doc
    assert doc["output"]["main"] == {"value": "${module.main}"}


def test_the_tfvars_file_holds_sensitive_inputs_and_only_its_owner_reads_it(
    tmp_path: Path,
) -> None:
    ws = module_workspace({"token": {"nested": ["t0k3n"]}, "size": 3}, {"token"})
    workdir.write_inputs(tmp_path, ws, "cli config\n", overrides={"extra": "x"})
    path = tmp_path / workdir.TFVARS
    assert json.loads(path.read_text()) == {"token": {"nested": ["t0k3n"]}, "extra": "x"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (tmp_path / workdir.CLI_CONFIG).read_text() == "cli config\n"
