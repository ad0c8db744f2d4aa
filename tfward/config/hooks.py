"""A workspace's script hooks: `hooks = { pre_plan = ["..."], post_plan = [...], pre_apply =
[...], post_apply = [...] }` and `hook_timeout`.

Each hook is one shell command line, run with `/bin/sh -c` in the run's directory, so an
operator writes it as in a terminal (`tflint && ./cost.sh "$TFWARD_PLAN_JSON"`). The commands
of a stage run one after another, each under the workspace's `hook_timeout` (default
`[terraform] hook_timeout`, 10 minutes). What they do to a run is in docs/architecture.md §3.
"""

from __future__ import annotations

from dataclasses import dataclass

from tfward.config.model import HOOK_STAGES
from tfward.config.reading import Table, default, expected

WORKSPACE_KEYS = frozenset({"hooks", "hook_timeout"})


@dataclass(frozen=True, slots=True)
class WorkspaceHooks:
    hooks: dict[str, tuple[str, ...]]
    timeout: float


def workspace_hooks(t: Table, default_timeout: float) -> WorkspaceHooks:
    """The `hooks` table of a workspace (stages with no command left out) and its timeout.
    An unknown stage, a value that is not an array, or a command that is not a non-empty
    string is refused with its key path."""
    t.get("hooks", dict, 'a table such as { pre_plan = ["tflint"] }')
    table = t.table("hooks", HOOK_STAGES)
    found: dict[str, tuple[str, ...]] = {}
    for stage in HOOK_STAGES:
        commands = table.get(stage, list, "an array of shell commands (strings)")
        for index, command in enumerate(commands or ()):
            if not isinstance(command, str) or not command.strip():
                raise t.ctx.error(
                    f"{table.key(stage)}[{index}]",
                    expected("a non-empty shell command (a string)", command),
                )
        if commands:
            found[stage] = tuple(commands)
    return WorkspaceHooks(found, default(t.duration("hook_timeout"), default_timeout))
