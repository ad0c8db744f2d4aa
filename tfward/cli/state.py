"""State commands: `state list NAME`, `state show SV_ID`, `state download SV_ID [-o FILE]`,
`state rollback NAME SV_ID`, through terraform's http backend (docs/protocols.md §8)
`state pull NAME [-o FILE]` and `state push NAME FILE [--lock-id ID]`, and `state decrypt FILE
[-o OUT]` (local: a sealed state backup from `<data_dir>/state-backups/` in plain text, for
`terraform state push`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .client import CONFIG_CANDIDATES, EXIT_OK, EXIT_USAGE, Api, CliError, Settings
from .render import ago, as_json, fields, output_value, table


def state(args: argparse.Namespace, settings: Settings) -> int:
    command = args.state_command
    with Api(settings) as api:
        if command == "download":
            return _download(api, args.sv_id, args.output)
        if command == "pull":
            return _pull(api, args.name, args.output)
        if command == "push":
            return _push(api, args, _read(args.file))
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
                sv.get("created_by"),
            )
            for sv in found
        ]
        print(
            table(("STATE VERSION", "SERIAL", "KIND", "RESOURCES", "RUN", "CREATED", "BY"), rows)
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


def decrypt(args: argparse.Namespace) -> int:
    """A sealed state backup, opened with the daemon's secret key (found through the config,
    as the daemon finds it), to `args.output` (0600) or stdout. Needs no daemon."""
    from tfward.actors import backups
    from tfward.config import load_config
    from tfward.errors import ConfigError
    from tfward.runtasks.keys import SECRET_FILE, load_keys
    from tfward.store.sealing import Sealer, SealError

    path = args.config or os.environ.get("TFWARD_CONFIG") or next(
        (p for p in CONFIG_CANDIDATES if Path(p).is_file()), None
    )
    if path is None:
        raise CliError(EXIT_USAGE, "no config: give --config (the daemon's, for its secret key)")
    try:
        config = load_config(path)
        daemon = config.daemon
        if (
            daemon.secret_key_file is None
            and not os.environ.get("CREDENTIALS_DIRECTORY")
            and not (daemon.data_dir / SECRET_FILE).is_file()
        ):
            raise CliError(EXIT_USAGE, f"no secret key at {daemon.data_dir / SECRET_FILE}")
        plain = backups.read(Path(args.file), Sealer(load_keys(daemon).encryption))
    except ConfigError as exc:
        raise CliError(EXIT_USAGE, f"config error: {exc}") from None
    except SealError as exc:
        raise CliError(EXIT_USAGE, f"{args.file}: {exc}") from None
    except OSError as exc:
        raise CliError(EXIT_USAGE, f"cannot read {args.file}: {exc.strerror or exc}") from None
    if args.output in (None, "-"):
        sys.stdout.buffer.write(plain)
        sys.stdout.buffer.flush()
        return EXIT_OK
    try:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(plain)
    except OSError as exc:
        raise CliError(EXIT_USAGE, f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"wrote {args.output} ({len(plain)} bytes)", file=sys.stderr)
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
        ("created by", sv.get("created_by")),
    ]
    for name, out in sv["outputs"].items():
        pairs.append((f"output {name}", output_value(out)))
    return fields(pairs)


def _download(api: Api, sv_id: str, output: str | None) -> int:
    """The raw state file of a version to `output`, or stdout."""
    path = f"/api/v1/state-versions/{sv_id}/download"
    return _save(output, lambda out: api.download(path, out))


def _pull(api: Api, name: str, output: str | None) -> int:
    """The workspace's current state, exactly as stored (what terraform's http backend
    reads), to `output` or stdout. A workspace without state writes nothing."""
    response = api.request("GET", f"/api/v1/workspaces/{name}/state")
    if response.status_code == 204:
        print(f"workspace {name} has no state yet", file=sys.stderr)
        return EXIT_OK
    return _save(output, lambda out: out.write(response.content))


def _push(api: Api, args: argparse.Namespace, raw: bytes) -> int:
    """Post a state file as terraform's http backend does: the same serial, lineage and lock
    checks (`--lock-id` while holding the workspace lock through terraform)."""
    params = {"ID": args.lock_id} if args.lock_id else {}
    found = api.request(
        "POST",
        f"/api/v1/workspaces/{args.name}/state",
        content=raw,
        params=params,
        headers={"Content-Type": "application/json"},
    ).json()["data"]
    if getattr(args, "json", False):
        print(as_json(found))
    else:
        print(
            f"pushed: {found['id']} (serial {found['serial']}, {found['kind']}) is the current "
            f"state of {args.name}"
        )
    return EXIT_OK


def _read(file: str) -> bytes:
    try:
        return Path(file).read_bytes()
    except OSError as exc:
        raise CliError(EXIT_USAGE, f"cannot read {file}: {exc.strerror or exc}") from None


def _save(output: str | None, fill: Callable[[BinaryIO], int]) -> int:
    """What `fill` writes, to `output` (written whole or not at all, mode 0600: a state holds
    secrets) or to stdout."""
    if output in (None, "-"):
        sys.stdout.flush()
        fill(sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return EXIT_OK
    target = Path(str(output))
    partial = target.with_name(target.name + ".partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            size = fill(fh)
        partial.replace(target)
    except OSError as exc:
        raise CliError(EXIT_USAGE, f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    print(f"wrote {target} ({size} bytes)", file=sys.stderr)
    return EXIT_OK
