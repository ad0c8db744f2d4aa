"""Schemathesis hooks for `make fuzz`; scripts/fuzz.py loads them through SCHEMATHESIS_HOOKS.

Two query parameters make a request wait by design: `wait_timeout` long-polls for up to 300 s,
and `follow=true` streams a log until its run ends, which for a run the fuzzer left waiting
(behind a lock it took, or for a confirmation it never sends) is never. Such a request would
end as a client timeout, not as a finding. So a wait longer than MAX_WAIT, or one the handler
would replace by its 30 s default (none given, not a number), becomes MAX_WAIT, and logs are
not followed; negative and NaN waits are sent as they are.
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
    if "wait_timeout" in query or "wait_status" in query or "wait_after" in query:
        try:
            seconds = float(query.get("wait_timeout"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            seconds = None  # absent or not a number: the handler waits its default 30 s
        if seconds is None or seconds > MAX_WAIT:  # NaN compares False: sent as it is
            query["wait_timeout"] = MAX_WAIT
    if "follow" in query:
        query["follow"] = "false"
