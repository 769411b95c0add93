"""Numbered schema migrations, each applied together with its record in one transaction.

Migration files live in ``pocketserver/storage/schema/NNN_name.sql`` and are read
with importlib.resources, so they work from inside the .pyz. The table
``schema_migrations`` records every applied number; a database that records a
number this code does not have was written by a newer pocketserver and is refused.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources

_NAME_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


class SchemaTooNewError(Exception):
    """The database was written by a newer version of pocketserver."""


@dataclass(frozen=True, slots=True)
class Migration:
    number: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    """All migrations shipped with this code, in order."""
    found = []
    for entry in resources.files("pocketserver.storage.schema").iterdir():
        m = _NAME_RE.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.number)
    numbers = [mig.number for mig in found]
    if numbers != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration numbers are not 1..n without gaps: {numbers}")
    return found


def split_statements(sql: str) -> list[str]:
    """Split a SQL script into statements (``executescript`` would commit implicitly)."""
    statements, current = [], ""
    pieces = sql.split(";")
    for i, piece in enumerate(pieces):
        current += piece + (";" if i < len(pieces) - 1 else "")
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in current.splitlines()
    ):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {current[:80]!r}")
    return statements


def applied_versions(conn: sqlite3.Connection) -> set[int]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " number INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ts INTEGER NOT NULL)"
    )
    return {row[0] for row in conn.execute("SELECT number FROM schema_migrations")}


def check_not_too_new(done: set[int], known: set[int] | None = None) -> None:
    """Refuse a database that records migrations this code does not have.

    Raises:
        SchemaTooNewError: naming them.
    """
    if known is None:
        known = {mig.number for mig in available_migrations()}
    newer = sorted(done - known)
    if newer:
        raise SchemaTooNewError(
            f"the database has schema migration(s) {newer} that this version of "
            f"pocketserver does not know (it knows up to {max(known, default=0)}): it was "
            "written by a newer pocketserver. Run that version, or restore a backup."
        )


def apply_migrations(conn: sqlite3.Connection, migrations: list[Migration] | None = None) -> int:
    """Bring the schema up to date; return how many migrations were applied.

    Raises:
        SchemaTooNewError: the database has migrations this code doesn't know.
    """
    migrations = available_migrations() if migrations is None else migrations
    known = {mig.number for mig in migrations}
    done = applied_versions(conn)
    check_not_too_new(done, known)
    count = 0
    for mig in migrations:
        if mig.number in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in split_statements(mig.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (number, name, applied_ts) VALUES (?, ?, ?)",
                (mig.number, mig.name, int(time.time() * 1000)),
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        count += 1
    return count
