"""State commands: `state list NAME`, `state show SV_ID`, `state download SV_ID [-o FILE]`,
`state rollback NAME SV_ID`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .client import EXIT_OK, EXIT_USAGE, Api, CliError, Settings
from .render import ago, as_json, fields, output_value, table


def state(args: argparse.Namespace, settings: Settings) -> int:
    command = args.state_command
    with Api(settings) as api:
        if command == "download":
            return _download(api, args.sv_id, args.output)
        if command == "list":
            found = api.get(f"/api/v1/workspaces/{args.name}/state-versions")
        elif command == "show":
            found = api.get(f"/api/v1/state-versions/{args.sv_id}")
        else:
            found = api.post(f"/api/v1/workspaces/{args.name}/state-versions/{args.sv_id}/rollback")
    if getattr(args, "json", False):
        print(as_json(found))
    elif command == "list":
        rows = [
            (
                sv["id"],
                sv["serial"],
                sv["kind"],
                sv["resource_count"],
                sv["run_id"],
                ago(sv["created_at"]),
            )
            for sv in found
        ]
        print(
            table(("STATE VERSION", "SERIAL", "KIND", "RESOURCES", "RUN", "CREATED"), rows)
            if rows
            else f"workspace {args.name} has no state yet"
        )
    elif command == "show":
        print(_details(found))
    else:
        print(
            f"rolled back: {found['id']} (serial {found['serial']}) is now the current state, "
            f"a copy of {found['rolled_back_from'] or args.sv_id}"
        )
    return EXIT_OK


def _details(sv: dict[str, Any]) -> str:
    pairs: list[tuple[str, Any]] = [
        ("state version", sv["id"]),
        ("serial", sv["serial"]),
        ("lineage", sv["lineage"]),
        ("kind", sv["kind"]),
        ("resources", sv["resource_count"]),
        ("run", sv["run_id"]),
        ("rolled back from", sv["rolled_back_from"]),
        ("sha256", sv["sha256"]),
        ("created", sv["created_at"]),
    ]
    for name, out in sv["outputs"].items():
        pairs.append((f"output {name}", output_value(out)))
    return fields(pairs)


def _download(api: Api, sv_id: str, output: str | None) -> int:
    """The raw state file to `output` (written whole or not at all, mode 0600), or stdout."""
    path = f"/api/v1/state-versions/{sv_id}/download"
    if output in (None, "-"):
        sys.stdout.flush()
        api.download(path, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return EXIT_OK
    target = Path(str(output))
    partial = target.with_name(target.name + ".partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            size = api.download(path, fh)
        partial.replace(target)
    except OSError as exc:
        raise CliError(EXIT_USAGE, f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    print(f"wrote {target} ({size} bytes)", file=sys.stderr)
    return EXIT_OK
