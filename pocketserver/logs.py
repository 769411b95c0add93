"""Logging to standard error (the journal under systemd, a file under rc.d)."""

from __future__ import annotations

import logging
import sys
import time

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


def setup_logging(level: str = "INFO") -> None:
    """One handler on standard error for everything; a line is written (one ``write``
    system call) as soon as it is logged, so nothing is lost at shutdown or on a crash.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SecondCachedFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
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
