"""Schemathesis hooks for `make fuzz`; scripts/fuzz.py loads them through SCHEMATHESIS_HOOKS.

Two query parameters make a request wait by design: `wait_timeout` long-polls for up to 300 s,
and `follow=true` streams a log until its run ends, which for a run the fuzzer left waiting
(behind a lock it took, or for a confirmation it never sends) is never. Such a request would
end as a client timeout, not as a finding. So a valid wait longer than MAX_WAIT, or the
handler's 30 s default (when a wait is asked for without a timeout), becomes MAX_WAIT, and
`follow=true` becomes `false`. A value that is not valid is sent as it is: the daemon must
refuse it (422), and turning it into a valid one would defeat the negative checks.
"""

from __future__ import annotations

from typing import Any

import schemathesis

MAX_WAIT = 2.0


@schemathesis.hook
def before_call(context: Any, case: Any, **kwargs: Any) -> None:
    query = case.query
    if not isinstance(query, dict):
        return
    if "wait_status" in query or "wait_after" in query or "wait_timeout" in query:
        if "wait_timeout" not in query:
            query["wait_timeout"] = MAX_WAIT
        elif _seconds(query["wait_timeout"]) > MAX_WAIT:
            query["wait_timeout"] = MAX_WAIT
    if query.get("follow") in (True, "true"):
        query["follow"] = "false"


def _seconds(value: Any) -> float:
    """A valid wait (a number from 0 to 300) in seconds; anything else as -1 (left alone)."""
    if isinstance(value, bool):
        return -1.0
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return -1.0
    return seconds if 0 <= seconds <= 300 else -1.0
