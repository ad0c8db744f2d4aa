"""JSON from the wire: request bodies from API clients and run-task services, parsed strictly.

`json.loads` alone accepts what tfward cannot use: nesting deep enough to raise
`RecursionError` (in the parser, or later in whatever walks or re-encodes the value), and lone
UTF-16 surrogates (`"\\ud800"`) that become strings no UTF-8 encoder (SQLite, httpx, a log
line) will take. `loads` refuses both, and bytes that are not UTF-8, with a `ValueError` whose
message says what was wrong in one line, so every caller answers 400/422 instead of a 500.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64  # arrays and objects inside each other; real documents stay far below
# A \uD800-\uDFFF escape: the only way a surrogate gets into text decoded as UTF-8.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class JsonRefused(ValueError):
    """The bytes are not a JSON document tfward accepts; the message says why."""


def loads(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value in `raw`; JsonRefused for text that is not UTF-8, not JSON, nested
    deeper than `max_depth`, or holding a lone surrogate (in a string or a key)."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonRefused(f"not UTF-8 text (byte {exc.start})") from None
    else:
        text = raw
    try:
        value = json.loads(text)
    except RecursionError:
        raise JsonRefused(f"nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise JsonRefused(str(exc)) from None
    if depth(value, max_depth) > max_depth:
        raise JsonRefused(f"nested deeper than {max_depth} levels")
    if _SURROGATE_ESCAPE.search(text):  # a pair is fine; a lone half does not encode
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise JsonRefused("a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)") from None
    return value


def depth(value: Any, limit: int) -> int:
    """How deep arrays and objects nest in `value` (a scalar is 0), counted without recursion
    and only up to `limit` + 1."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        pending.extend((child, level) for child in children)
    return deepest
