"""A run's credential to read other workspaces' state (docs/architecture.md §9).

Every run gets a random token that may `GET /api/v1/workspaces/<name>/state` for exactly the
workspaces its workspace lists in `remote_state_from` (none for most workspaces: a read of any
other state is then a clear 403, not a missing credential). It reaches terraform through the
environment that terraform's `http` backend reads for `terraform_remote_state`:

    TF_HTTP_USERNAME   the run id (any username is accepted)
    TF_HTTP_PASSWORD   the token
    TF_VAR_tfward_url  where the daemon's API listens, for a `variable "tfward_url"`

so it is never in the configuration, the plan, the state or a variable. The database keeps its
SHA-256 and scope only (store/credentials.py); the run log and the plan JSON mask it like a
secret of the workspace. The termination funnel revokes it in the run's final transaction; a
daemon start revokes every credential of the previous process, and a run that goes on gets a
new one.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from sqlalchemy import Connection

from tfward.config.tokens import token_sha256
from tfward.ids import now
from tfward.store import credentials

from .context import RunContext

TOKEN_PREFIX = "tfwr_"  # `tfw_` are API tokens
ENV_USERNAME = "TF_HTTP_USERNAME"
ENV_PASSWORD = "TF_HTTP_PASSWORD"
ENV_URL = "TF_VAR_tfward_url"


def new_token() -> str:
    """A fresh credential token: 32 random bytes, URL-safe base64, after `tfwr_`."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass
class RemoteStateAccess:
    """The credential of one run (one pipeline): issued before terraform first runs."""

    ctx: RunContext
    token: str = field(repr=False)
    issued: bool = False

    async def issue(self) -> None:
        """Record the credential (its digest and scope) once — unless the run's first
        transaction did (`issue_in`) — then wait until the API listens, since terraform
        reaches it there. Cancellation: the write commits or rolls back before this returns
        (Store.write); a database error propagates and fails the stage."""
        if not self.issued:
            await self.ctx.rt.store.write(self.issue_in)
            self.issued = True
        await self.ctx.rt.api_listening.wait()

    def issue_in(self, conn: Connection) -> None:
        """Record the credential in the caller's transaction; the caller sets `issued` once it
        committed."""
        ctx = self.ctx
        credentials.issue(
            conn,
            token_sha256(self.token),
            run_id=ctx.run_id,
            ws_id=ctx.ws_id,
            scope=ctx.ws.remote_state_from,
            when=now(),
        )

    def env(self) -> dict[str, str]:
        """What terraform's environment gets: it overrides the workspace's `env`."""
        found = {ENV_USERNAME: self.ctx.run_id, ENV_PASSWORD: self.token}
        if self.ctx.rt.api_url:
            found[ENV_URL] = self.ctx.rt.api_url
        return found
