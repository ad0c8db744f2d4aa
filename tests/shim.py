"""A shim in front of the real terraform that writes down every invocation, for tests that
count terraform processes (how many `init`s, how many at once) from outside the daemon.

The shim is a shell script set as `[terraform] binary`: it appends `start <pid> <command>`
to its log, runs the real terraform 1.0.3 with the same arguments and environment, then
appends `end <pid> <command>`. Lines are single `O_APPEND` writes, so the log is the true
order of starts and ends across processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tfward.config.terraform import default_binary as _default_binary


@dataclass(frozen=True)
class CountingTerraform:
    binary: Path
    log: Path

    def events(self) -> list[tuple[str, int, str]]:
        """(`start` or `end`, pid, terraform command) in the order they happened."""
        if not self.log.exists():
            return []
        found = []
        for line in self.log.read_text().splitlines():
            event, pid, command = line.split(" ", 2)
            found.append((event, int(pid), command))
        return found

    def started(self, command: str) -> int:
        return sum(1 for event, _, cmd in self.events() if event == "start" and cmd == command)

    def most_at_once(self) -> int:
        """The largest number of terraform processes that were running at the same time."""
        running = most = 0
        for event, _, _ in self.events():
            running += 1 if event == "start" else -1
            most = max(most, running)
        return most


def counting_terraform(root: Path) -> CountingTerraform:
    shim, log = root / "terraform-shim", root / "terraform-calls.log"
    shim.write_text(
        "#!/bin/sh\n"
        f'echo "start $$ $1" >> "{log}"\n'
        f'"{_default_binary()}" "$@"\n'
        "code=$?\n"
        f'echo "end $$ $1" >> "{log}"\n'
        "exit $code\n"
    )
    shim.chmod(0o755)
    return CountingTerraform(shim, log)
