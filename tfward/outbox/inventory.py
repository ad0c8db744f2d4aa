"""The resources of a terraform state, as the inventory lists them (pure)."""

from __future__ import annotations

import json
import re
from typing import Any

from tfward.daemon.store.inventory import Resource
from tfward.errors import StateRejected

_PROVIDER = re.compile(r'provider\["([^"]+)"\](?:\.(\S+))?')


def provider_source(text: str) -> str:
    """`provider["registry.terraform.io/hashicorp/aws"].west` -> `registry.../aws.west`."""
    match = _PROVIDER.fullmatch(text or "")
    if match is None:
        return text or ""
    source, alias = match.groups()
    return f"{source}.{alias}" if alias else source


def address(module: str | None, mode: str, type_: str, name: str, index: Any) -> str:
    text = ("data." if mode == "data" else "") + f"{type_}.{name}"
    if module:
        text = f"{module}.{text}"
    if isinstance(index, bool) or index is None:
        return text
    if isinstance(index, int):
        return f"{text}[{index}]"
    return f"{text}[{json.dumps(str(index))}]"


def resources_of(raw: bytes) -> list[Resource]:
    """Every current (not deposed) instance in the state, sorted by address."""
    try:
        doc = json.loads(raw)
        blocks = doc.get("resources") or []
    except (ValueError, AttributeError) as exc:
        raise StateRejected(f"not a terraform state file: {exc}") from exc
    found: list[Resource] = []
    for block in blocks:
        mode, type_, name = block.get("mode", "managed"), block["type"], block["name"]
        module = block.get("module")
        for instance in block.get("instances") or []:
            if instance.get("deposed"):
                continue
            index = instance.get("index_key")
            attributes = instance.get("attributes") or {}
            resource_id = attributes.get("id")
            found.append(
                Resource(
                    address=address(module, mode, type_, name, index),
                    mode=mode,
                    type=type_,
                    name=name,
                    module=module,
                    provider=provider_source(block.get("provider", "")),
                    index_key=index,
                    resource_id=None if resource_id is None else str(resource_id),
                )
            )
    return sorted(found, key=lambda r: r.address)
