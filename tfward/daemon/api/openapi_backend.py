"""The OpenAPI operations of terraform's http backend (routes_backend.py, docs/protocols.md
§8), written as openapi_paths.py writes the others. LOCK and UNLOCK have no OpenAPI field:
`Paths.add` puts them in the path item's `x-methods`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .openapi_paths import TEXT, WS, data
from .openapi_schemas import JSON, ref

if TYPE_CHECKING:
    from .openapi import Paths


def backend(p: Paths) -> None:
    """Terraform's http backend (routes_backend.py, docs/protocols.md §8)."""
    state = f"{WS}/<name>/state"
    lock_info = ref("LockInfo")
    locked = {
        "description": "Locked by someone else: the holder's lock info, which terraform prints.",
        "content": {JSON: {"schema": lock_info}},
    }
    p.add(
        "GET",
        state,
        "backend_get_state",
        "The workspace's current state, exactly as stored",
        tag="backend",
        ok=ref("TerraformState"),
        errors=[404],
        responses={204: {"description": "The workspace has no state yet."}},
        notes="A run's remote-state credential may read only the workspaces its workspace "
        "lists in `remote_state_from` (else 403).",
    )
    for method in ("POST", "PUT"):
        p.add(
            method,
            state,
            f"backend_{method.lower()}_state",
            "Store a new state version (kind `http-backend`)",
            tag="backend",
            ok=data(ref("StateVersion")),
            errors=[400, 404, 409, 413],
            raw_body=ref("TerraformState"),
            notes="The body is terraform's state. 409 for an older serial, another lineage, "
            "or a workspace locked by someone else; 400 when it is not a state or its "
            "Content-MD5 does not match.",
        )
    lock_methods: dict[str, list[str]] = {state: ["LOCK"], f"{state}/lock": ["LOCK", "POST", "PUT"]}
    for rule, methods in lock_methods.items():
        for method in methods:
            p.add(
                method,
                rule,
                f"backend_lock_{method.lower()}" + ("_at" if rule != state else ""),
                "Take the workspace lock with terraform's lock info",
                tag="backend",
                ok=lock_info,
                errors=[400, 404],
                responses={423: locked},
                raw_body=lock_info,
            )
    unlock_methods = {state: ["UNLOCK"], f"{state}/lock": ["UNLOCK", "DELETE"]}
    for rule, methods in unlock_methods.items():
        for method in methods:
            p.add(
                method,
                rule,
                f"backend_unlock_{method.lower()}" + ("_at" if rule != state else ""),
                "Release the workspace lock taken with this lock ID",
                tag="backend",
                ok={"type": "string", "maxLength": 0},
                media=TEXT,
                errors=[400, 404, 409],
                raw_body=lock_info,
                notes="409 for another lock ID, or none while a lock is held (terraform 1.0's "
                "force-unlock sends none).",
            )
