"""`token create --name N --role R`: a new API token and the config entry that admits it.

Made locally, no daemon involved. The token is 32 random bytes, URL-safe base64, with the prefix
`tfw_` (so a leaked one is recognisable); the config holds only `sha256` = the hex SHA-256 of the
token's UTF-8 bytes. The token is shown once.
"""

from __future__ import annotations

import argparse
import json
import secrets

from tfward.config.model import API_ROLES as ROLES
from tfward.config.tokens import TOKEN_NAME, token_sha256

from .client import EXIT_OK, EXIT_USAGE, CliError

__all__ = ["ROLES", "config_entry", "create", "new_token", "token_sha256"]

PREFIX = "tfw_"


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def config_entry(name: str, role: str, digest: str) -> str:
    """The `[[api_token]]` table for the daemon's config (valid TOML on its own)."""
    lines = ["[[api_token]]", f"name = {json.dumps(name)}", f"role = {json.dumps(role)}"]
    return "\n".join([*lines, f'sha256 = "{digest}"', ""])


def create(args: argparse.Namespace) -> int:
    if not TOKEN_NAME.fullmatch(args.name):
        raise CliError(
            EXIT_USAGE,
            f"--name {args.name!r}: use letters, digits and . _ @ - (up to 64), e.g. --name ci",
        )
    token = new_token()
    digest = token_sha256(token)
    entry = config_entry(args.name, args.role, digest)
    if getattr(args, "json", False):
        print(
            json.dumps(
                {
                    "name": args.name,
                    "role": args.role,
                    "token": token,
                    "sha256": digest,
                    "config": entry,
                },
                indent=2,
            )
        )
        return EXIT_OK
    print(f"token: {token}")
    print("  shown only once: store it as a secret (the CLI reads $TFWARD_TOKEN or --token)")
    print()
    print("Once the config names any API token, the daemon stops accepting <data_dir>/admin.token:")
    print("configure an admin token for yourself too (--role admin).")
    print()
    print("Add this to the daemon's config file, then reload the daemon (SIGHUP):")
    print()
    print(entry, end="")
    return EXIT_OK
