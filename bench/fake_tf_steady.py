#!/usr/bin/env python3
"""A fake terraform whose plan prints steadily, for bench/api_latency.py.

`plan` prints a numbered ~80-byte line every $STEADY_INTERVAL seconds (default 0.05) for
$STEADY_SECONDS seconds (default 60), then becomes the repository's fake
(tests/fakes/fake_terraform.py, named by $BENCH_FAKE_TF; $FAKE_TF_SCRIPT applies), which writes
the plan file and exits 2 (changes). Every other command is the repository's fake straight away.
SIGINT (a cancel) ends the printing at once.
"""

import os
import sys
import time

if sys.argv[1:2] == ["plan"]:
    interval = float(os.environ.get("STEADY_INTERVAL", "0.05"))
    end = time.monotonic() + float(os.environ.get("STEADY_SECONDS", "60"))
    n = 0
    while time.monotonic() < end:
        print(f"steady line {n:06d} " + "." * 60, flush=True)
        n += 1
        time.sleep(interval)
os.execv(sys.executable, [sys.executable, os.environ["BENCH_FAKE_TF"], *sys.argv[1:]])
