"""Shared fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

# tests/harness.py is imported as `tests.harness`; make the repo root importable.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
