"""The `[web]` table: how long the web page's sessions last (daemon/web/sessions.py).

[web]
session_idle = "12h"   # a session not used for this long ends
session_max = "7d"     # every session ends this long after sign-in, used or not
"""

from __future__ import annotations

from tfward.config.model import WebConfig
from tfward.config.reading import Table, default

TOP_KEY = "web"
KEYS = frozenset({"session_idle", "session_max"})


def parse_web(root: Table) -> WebConfig:
    """The `[web]` table, its defaults for what it leaves out; each problem is noted on the
    context (config/reading.py) and its default used meanwhile."""
    t = root.table(TOP_KEY, KEYS)
    attempt, defaults = t.ctx.attempt, WebConfig()
    idle = attempt(lambda: t.duration("session_idle"), None)
    longest = attempt(lambda: t.duration("session_max"), None)
    return WebConfig(
        session_idle=default(idle, defaults.session_idle),
        session_max=default(longest, defaults.session_max),
    )
