"""What tfward reads in terraform's human output: the first error, a stale plan, progress, the
plan summary, the end of an apply. The run log (runlog.py) hands it the interesting lines."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Lines worth parsing; everything else is only stored. A plain alternation (no `^.*...$`
# around it) scans at several hundred MB/s; the line is cut out around each hit.
INTERESTING = re.compile(
    rb"Error: |Plan: |complete after|Still creating|Apply complete!|Saved plan is stale"
    rb"|Interrupt received"
)


@dataclass
class OutputFacts:
    """What the parser learned from terraform's output (progress, the first error)."""

    first_error: str | None = None
    stale_plan: bool = False
    completed: int = 0
    plan_summary: str | None = None
    apply_complete: bool = False


class OutputParser:
    """Reads terraform's human output. Each method call handles one line."""

    def __init__(self) -> None:
        self.facts = OutputFacts()

    def line(self, text: str) -> None:
        # tfward's own `[tfward] Error: ...` lines (a refused remote-state read) count too.
        stripped = text.strip(" │╷╵\t").removeprefix("[tfward] ")
        if "Saved plan is stale" in stripped:
            self.facts.stale_plan = True
        if stripped.startswith("Error: ") and self.facts.first_error is None:
            self.facts.first_error = stripped[len("Error: ") :]
        elif stripped.startswith("Plan: "):
            self.facts.plan_summary = stripped
        elif stripped.startswith("Apply complete!"):
            self.facts.apply_complete = True
        elif "complete after" in stripped:
            self.facts.completed += 1
