#!/usr/bin/env python3
"""A fake terraform for faults real terraform cannot produce on demand.

Never a replacement for real terraform: the tests that use it script a hang, an ignored
SIGINT, a crash, megabytes of output or a corrupt plan. The script is a JSON file named by
$FAKE_TF_SCRIPT, one entry per subcommand (init, plan, show, apply):

    {"plan": {"sleep": 30, "ignore_sigint": true, "exit": 1, "print": "Error: boom",
              "spam_bytes": 200000000, "corrupt_plan": true, "spawn_child": true},
     "apply": {"stale_once": "/tmp/marker"},
     "init": {"replay": "registry_no_such_host", "times": 2, "counter": "/tmp/count"}}

`replay` prints what the real terraform 1.0.3 printed in that failure (a capture of
tests/runs/terraform_failures.toml) and exits as it did; with `times` only the first that many
calls do (counted in the file `counter`), later ones go on as usual.

Defaults behave like a successful terraform: plan writes the -out file and exits 2 (changes),
show prints a plan JSON with one create, apply writes a state with the next serial. Every call
is appended to $FAKE_TF_CALLS (one JSON line) when set.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path


def main() -> int:
    args = sys.argv[1:]
    command = args[0] if args else "version"
    script = (
        json.loads(Path(os.environ["FAKE_TF_SCRIPT"]).read_text())
        if os.environ.get("FAKE_TF_SCRIPT")
        else {}
    )
    step = script.get(command, {})
    if step.get("ignore_sigint"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGINT, _interrupted)
    _record(command, args)  # after the handlers: a recorded call is ready for signals
    if step.get("replay") and _replay_now(step):
        capture = _capture(step["replay"])
        sys.stdout.write(capture["output"])
        sys.stdout.flush()
        return int(capture["exit"])
    if step.get("spawn_child"):
        # A provider-like child in the same process group: must not outlive the run.
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)  # fake-provider"])
    if step.get("print"):
        print(step["print"], flush=True)
    if step.get("spam_bytes"):
        _spam(int(step["spam_bytes"]))
    if step.get("sleep"):
        time.sleep(float(step["sleep"]))
    if "exit" in step and step["exit"] not in (0, 2):
        return int(step["exit"])
    return HANDLERS.get(command, lambda a, s: 0)(args, step)


def _replay_now(step: dict) -> bool:
    if "times" not in step:
        return True
    counter = Path(step["counter"])
    done = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(done + 1))
    return done < int(step["times"])


def _capture(name: str) -> dict:
    import tomllib

    path = Path(__file__).resolve().parents[1] / "runs" / "terraform_failures.toml"
    captures = tomllib.loads(path.read_text())["capture"]
    return next(c for c in captures if c["name"] == name)


def _interrupted(signum: int, frame: object) -> None:
    print("Interrupt received. Gracefully shutting down...", flush=True)
    sys.exit(1)


def _spam(total: int) -> None:
    """Numbered lines, so a test can prove that none was lost."""
    out = sys.stdout.buffer
    line_no, written = 0, 0
    block = []
    while written < total:
        line = (
            b"spam line %09d ................................................................\n"
            % line_no
        )
        block.append(line)
        written += len(line)
        line_no += 1
        if len(block) == 2000:
            out.write(b"".join(block))
            block = []
    out.write(b"".join(block))
    out.write(b"spam done %d lines\n" % line_no)
    out.flush()


def _init(args: list[str], step: dict) -> int:
    Path(".terraform").mkdir(exist_ok=True)
    print("Terraform has been successfully initialized!")
    return int(step.get("exit", 0))


def _plan(args: list[str], step: dict) -> int:
    out = next((a.split("=", 1)[1] for a in args if a.startswith("-out=")), None)
    if out:
        data = b"corrupt" if step.get("corrupt_plan") else b"PK-fake-plan-" + uuid.uuid4().bytes
        Path(out).write_bytes(data)
    print("Plan: 1 to add, 0 to change, 0 to destroy.")
    return int(step.get("exit", 2))


def _show(args: list[str], step: dict) -> int:
    if step.get("invalid_json"):
        print("this is not json")
        return 0
    doc = {
        "format_version": "0.2",
        "resource_changes": [
            {
                "address": "fake_thing.a",
                "type": "fake_thing",
                "name": "a",
                "change": {"actions": ["create"]},
            }
        ],
    }
    print(json.dumps(doc))
    return 0


def _apply(args: list[str], step: dict) -> int:
    marker = step.get("stale_once")
    if marker and not Path(marker).exists():
        # What terraform says when the state moved on since the plan was made.
        Path(marker).write_text("said stale once\n")
        print("Error: Saved plan is stale")
        return 1
    path = Path("terraform.tfstate")
    serial, lineage = 0, str(uuid.uuid4())
    if path.exists():
        old = json.loads(path.read_text())
        serial, lineage = old["serial"], old["lineage"]
    state = {
        "version": 4,
        "terraform_version": "1.0.3",
        "serial": serial + 1,
        "lineage": lineage,
        "outputs": {},
        "resources": [
            {
                "mode": "managed",
                "type": "fake_thing",
                "name": "a",
                "provider": 'provider["example.com/tfward/fake"]',
                "instances": [{"attributes": {"id": "a"}}],
            }
        ],
    }
    path.write_text(json.dumps(state))
    print("Apply complete! Resources: 1 added, 0 changed, 0 destroyed.")
    return int(step.get("exit", 0))


def _record(command: str, args: list[str]) -> None:
    calls = os.environ.get("FAKE_TF_CALLS")
    if calls:
        with open(calls, "a") as fh:
            fh.write(
                json.dumps(
                    {"command": command, "args": args, "pid": os.getpid(), "cwd": os.getcwd()}
                )
                + "\n"
            )


HANDLERS = {"init": _init, "plan": _plan, "show": _show, "apply": _apply}

if __name__ == "__main__":
    sys.exit(main())
