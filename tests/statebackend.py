"""Terraform's `http` backend as its clients use it (tfward/daemon/api/routes_backend.py).

`outputs_workspace` is a workspace of `output` blocks only: it needs no provider, so the daemon
and a hand-run terraform both plan and apply it offline. `hand_directory` is a plain directory
with a `backend "http"` block pointing at a workspace, as the README tells a user to write it;
`Terraform` runs the bundled terraform there with an isolated CLI config
(`TF_CLI_CONFIG_FILE=/dev/null`) and the token in `TF_HTTP_PASSWORD`.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio


def state_doc(serial: int, lineage: str, outputs: Mapping[str, str] | None = None) -> bytes:
    """A terraform state file with string outputs and no resources."""
    doc = {
        "version": 4,
        "terraform_version": "1.0.3",
        "serial": serial,
        "lineage": lineage,
        "outputs": {k: {"value": v, "type": "string"} for k, v in (outputs or {}).items()},
        "resources": [],
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def basic(token: str, user: str = "ops") -> dict[str, str]:
    """HTTP basic auth with the token as the password, as terraform sends it."""
    pair = base64.b64encode(f"{user}:{token}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


def lock_info(lock_id: str, operation: str = "OperationTypeApply") -> dict[str, str]:
    """Terraform's lock info, as terraform 1.0.3 sends it with LOCK."""
    return {
        "ID": lock_id,
        "Operation": operation,
        "Info": "",
        "Who": "ops@build-host",
        "Version": "1.0.3",
        "Created": "2026-11-30T05:25:08.140767968Z",
        "Path": "",
    }


def outputs_workspace(root: Path, name: str, outputs: Mapping[str, str], **settings: Any) -> dict:
    """A `[[workspace]]` whose configuration is `output` blocks only (HCL string values)."""
    source = root / name
    source.mkdir()
    (source / "main.tf").write_text(
        "".join(f'output "{k}" {{\n  value = "{v}"\n}}\n' for k, v in outputs.items())
    )
    return {"name": name, "source": str(source), **settings}


def hand_directory(root: Path, url: str, workspace: str, config: str) -> Path:
    """A plain directory with `config` and the backend block of the README, locking on."""
    directory = root / f"by-hand-{workspace}"
    directory.mkdir()
    address = f"{url}/api/v1/workspaces/{workspace}/state"
    (directory / "backend.tf").write_text(
        'terraform {\n  backend "http" {\n'
        f'    address        = "{address}"\n'
        f'    lock_address   = "{address}"\n'
        f'    unlock_address = "{address}"\n'
        '    username       = "ops"\n'
        "  }\n}\n"
    )
    (directory / "main.tf").write_text(config)
    return directory


@dataclass
class Result:
    code: int
    output: str


@dataclass
class Terraform:
    """The bundled terraform, run by hand in `cwd` with `token` as the backend's password."""

    binary: str
    cwd: Path
    token: str

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "TF_CLI_CONFIG_FILE": "/dev/null",
            "CHECKPOINT_DISABLE": "1",
            "TF_HTTP_PASSWORD": self.token,
        }

    async def __call__(self, *args: str, timeout: float = 120) -> Result:
        with trio.fail_after(timeout):
            done = await trio.run_process(
                [self.binary, *args, "-no-color"],
                cwd=self.cwd,
                env=self.env(),
                capture_stdout=True,
                stderr=subprocess.STDOUT,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        return Result(done.returncode, done.stdout.decode("utf-8", "replace"))

    async def start(self, *args: str) -> trio.Process:
        """Start a command that asks a question (stdin and stdout are pipes)."""
        return await trio.lowlevel.open_process(
            [self.binary, *args, "-no-color"],
            cwd=self.cwd,
            env=self.env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )


async def read_until(proc: trio.Process, marker: bytes, seen: bytearray) -> None:
    """Read `proc`'s output into `seen` until `marker` appears (terraform's prompt)."""
    assert proc.stdout is not None
    while marker not in seen:
        chunk = await proc.stdout.receive_some(65536)
        if not chunk:
            raise AssertionError(f"terraform ended before {marker!r}:\n{seen.decode()}")
        seen += chunk
