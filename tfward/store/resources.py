"""The resources of a terraform state, as the inventory lists them (pure).

The inventory keeps each instance's `id` attribute, and is served by the API, so an id that is
sensitive (marked in the state's `sensitive_attributes`, or holding one of the workspace's
secret values, e.g. an id made from a name made from a secret) is stored masked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from tfward.errors import StateRejected
from tfward.runs.masking import MASK, SecretMask
from tfward.store.inventory import Resource

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


def resources_of(raw: bytes, secrets: Iterable[str] = ()) -> list[Resource]:
    """Every current (not deposed) instance in the state, sorted by address. `secrets`: the
    workspace's sensitive values (`WorkspaceConfig.sensitive_values()`), masked in ids."""
    mask = SecretMask(secrets)
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
            resource_id = _masked_id(attributes.get("id"), instance, mask)
            found.append(
                Resource(
                    address=address(module, mode, type_, name, index),
                    mode=mode,
                    type=type_,
                    name=name,
                    module=module,
                    provider=provider_source(block.get("provider", "")),
                    index_key=index,
                    resource_id=resource_id,
                )
            )
    return sorted(found, key=lambda r: r.address)


_ID_PATH = [{"type": "get_attr", "value": "id"}]


def _masked_id(value: Any, instance: dict[str, Any], mask: SecretMask) -> str | None:
    if value is None:
        return None
    # A path in sensitive_attributes is a list of steps; `id` marked as a whole is this one.
    if _ID_PATH in (instance.get("sensitive_attributes") or []):
        return MASK
    return mask.text(str(value))
