"""Logging: to standard error (the journal under systemd), to a file rotated by size,
or as a ``dictConfig`` file (Synapse's ``log_config``) says; and the level of each
request's access line."""

from __future__ import annotations

import logging
import logging.config
import logging.handlers
import sys
import time
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from pocketserver.config.log_settings import LogSettings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


class SecondCachedFormatter(logging.Formatter):
    """A :class:`logging.Formatter` that formats the time once per second.

    Every request logs one line; ``time.strftime`` for each was a noticeable part of
    the cost of a line. Same text as the plain formatter with the same date format
    (no milliseconds: the format has none).
    """

    def __init__(self, fmt: str = LOG_FORMAT, datefmt: str = DATE_FORMAT) -> None:
        super().__init__(fmt, datefmt)
        self._cached = (-1, "")  # (second, its text): replaced whole, so threads agree

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        cached_second, text = self._cached
        if second != cached_second:
            text = time.strftime(datefmt or DATE_FORMAT, self.converter(second))
            self._cached = (second, text)
        return text


class LogSetupError(Exception):
    """The logging config could not be applied (the message says why)."""


def setup_logging(level: str = "INFO", settings: LogSettings | None = None) -> None:
    """Send every logger's records where the config says.

    Without ``log_config``: one handler, on standard error or on ``log_file`` (rotated
    when it reaches ``log_file_max_size``, ``log_file_backup_count`` old files kept).
    Each line is written (one ``write`` system call) as soon as it is logged, so
    nothing is lost at shutdown or on a crash.

    Raises:
        LogSetupError: ``log_config`` or ``log_file`` cannot be used.
    """
    root = logging.getLogger()
    if settings is not None and settings.config_file is not None:
        _apply_dict_config(settings)
    else:
        handler = _handler(settings)
        handler.setFormatter(SecondCachedFormatter())
        for old in list(root.handlers):
            root.removeHandler(old)
            old.close()
        root.addHandler(handler)
        root.setLevel(level)
        # hypercorn's own per-connection chatter is noise at INFO.
        logging.getLogger("hypercorn.error").setLevel(max(logging.WARNING, root.level))
    # The format above uses none of these: don't collect them for every record (the
    # logging HOWTO's "Optimization" section). The caller's file and line meant a walk
    # up the stack for each request's line.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None


def _handler(settings: LogSettings | None) -> logging.Handler:
    if settings is None or settings.file is None:
        return logging.StreamHandler(sys.stderr)
    try:
        settings.file.parent.mkdir(parents=True, exist_ok=True)
        return logging.handlers.RotatingFileHandler(
            settings.file,
            maxBytes=settings.file_max_size,
            backupCount=settings.file_backup_count,
            encoding="utf-8",
        )
    except OSError as e:
        raise LogSetupError(f"log_file {settings.file}: {e.strerror or e}") from None


def _apply_dict_config(settings: LogSettings) -> None:
    """Synapse's ``log_config``: a ``logging.config.dictConfig`` document in YAML.

    A config written for Synapse may name Synapse's own classes (its
    ``LoggingContextFilter``, say): those cannot load here, and the error says so.
    """
    path = settings.config_file
    assert path is not None
    text = ""
    try:
        text = path.read_text(encoding="utf-8")
        logging.config.dictConfig(yaml.safe_load(text))
    except (OSError, yaml.YAMLError, ValueError, TypeError, AttributeError, ImportError) as e:
        # dictConfig says "Unable to configure filter 'x'"; the reason is its cause.
        why = f"{e}: {e.__cause__}" if e.__cause__ is not None else str(e)
        if "synapse." in text:
            why += " (it names Synapse's own logging classes: remove those filters/handlers)"
        raise LogSetupError(f"log_config {path}: cannot apply it: {why}") from None


def access_line_level(settings: LogSettings, status: int, duration_ms: float, wait_ms: int) -> int:
    """The level of a request's access line: INFO when it failed (status >= 400) or
    took longer than ``access_log_slow_threshold`` beyond ``wait_ms`` (the long-poll
    timeout it asked for), else ``access_log_level`` (DEBUG by default)."""
    if status >= 400 or duration_ms > wait_ms + settings.access_slow_ms:
        return max(logging.INFO, _LEVELS[settings.access_level])
    return _LEVELS[settings.access_level]


_LEVELS = logging.getLevelNamesMapping()
