"""`make fuzz`: schemathesis against a real daemon, driven by the daemon's own OpenAPI document.

1. A temporary directory gets a copy of examples/tfward.toml (its own data dir, a free port on
   127.0.0.1, a short shutdown grace, releases enabled) beside links to the example workspaces
   and provider, so the example's relative paths resolve; the demo provider's store is there.
2. `tfward serve` of this checkout (not whatever the virtualenv's editable install points at)
   starts on it, its log in `<tmp>/daemon.log`; `/healthz` is polled until it answers. The
   daemon writes `<data_dir>/admin.token` at first start (no `[[api_token]]` in the example),
   and schemathesis sends it as `Authorization: Bearer ...`.
3. `schemathesis run <url>/api/v1/openapi.json` with every check (`--checks all`) and a bounded
   number of examples per operation, inside a hard time limit; fuzz_hooks.py keeps long-polls
   short.
4. The daemon is stopped with SIGTERM (graceful), SIGKILL to its process group after a grace.

The exit code is schemathesis's. The temporary directory is removed when everything passed and
kept (its path printed) otherwise; the API's tracebacks from the daemon log are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
HOOKS = Path(__file__).with_name("fuzz_hooks.py")
BIN = Path(sys.executable).parent
# Every check schemathesis has: server errors, undocumented statuses, content types and
# headers, answers that do not match their schemas, schema-valid requests refused and invalid
# ones accepted, methods the document does not list (405 with Allow), auth that is ignored.
CHECKS = ("all",)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(root: Path, port: int) -> Path:
    """The example config under `root`, with its data dir, port and grace changed."""
    for name in ("workspaces", "provider"):
        (root / name).symlink_to(EXAMPLES / name, target_is_directory=True)
    text = (EXAMPLES / "tfward.toml").read_text()
    for key, value in (
        ("listen", f"127.0.0.1:{port}"),
        ("data_dir", str(root / "data")),
        # A run the fuzzer queued must not hold the stop for the example's ten minutes.
        ("shutdown_grace", "5s"),
    ):
        text, count = re.subn(rf"(?m)^{key} = .*$", f"{key} = {json.dumps(value)}", text)
        assert count == 1, f"examples/tfward.toml: no single `{key} = ...` line"
    config = root / "tfward.toml"
    # Releases are off in the example; on here, so that their endpoints are fuzzed too.
    config.write_text(text + "\n[releases]\nenabled = true\n")
    return config


def start(config: Path, url: str, log: Path, limit: float = 60.0) -> subprocess.Popen[bytes]:
    """`tfward serve` in its own process group; returns once `GET /healthz` answers 200."""
    env = {
        **os.environ,
        # The tfward of this checkout, whatever the virtualenv's editable install points at.
        "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "TFWARD_DEMO_STORE_DIR": str(config.parent / "demo-store"),
        "TFWARD_DEMO_CALLS_LOG": str(config.parent / "demo-calls.jsonl"),
    }
    (config.parent / "demo-store").mkdir()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tfward.cli.main", "serve", str(config), "--log-format", "text"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=config.parent,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + limit
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the daemon exited with {proc.returncode}; see {log}")
            try:
                if client.get(f"{url}/healthz").status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    stop(proc)
    raise SystemExit(f"the daemon did not answer within {limit:.0f}s; see {log}")


def stop(proc: subprocess.Popen[bytes], grace: float = 30.0) -> int:
    """SIGTERM (the daemon's graceful stop), then SIGKILL to its group after `grace`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def schemathesis(url: str, token: str | None, args: argparse.Namespace, cwd: Path) -> int:
    command = [
        str(BIN / "schemathesis"),
        "run",
        f"{url}/api/v1/openapi.json",
        "--checks",
        ",".join(args.checks),
        "--max-examples",
        str(args.max_examples),
        "--request-timeout",
        "60",
        "--generation-database",
        "none",
        "--no-color",
        *(["--seed", str(args.seed)] if args.seed is not None else []),
        *(["--header", f"Authorization: Bearer {token}"] if token else []),
        *args.extra,
    ]
    shown = [part if token is None else part.replace(token, "***") for part in command]
    print("+", " ".join(shown), flush=True)
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)}
    try:
        return subprocess.run(command, cwd=cwd, env=env, timeout=args.time_limit).returncode
    except subprocess.TimeoutExpired:
        print(f"schemathesis ran past {args.time_limit}s: stopped", file=sys.stderr)
        return 124


def api_errors(log: Path) -> list[str]:
    """The daemon log's lines about unhandled API errors, with their tracebacks."""
    found: list[str] = []
    inside = False
    for line in log.read_text(errors="replace").splitlines():
        if re.match(r"\d{4}-\d\d-\d\d ", line):  # a new log record
            inside = "unhandled error in the API" in line
        if inside:
            found.append(line)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--max-examples", type=int, default=25, help="per operation")
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds, for all")
    parser.add_argument("--checks", type=lambda s: s.split(","), default=list(CHECKS))
    parser.add_argument("--seed", type=int)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("extra", nargs="*", help="after --: more schemathesis options")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="tfward-fuzz-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = prepare(root, port)
    log = root / "daemon.log"
    proc = start(config, url, log)
    try:
        token_file = root / "data" / "admin.token"
        token = token_file.read_text().strip() if token_file.exists() else None
        if token is None:
            print("no data/admin.token: the API is fuzzed without a token", flush=True)
        code = schemathesis(url, token, args, root)
    finally:
        stopped = stop(proc)
    errors = api_errors(log)
    if errors:
        print("\nunhandled API errors in the daemon log:", *errors, sep="\n")
    if stopped != 0:
        print(f"the daemon exited with {stopped}; see {log}", file=sys.stderr)
    if code == 0 and not errors and stopped == 0 and not args.keep:
        shutil.rmtree(root)
    else:
        print(f"kept {root}", file=sys.stderr)
    return code or (1 if errors or stopped else 0)


if __name__ == "__main__":
    sys.exit(main())
