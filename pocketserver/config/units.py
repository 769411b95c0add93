"""Parsing of sizes ("128M") and durations ("1h") as Synapse's config accepts them."""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|y)?\s*$")
_DURATION_MS = {
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 7 * 86_400_000,
    "y": 365 * 86_400_000,
}


def parse_size(value: object) -> int:
    """Return a size in bytes from an int or a string such as ``"128M"`` or ``"1G"``.

    Raises:
        ValueError: the value is not a non-negative size.
    """
    if isinstance(value, bool):
        raise ValueError("expected a size such as 128M")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])
    raise ValueError("expected a size such as 512K, 128M or 1G")


def parse_duration_ms(value: object) -> int:
    """Return a duration in milliseconds from an int (milliseconds) or ``"1h"``-style string.

    Units: ms, s, m, h, d, w, y (Synapse's spelling). A bare number means milliseconds.

    Raises:
        ValueError: the value is not a non-negative duration.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s or 1h")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return value
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return int(float(m.group(1)) * _DURATION_MS[m.group(2) or "ms"])
    raise ValueError("expected a duration such as 500ms, 30s, 1h or 7d")


def format_size(n: int) -> str:
    """Render a byte count the way the config file writes it (e.g. ``"128M"``)."""
    for unit in ("T", "G", "M", "K"):
        factor = _SIZE_UNITS[unit]
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)
