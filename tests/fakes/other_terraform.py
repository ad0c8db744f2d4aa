#!/usr/bin/env python3
"""Real terraform behind a wrapper: another terraform binary, as a workspace pins one
(`terraform_binary`). Not a fake: every command is the real terraform named by
$OTHER_TF_REAL.

- $OTHER_TF_CALLS (optional): each call is appended as one JSON line, with the run's
  remote-state credential from its environment (`credential`), so a test can check it
  reached terraform and then look for it everywhere else.
- $OTHER_TF_ECHO_CREDENTIAL (optional): the credential is printed on stderr first, as a
  verbose debug log of some binary might, so a test can see it masked in the run's log.
- $OTHER_TF_REWORD (optional): terraform's human output on stdout is reworded, line by line,
  as another version or an OpenTofu-compatible binary might print it (`show -json` is left
  alone: it is not text for humans). The exit code and signals are terraform's own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

REWORDING = (
    (b"Apply complete!", b"Applied successfully."),
    (b"Plan: ", b"Planned changes: "),
    (b"Creation complete after", b"Made in"),
    (b"Still creating...", b"Still making..."),
    (b"Creating...", b"Making..."),
    (b"Terraform", b"OtherTF"),
    (b"Error: ", b"Failure - "),
)


def main() -> int:
    real, args = os.environ["OTHER_TF_REAL"], sys.argv[1:]
    if calls := os.environ.get("OTHER_TF_CALLS"):
        with open(calls, "a", encoding="utf-8") as fh:
            record = {"args": args, "credential": os.environ.get("TF_HTTP_PASSWORD")}
            fh.write(json.dumps(record) + "\n")
    if os.environ.get("OTHER_TF_ECHO_CREDENTIAL"):
        credential = os.environ.get("TF_HTTP_PASSWORD")
        print(f"other terraform: TF_HTTP_PASSWORD={credential}", file=sys.stderr)
    if not os.environ.get("OTHER_TF_REWORD") or args[:1] == ["show"]:
        os.execv(real, [real, *args])
    # The driver signals the whole process group: terraform gets SIGINT itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    child = subprocess.Popen([real, *args], stdout=subprocess.PIPE)
    assert child.stdout is not None
    for line in child.stdout:
        for old, new in REWORDING:
            line = line.replace(old, new)
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
