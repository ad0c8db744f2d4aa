"""Notification messages on the wire (docs/protocols.md §6), and one delivery attempt.

Generic destinations get the HCP Terraform notification payload (for a release's end: that
shape with the run and workspace fields null, plus a `release` object), signed with
`X-TFE-Notification-Signature` (hex HMAC-SHA512 of the exact body bytes, keyed with the
destination's token) when the destination has a token. Slack destinations get an
incoming-webhook `{"text": ...}`. Any 2xx answer is a delivery. Every request also carries
`X-Tfward-Delivery` (the outbox row id), the same on every retry, so a receiver can drop a
duplicate after a crash between its answer and our record of it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import trio

from tfward import __version__
from tfward.config import Config, NotificationConfig
from tfward.ids import now, rfc3339

USER_AGENT = f"tfward/{__version__}"
SIGNATURE_HEADER = "X-TFE-Notification-Signature"
DELIVERY_HEADER = "X-Tfward-Delivery"
REQUEST_TIMEOUT = 30.0

TITLES = {
    "run:created": "Run Created",
    "run:planning": "Run Planning",
    "run:needs_attention": "Run Needs Attention",
    "run:applying": "Run Applying",
    "run:completed": "Run Completed",
    "run:errored": "Run Errored",
    "run:cancelled": "Run Cancelled",
    "assessment:drifted": "Drift Detected",
    "release:completed": "Release Completed",
    "release:failed": "Release Failed",
}


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What a notification says about its run (None fields for a verification)."""

    id: str
    message: str
    created_at: datetime
    created_by: str | None
    updated_by: str | None


@dataclass(frozen=True, slots=True)
class AttemptResult:
    delivered: bool
    status_code: int | None
    latency_ms: int
    error: str | None


def configuration_id(destination: str) -> str:
    """A stable HCP-style id for a destination: `nc-` and 16 base32 characters of its name."""
    digest = hashlib.sha256(destination.encode()).digest()
    return "nc-" + base64.b32encode(digest).decode().lower()[:16]


def generic_payload(
    config: Config,
    destination: str,
    trigger: str,
    *,
    run: RunFacts | None,
    run_status: str | None,
    workspace_id: str | None,
    workspace_name: str | None,
    updated_at: datetime,
    message: str | None = None,
) -> dict[str, Any]:
    """The generic webhook body, field for field as docs/protocols.md §6 has it."""
    public = config.daemon.public_url.rstrip("/")
    title = message or TITLES.get(trigger) or trigger
    return {
        "payload_version": 1,
        "notification_configuration_id": configuration_id(destination),
        "run_url": f"{public}/api/v1/runs/{run.id}" if run else None,
        "run_id": run.id if run else None,
        "run_message": run.message if run else None,
        "run_created_at": rfc3339(run.created_at) if run else None,
        "run_created_by": run.created_by if run else None,
        "workspace_id": workspace_id,
        "workspace_name": workspace_name,
        "organization_name": config.daemon.organization,
        "notifications": [
            {
                "message": title,
                "trigger": trigger,
                "run_status": run_status,
                "run_updated_at": rfc3339(updated_at),
                "run_updated_by": run.updated_by if run else None,
            }
        ],
    }


def release_payload(
    config: Config,
    destination: str,
    trigger: str,
    release: dict[str, Any],
    *,
    updated_at: datetime,
) -> dict[str, Any]:
    """`release:completed` / `release:failed`: the generic body without a run or workspace,
    and what the release was, from its `notify` row (store/releases.py)."""
    body = generic_payload(
        config,
        destination,
        trigger,
        run=None,
        run_status=None,
        workspace_id=None,
        workspace_name=None,
        updated_at=updated_at,
    )
    body["notifications"][0]["run_updated_by"] = release.get("created_by")
    public = config.daemon.public_url.rstrip("/")
    body["release"] = {
        "id": release.get("release_id"),
        "name": release.get("release_name"),
        "status": release.get("release_status"),
        "url": f"{public}/api/v1/releases/{release.get('release_id')}",
        "error": release.get("release_error"),
        "rollout": release.get("rollout"),
        "counts": release.get("counts"),
        "workspaces": release.get("workspaces"),
        "created_by": release.get("created_by"),
    }
    return body


def verification_payload(config: Config, destination: str) -> dict[str, Any]:
    return generic_payload(
        config,
        destination,
        "verification",
        run=None,
        run_status=None,
        workspace_id=None,
        workspace_name=None,
        updated_at=now(),
        message=f"Verification of {destination}",
    )


def slack_text(payload: dict[str, Any], detail: str | None) -> str:
    event = payload["notifications"][0]
    text = f"*{event['message']}*"
    if payload.get("workspace_name"):
        text += f" in workspace `{payload['workspace_name']}`"
    if release := payload.get("release"):
        text += f": release `{release['name']}` <{release['url']}|{release['id']}>"
        text += f" ({release['status']})"
    if payload.get("run_id"):
        text += f": <{payload['run_url']}|{payload['run_id']}>"
        if event.get("run_status"):
            text += f" ({event['run_status']})"
    if detail and detail != event["message"]:
        text += f"\n{detail}"
    return text


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def sign(body: bytes, token: str) -> str:
    return hmac.new(token.encode(), body, hashlib.sha512).hexdigest()


def request_for(
    destination: NotificationConfig,
    payload: dict[str, Any],
    detail: str | None = None,
    delivery_id: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The exact body bytes and headers to POST to `destination`."""
    if destination.type == "slack":
        body = encode({"text": slack_text(payload, detail)})
    else:
        body = encode(payload)
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if destination.type == "generic" and destination.token:
        headers[SIGNATURE_HEADER] = sign(body, destination.token)
    if delivery_id:
        headers[DELIVERY_HEADER] = delivery_id
    return body, headers


async def post(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    within: float = REQUEST_TIMEOUT,
) -> AttemptResult:
    """One POST. Never raises for network or HTTP errors: they are the result. On
    cancellation the request is abandoned and Cancelled propagates."""
    started = time.monotonic()
    status: int | None = None
    error: str | None = None
    try:
        with trio.fail_after(within):
            response = await client.post(url, content=body, headers=headers, timeout=within)
        status = response.status_code
        if not 200 <= status < 300:
            error = f"the receiver answered {status}"
    except (httpx.TimeoutException, trio.TooSlowError):
        error = f"no answer within {within:g}s"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    latency = int((time.monotonic() - started) * 1000)
    return AttemptResult(error is None, status, latency, error)


async def verify(config: Config, *, within: float = 10.0) -> dict[str, AttemptResult]:
    """Send the `verification` message once to every destination (concurrently)."""
    results: dict[str, AttemptResult] = {}

    async def one(client: httpx.AsyncClient, destination: NotificationConfig) -> None:
        payload = verification_payload(config, destination.name)
        body, headers = request_for(destination, payload)
        results[destination.name] = await post(
            client, destination.url, body, headers, within=within
        )

    async with httpx.AsyncClient() as client, trio.open_nursery() as nursery:
        for destination in config.notifications:
            nursery.start_soon(one, client, destination)
    return {d.name: results[d.name] for d in config.notifications}
