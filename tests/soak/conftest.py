"""The soak script lives in bench/ and imports its neighbour `_common`: put bench/ on the path."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
