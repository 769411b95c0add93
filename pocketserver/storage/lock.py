"""One server per database: an exclusive ``flock`` on ``<database>.lock`` for the
process's lifetime.

``flock`` is on Linux, the BSDs (OpenBSD included) and macOS. The kernel drops the
lock when the process dies, however it dies (``kill -9`` too), so a stale lock file
never blocks a restart; the file itself stays (removing it would let two starters
lock two different files). It holds the holder's pid, for the message to whoever
comes second and for tools that want to know whether a server runs.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

# A tool probing the lock (``holder_pid``) holds it for an instant: a server starting
# at that moment tries again for this long before it gives up.
ACQUIRE_PATIENCE_S = 1.0


class AlreadyRunningError(Exception):
    """Another process holds the database's lock."""


def lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class DatabaseLock:
    """The exclusive lock of one database file (see the module docstring)."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.path = lock_path(db_path)
        self._fd: int | None = None

    def acquire(self, patience_s: float = ACQUIRE_PATIENCE_S) -> None:
        """Take the lock and write our pid into the file.

        Raises:
            AlreadyRunningError: another process holds it (the message names its pid).
            OSError: the lock file cannot be created.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + patience_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                pid = _read_pid(fd)
                os.close(fd)
                who = f"pid {pid}" if pid else "a process"
                raise AlreadyRunningError(
                    f"another pocketserver ({who}) is already running on {self.db_path}; "
                    "stop it first (two servers on one database would corrupt it)"
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor drops the flock


def holder_pid(db_path: Path) -> int | None:
    """The pid of the server holding ``db_path``'s lock, or None when none runs.

    Takes the lock for an instant when it is free (a server starting then waits).
    Returns 0 if the lock is held but the file names no pid.
    """
    try:
        fd = os.open(lock_path(db_path), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or 0
        return None
    finally:
        os.close(fd)  # drops our shared lock, if we took it
