"""`tfward check-config FILE --verify-notifications`: send each destination the test message."""

from __future__ import annotations

import trio

from tfward.config import load_config
from tfward.outbox.notifications import verify

EXIT_OK, EXIT_FAILED = 0, 1


def verify_command(path: str) -> int:
    """Send the `verification` message once to every `[[notification]]` destination and say
    which answered 2xx; exit 1 unless all did."""
    config = load_config(path)
    if not config.notifications:
        print("  no notification destinations to verify")
        return EXIT_OK
    found = trio.run(verify, config)
    for name, result in found.items():
        if result.delivered:
            print(f"  notification {name}: {result.status_code} ok ({result.latency_ms} ms)")
        else:
            print(f"  notification {name}: FAILED: {result.error}")
    return EXIT_OK if all(r.delivered for r in found.values()) else EXIT_FAILED
