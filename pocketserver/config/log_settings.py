"""Where logs go and how much the per-request access line says (read by ``loader``).

An SD card wears with every byte written: by default a request that succeeded
quickly is logged at DEBUG, and only failed or slow requests at INFO (issue #15).
``log_config`` is Synapse's key: a standard ``logging.config.dictConfig`` file in
YAML, which then decides everything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from pocketserver.config.media import Section
from pocketserver.config.units import parse_duration_ms, parse_size

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True, slots=True)
class LogSettings:
    """Settings of the server's logging (see ``homeserver.yaml.in``)."""

    config_file: Path | None = None
    """A ``dictConfig`` YAML file (Synapse's ``log_config``); it replaces the rest."""
    file: Path | None = None
    """Write to this file, rotated by size, instead of standard error."""
    file_max_size: int = 10 * 1024 * 1024
    file_backup_count: int = 3
    access_level: str = "DEBUG"
    """Level of the access line of a request that succeeded within the threshold."""
    access_slow_ms: int = 2000
    """A request slower than this (beyond its long-poll timeout) is logged at INFO."""


def log_level(value: object) -> str:
    if not isinstance(value, str) or value.upper() not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
    return value.upper()


def _opt_path(base: Path) -> Callable[[object], Path | None]:
    def conv(value: object) -> Path | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ValueError("expected a path or null")
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p

    return conv


def _log_config_file(base: Path) -> Callable[[object], Path | None]:
    """A readable YAML mapping with ``version: 1``, as ``dictConfig`` wants."""

    def conv(value: object) -> Path | None:
        path = _opt_path(base)(value)
        if path is None:
            return None
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ValueError(f"cannot read it: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            raise ValueError(f"not YAML: {e}") from None
        if not isinstance(data, dict) or data.get("version") != 1:
            raise ValueError(
                "expected a logging dictConfig in YAML (a mapping with version: 1, "
                "as Synapse's log config)"
            )
        return path

    return conv


def _backups(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise ValueError("expected a number of old files to keep, 0 to 100")
    return value


def _max_size(value: object) -> int:
    size = parse_size(value)
    if size < 64 * 1024:
        raise ValueError("expected a size of at least 64K")
    return size


def parse_log_settings(root: Section, base: Path) -> LogSettings:
    """Read the logging keys of the top-level section ``root``."""
    return LogSettings(
        config_file=root.get("log_config", _log_config_file(base), None),
        file=root.get("log_file", _opt_path(base), None),
        file_max_size=root.get("log_file_max_size", _max_size, "10M"),
        file_backup_count=root.get("log_file_backup_count", _backups, 3),
        access_level=root.get("access_log_level", log_level, "DEBUG"),
        access_slow_ms=root.get("access_log_slow_threshold", parse_duration_ms, "2s"),
    )
