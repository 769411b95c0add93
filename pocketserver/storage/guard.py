"""Checks made before pocketserver writes anything to a database file.

Pointed at another program's SQLite file (Synapse's ``homeserver.db`` is the usual
one: the same default name), pocketserver must refuse without changing a byte:
not even ``PRAGMA journal_mode = WAL`` (which rewrites the header) or the
``schema_migrations`` table. So the file is first opened read-only and its tables
are listed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

# Tables that only Synapse's schema has: used to say what the file probably is.
_SYNAPSE_TABLES = frozenset({"schema_version", "applied_schema_deltas", "event_json"})


class ForeignDatabaseError(Exception):
    """The file is not a SQLite database, or one that pocketserver did not create."""


def _read_only_uri(path: Path) -> str:
    return path.resolve().as_uri() + "?mode=ro"


def check_not_foreign(path: Path) -> None:
    """Refuse a database file that some other program made. A missing or empty file passes.

    Raises:
        ForeignDatabaseError: the file is not SQLite, or it has tables but not
            pocketserver's ``schema_migrations`` record. The file is left unchanged.
    """
    try:
        if path.stat().st_size == 0:
            return
    except FileNotFoundError:
        return
    try:
        conn = sqlite3.connect(_read_only_uri(path), uri=True)
    except sqlite3.Error as e:
        raise ForeignDatabaseError(f"cannot open database {path} read-only: {e}") from None
    try:
        tables = {
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not str(row[0]).startswith("sqlite_")
        }
        columns = {row[1] for row in conn.execute("PRAGMA table_info(schema_migrations)")}
    except sqlite3.DatabaseError as e:
        raise ForeignDatabaseError(f"{path} is not a SQLite database ({e})") from None
    finally:
        conn.close()
    if not tables or {"number", "name", "applied_ts"} <= columns:
        return
    what = "Synapse's database" if tables & _SYNAPSE_TABLES else "another program's database"
    shown = ", ".join(sorted(tables)[:4]) + (", ..." if len(tables) > 4 else "")
    raise ForeignDatabaseError(
        f"{path} is not a pocketserver database (it looks like {what}: tables {shown}); "
        "it was left unchanged. Set database.args.database to a new file"
    )
