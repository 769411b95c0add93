"""A database with only this feature's tables (migration 009), independent of others'."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from pocketserver.storage.migrations import available_migrations, split_statements

T = TypeVar("T")


class Db:
    """``write_sync``/``read_sync`` like :class:`Database`, on one plain connection."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        (push,) = [m for m in available_migrations() if m.name == "push"]
        for statement in split_statements(push.sql):
            self.conn.execute(statement)

    def write_sync(self, fn: Callable[..., T], *args: object) -> T:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(self.conn, *args)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return result

    read_sync = write_sync


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Db]:
    database = Db(tmp_path / "push.db")
    yield database
    database.conn.close()
