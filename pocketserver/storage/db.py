"""The SQLite database: one write connection, a small pool of read connections.

No SQLite call ever runs on the event loop's thread. Writes are serialised by a
trio lock and run in a worker thread inside ``BEGIN IMMEDIATE`` ... ``COMMIT``;
the caller's function owns the whole transaction and never commits itself.
Reads take a connection from a fixed pool and run in a worker thread too.
Worker threads come from trio's thread cache (:func:`run_in_worker`), without
``trio.to_thread``'s renaming of the thread around every call.

Durability: WAL mode. With ``synchronous=FULL`` (the default) every commit is
fsynced before ``write`` returns, so anything acknowledged to a client survives a
crash of the process and a power cut. With ``synchronous=NORMAL`` a commit is in
the WAL file (the OS page cache) when ``write`` returns: it survives ``kill -9``
of pocketserver, but a power cut can lose the last transactions.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import outcome
import trio

from pocketserver.storage.guard import check_not_foreign
from pocketserver.storage.lock import DatabaseLock
from pocketserver.storage.migrations import apply_migrations

log = logging.getLogger(__name__)

T = TypeVar("T")

READ_CONNECTIONS = 3


@dataclass(frozen=True, slots=True)
class DatabaseStatistics:
    writes: int
    reads: int
    write_wait_ms_total: float
    read_connections: int
    readers_busy: int


def cache_sizes_kib(memory_bytes: int) -> tuple[int, int]:
    """SQLite page cache of the write connection and of each read connection, in KiB,
    from SQLite's share of the memory budget.

    Deliberately much less than the share: every connection has its own cache, and
    the OS page cache (which the kernel can reclaim, unlike our heap) holds the file
    once for all of them, so a page missing from SQLite's cache costs a copy, not a
    disk read. The writer gets a thirty-second of the share (the pages it changes, at
    the end of tables and indexes, are the ones worth keeping), each reader a quarter
    of that: in WAL mode a reader's whole cache is dropped whenever another connection
    has written since its last read, so a big reader cache mostly holds dead pages
    (measured under the client benchmark: peak RSS about 2 MB lower than with 2 MB
    and 1 MB, no change in CPU per initial sync beyond noise). No memory map: a mapping counts
    in the resident size once per connection, and a map the size of the share covers
    only the start of a large database file anyway.
    """
    return max(memory_bytes // 32 // 1024, 256), max(memory_bytes // 128 // 1024, 256)


def _connect(
    path: Path, *, cache_kib: int, mmap_bytes: int, synchronous: str
) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path,
        isolation_level=None,  # we issue BEGIN/COMMIT ourselves
        check_same_thread=False,  # handed between worker threads, one at a time
        timeout=30.0,
    )
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute(f"PRAGMA cache_size = -{max(cache_kib, 64)}")
    conn.execute(f"PRAGMA mmap_size = {max(mmap_bytes, 0)}")
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    conn.execute("PRAGMA temp_store = MEMORY")
    return conn


def _abort_failed(_: object) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


@trio.lowlevel.enable_ki_protection
async def run_in_worker(limiter: trio.CapacityLimiter, fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in one of trio's cached worker threads, holding ``limiter``.

    As ``trio.to_thread.run_sync(fn, *args, limiter=limiter)`` without
    ``abandon_on_cancel``: once started, the call runs to the end and its result (or
    exception) is delivered even if the calling task is cancelled meanwhile (the
    cancellation is raised at the caller's next checkpoint). Unlike ``to_thread``, the
    thread is not renamed before and after each call: that was two ``prctl`` system
    calls and two ctypes calls per database operation (measured: about 2.5% of the
    server's CPU per request). No context variables are copied into the thread: the
    storage functions take everything as arguments. Protected from ``KeyboardInterrupt``
    like ``to_thread``, so a started call is always waited for.
    """
    token = trio.lowlevel.current_trio_token()
    task = trio.lowlevel.current_task()
    borrower = object()
    await limiter.acquire_on_behalf_of(borrower)
    try:

        def deliver(result: outcome.Outcome[T]) -> None:
            # The trio run ended first (it crashed): nobody is left to tell.
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(trio.lowlevel.reschedule, task, result)

        trio.lowlevel.start_thread_soon(lambda: fn(*args), deliver)
        # Returns the value delivered, or raises the exception.
        result: T = await trio.lowlevel.wait_task_rescheduled(_abort_failed)
    finally:
        limiter.release_on_behalf_of(borrower)
    return result


class Database:
    """The one SQLite file: serialised writes, pooled reads, all off the event loop."""

    def __init__(
        self, path: Path, *, memory_bytes: int, synchronous: str = "full", lock: bool = False
    ) -> None:
        """Open (creating if needed) and migrate the database. Call from a thread or at start.

        Args:
            path: The database file.
            memory_bytes: What SQLite may use for page cache and mmap, in total.
            synchronous: ``"full"`` or ``"normal"`` (see the module docstring).
            lock: Hold ``<path>.lock`` until :meth:`close` (the server does: one
                server per database).

        Raises:
            storage.guard.ForeignDatabaseError: another program's file (left unchanged).
            storage.lock.AlreadyRunningError: ``lock`` and another server holds it.
            storage.migrations.SchemaTooNewError: the file was written by newer code.
        """
        self.path = path
        writer_kib, reader_kib = cache_sizes_kib(memory_bytes)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = DatabaseLock(path) if lock else None
        if self._lock is not None:
            self._lock.acquire()
        try:
            check_not_foreign(path)
            self._writer = _connect(
                path, cache_kib=writer_kib, mmap_bytes=0, synchronous=synchronous
            )
        except BaseException:
            self._release_lock()
            raise
        try:
            mode = self._writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise RuntimeError(f"could not put {path} into WAL mode (got {mode})")
            apply_migrations(self._writer)
            # What this connection last saw of other processes' commits (see
            # ``changed_elsewhere``); our own commits never change it.
            self._data_version = self._read_data_version()
        except BaseException:
            self._writer.close()
            self._release_lock()
            raise
        self._readers = [
            _connect(path, cache_kib=reader_kib, mmap_bytes=0, synchronous=synchronous)
            for _ in range(READ_CONNECTIONS)
        ]
        self._free_readers = list(self._readers)
        self._reader_lock = threading.Lock()
        self._write_lock = trio.Lock()
        self._read_slots = trio.Semaphore(READ_CONNECTIONS)
        self._write_limiter = trio.CapacityLimiter(1)
        self._read_limiter = trio.CapacityLimiter(READ_CONNECTIONS)
        self._writes = 0
        self._reads = 0
        self._write_wait = 0.0
        self._closed = False

    async def write(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(conn, *args)`` in one write transaction and return its result.

        The transaction commits when ``fn`` returns and rolls back if it raises (the
        exception is re-raised). Once started, a write finishes even if the calling
        task is cancelled, so a commit is never half-observed.
        """
        start = trio.current_time()
        async with self._write_lock:
            self._write_wait += trio.current_time() - start
            self._writes += 1
            return await run_in_worker(self._write_limiter, self._run_write, fn, args)

    def _run_write(self, fn: Callable[..., T], args: tuple[object, ...]) -> T:
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn, *args)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def read(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(conn, *args)`` on a read connection in a worker thread.

        Each call sees one consistent snapshot (it runs inside a read transaction).
        """
        async with self._read_slots:
            self._reads += 1
            return await run_in_worker(self._read_limiter, self._run_read, fn, args)

    def _run_read(self, fn: Callable[..., T], args: tuple[object, ...]) -> T:
        with self._reader_lock:
            conn = self._free_readers.pop()
        try:
            conn.execute("BEGIN")
            try:
                return fn(conn, *args)
            finally:
                conn.execute("ROLLBACK")
        finally:
            with self._reader_lock:
                self._free_readers.append(conn)

    def read_sync(self, fn: Callable[..., T], *args: object) -> T:
        """Run a read on the calling thread; only for CLI tools and start-up, never in the loop."""
        return self._run_read(fn, args)

    def write_sync(self, fn: Callable[..., T], *args: object) -> T:
        """Run a write on the calling thread; only for CLI tools and start-up, never in the loop."""
        return self._run_write(fn, args)

    async def changed_elsewhere(self) -> bool:
        """Whether another process (a CLI tool such as ``reset-password``, the sqlite3
        shell) has committed to the file since the last call.

        SQLite's ``PRAGMA data_version`` on the write connection changes only for
        commits made through other connections, and all of this process's writes go
        through that one connection. It reads the WAL index in shared memory: no
        disk access.
        """
        async with self._write_lock:
            version = await run_in_worker(self._write_limiter, self._read_data_version)
        changed = version != self._data_version
        self._data_version = version
        return changed

    def _read_data_version(self) -> int:
        return int(self._writer.execute("PRAGMA data_version").fetchone()[0])

    def statistics(self) -> DatabaseStatistics:
        return DatabaseStatistics(
            writes=self._writes,
            reads=self._reads,
            write_wait_ms_total=self._write_wait * 1000,
            read_connections=READ_CONNECTIONS,
            readers_busy=READ_CONNECTIONS - len(self._free_readers),
        )

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close every connection."""
        if self._closed:
            return
        self._closed = True
        for conn in self._readers:
            conn.close()
        try:
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as e:  # pragma: no cover - best effort at shutdown
            log.warning("WAL checkpoint at shutdown failed: %s", e)
        self._writer.close()
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
