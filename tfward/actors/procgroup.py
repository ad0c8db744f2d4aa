"""Process groups of the children tfward starts (terraform and its provider plugins).

Every child runs in its own session, so its process group id is its pid and one signal reaches
the whole group. The group id cannot be reused while any member is alive, so signalling a
recorded group is safe as long as some member lives. Used by the terraform driver (a cancel:
SIGINT, grace, SIGKILL) and by recovery (groups a killed daemon left behind).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send `sig` to every process of the group; a group that is gone is not an error."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_group(pgid: int) -> None:
    """SIGKILL every process left in the group (provider plugins included)."""
    signal_group(pgid, signal.SIGKILL)


def group_alive(pgid: int) -> bool:
    """Whether the group has any member, zombies included."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_running(pgid: int) -> bool:
    """Whether the group has a member that is not a zombie. Orphans are reaped by init, which
    may take its time (or, in some sandboxes, never): a zombie has exited already."""
    if not group_alive(pgid):
        return False
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command: state, ppid, pgrp.
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def is_terraform_group(pid: int) -> bool:
    """Whether `pid` is alive, leads a group, and runs terraform (a recorded pid may have been
    reused by something else after a crash)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return group_alive(pid) and b"terraform" in cmdline


def groups_with_cwd_under(root: Path) -> set[int]:
    """Process groups of live processes whose working directory is under `root`."""
    prefix = str(root.resolve()) + os.sep
    groups: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
            if cwd.startswith(prefix):
                groups.add(os.getpgid(int(proc.name)))
        except OSError:
            continue
    return groups
