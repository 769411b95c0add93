"""SQLite storage: migrations, the Database's transactions and threads, users and devices."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from pocketserver.storage import devices, users
from pocketserver.storage.db import Database
from pocketserver.storage.migrations import (
    Migration,
    SchemaTooNewError,
    apply_migrations,
    available_migrations,
    split_statements,
)

MEMORY = 8 * 1024 * 1024


def raw_connect(path: Path) -> sqlite3.Connection:
    """A connection like the Database's own: we issue BEGIN/COMMIT ourselves."""
    return sqlite3.connect(path, isolation_level=None)


def tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def recorded(conn: sqlite3.Connection) -> list[tuple[int, str, int]]:
    return list(
        conn.execute("SELECT number, name, applied_ts FROM schema_migrations ORDER BY number")
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "homeserver.db"


@pytest.fixture
def db(db_path: Path) -> Iterator[Database]:
    database = Database(db_path, memory_bytes=MEMORY)
    yield database
    database.close()


def add_user(conn: sqlite3.Connection, user_id: str) -> bool:
    return users.insert_user(conn, user_id, None, 1_700_000_000)


# --- migrations ----------------------------------------------------------------------


def test_shipped_migrations_are_numbered_from_one() -> None:
    migrations = available_migrations()
    assert migrations
    assert [m.number for m in migrations] == list(range(1, len(migrations) + 1))
    for m in migrations:
        assert split_statements(m.sql), m.name


def test_migrations_apply_once_and_are_recorded(db_path: Path) -> None:
    database = Database(db_path, memory_bytes=MEMORY)
    database.close()
    conn = raw_connect(db_path)
    try:
        rows = recorded(conn)
        assert [(n, name) for n, name, _ in rows] == [
            (m.number, m.name) for m in available_migrations()
        ]
        assert {"users", "devices", "access_tokens"} <= tables(conn)
        assert apply_migrations(conn) == 0
        assert recorded(conn) == rows
    finally:
        conn.close()
    # Re-opening applies nothing either: the records (with their times) are unchanged.
    Database(db_path, memory_bytes=MEMORY).close()
    conn = raw_connect(db_path)
    try:
        assert recorded(conn) == rows
    finally:
        conn.close()


def test_apply_migrations_counts_what_it_applied(tmp_path: Path) -> None:
    conn = raw_connect(tmp_path / "x.db")
    try:
        assert apply_migrations(conn) == len(available_migrations())
        assert apply_migrations(conn) == 0
    finally:
        conn.close()


def test_database_from_newer_code_is_refused(db_path: Path) -> None:
    Database(db_path, memory_bytes=MEMORY).close()
    conn = raw_connect(db_path)
    try:
        conn.execute("INSERT INTO schema_migrations VALUES (999, 'from_the_future', 0)")
        with pytest.raises(SchemaTooNewError, match="999"):
            apply_migrations(conn)
    finally:
        conn.close()
    with pytest.raises(SchemaTooNewError):
        Database(db_path, memory_bytes=MEMORY)


def test_failing_migration_leaves_neither_tables_nor_record(tmp_path: Path) -> None:
    good = Migration(1, "good", "CREATE TABLE good_table (x INTEGER);\n")
    bad = Migration(
        2,
        "bad",
        "CREATE TABLE half_table (y INTEGER);\n"
        "CREATE INDEX half_idx ON half_table (y);\n"
        "INSERT INTO no_such_table VALUES (1);\n",
    )
    conn = raw_connect(tmp_path / "m.db")
    try:
        with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
            apply_migrations(conn, [good, bad])
        assert "good_table" in tables(conn)
        assert "half_table" not in tables(conn)
        assert (
            conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half_idx'").fetchone()[0]
            == 0
        )
        assert [n for n, _, _ in recorded(conn)] == [1]
        assert not conn.in_transaction
        # A fixed migration 2 then applies, and only it.
        fixed = Migration(2, "bad", "CREATE TABLE half_table (y INTEGER);\n")
        assert apply_migrations(conn, [good, fixed]) == 1
        assert "half_table" in tables(conn)
        assert [n for n, _, _ in recorded(conn)] == [1, 2]
    finally:
        conn.close()


def test_migration_with_trigger_and_semicolons_in_strings(tmp_path: Path) -> None:
    sql = """
    -- a comment; with a semicolon
    CREATE TABLE log (msg TEXT);
    CREATE TABLE t (v TEXT);
    CREATE TRIGGER t_log AFTER INSERT ON t BEGIN
        INSERT INTO log VALUES ('inserted; ' || new.v);
        INSERT INTO log VALUES ('second;');
    END;
    INSERT INTO t VALUES ('a;b');
    """
    conn = raw_connect(tmp_path / "t.db")
    try:
        assert apply_migrations(conn, [Migration(1, "trigger", sql)]) == 1
        assert [r[0] for r in conn.execute("SELECT v FROM t")] == ["a;b"]
        assert sorted(r[0] for r in conn.execute("SELECT msg FROM log")) == [
            "inserted; a;b",
            "second;",
        ]
    finally:
        conn.close()


def test_split_statements_handles_triggers_strings_and_comments() -> None:
    sql = (
        "CREATE TABLE a (x TEXT DEFAULT ';');\n"
        "/* block; comment */ INSERT INTO a VALUES ('it''s; fine');\n"
        "INSERT INTO a VALUES ('multi\nline; string');\n"
        "CREATE TRIGGER tr AFTER INSERT ON a BEGIN\n"
        "  UPDATE a SET x = 'y;';\n"
        "  DELETE FROM a WHERE x = ';';\n"
        "END;\n"
        "-- trailing comment; only\n"
    )
    statements = split_statements(sql)
    assert len(statements) == 4
    assert statements[0] == "CREATE TABLE a (x TEXT DEFAULT ';');"
    assert "it''s; fine" in statements[1]
    assert "multi\nline; string" in statements[2]
    assert statements[3].startswith("CREATE TRIGGER tr")
    assert statements[3].endswith("END;")
    for statement in statements:
        assert sqlite3.complete_statement(statement)


def test_split_statements_rejects_an_unfinished_statement() -> None:
    with pytest.raises(ValueError, match="incomplete"):
        split_statements("CREATE TABLE a (x);\nCREATE TABLE b (y)\n")


def test_two_statements_on_one_line_are_split(tmp_path: Path) -> None:
    sql = "CREATE TABLE a (x); CREATE TABLE b (y);\n"
    conn = raw_connect(tmp_path / "one_line.db")
    try:
        assert apply_migrations(conn, [Migration(1, "one_line", sql)]) == 1
        assert {"a", "b"} <= tables(conn)
    finally:
        conn.close()
    assert split_statements(sql) == ["CREATE TABLE a (x);", "CREATE TABLE b (y);"]


# --- the Database: transactions ------------------------------------------------------------


async def test_write_commits_when_fn_returns(db: Database, db_path: Path) -> None:
    assert await db.write(add_user, "@alice:example.org") is True
    found = await db.read(users.get_user, "@alice:example.org")
    assert found is not None
    assert found.user_id == "@alice:example.org"
    # Committed to the file: another connection sees it too.
    other = raw_connect(db_path)
    try:
        assert other.execute("SELECT count(*) FROM users").fetchone()[0] == 1
    finally:
        other.close()


async def test_write_rolls_back_when_fn_raises(db: Database) -> None:
    def insert_then_fail(conn: sqlite3.Connection) -> None:
        add_user(conn, "@bob:example.org")
        devices.ensure_device(conn, "@bob:example.org", "DEV", None, 1)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await db.write(insert_then_fail)
    assert await db.read(users.count_users) == 0
    assert await db.read(devices.device_exists, "@bob:example.org", "DEV") is False
    # The write connection is usable again afterwards (no transaction left open).
    assert await db.write(add_user, "@bob:example.org") is True
    assert await db.read(users.count_users) == 1


async def test_write_returns_fn_result_and_passes_args(db: Database) -> None:
    def fn(conn: sqlite3.Connection, a: int, b: str) -> tuple[int, str]:
        return (a * 2, b.upper())

    assert await db.write(fn, 21, "x") == (42, "X")


async def test_write_survives_cancellation_of_the_caller(db: Database) -> None:
    def slow_insert(conn: sqlite3.Connection) -> None:
        add_user(conn, "@slow:example.org")
        time.sleep(0.2)

    with trio.move_on_after(0.02):
        await db.write(slow_insert)
    assert await db.read(users.get_user, "@slow:example.org") is not None


async def test_pragmas_wal_and_foreign_keys(db: Database) -> None:
    def pragmas(conn: sqlite3.Connection) -> tuple[str, int]:
        return (
            conn.execute("PRAGMA journal_mode").fetchone()[0],
            conn.execute("PRAGMA foreign_keys").fetchone()[0],
        )

    assert await db.read(pragmas) == ("wal", 1)
    assert await db.write(pragmas) == ("wal", 1)


async def test_foreign_keys_are_enforced(db: Database) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        await db.write(devices.insert_token, b"h" * 32, "@ghost:example.org", "DEV", 1)


async def test_reads_and_writes_run_off_the_trio_thread(db: Database) -> None:
    trio_thread = threading.get_ident()

    def ident(conn: sqlite3.Connection) -> int:
        return threading.get_ident()

    assert await db.write(ident) != trio_thread
    assert await db.read(ident) != trio_thread


async def test_many_concurrent_reads_and_writes_complete(db: Database) -> None:
    n = 40
    seen: list[int] = []

    async def writer(i: int) -> None:
        assert await db.write(add_user, f"@user{i}:example.org")

    async def reader() -> None:
        seen.append(await db.read(users.count_users))

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(writer, i)
                nursery.start_soon(reader)
                nursery.start_soon(reader)
    assert await db.read(users.count_users) == n
    assert len(seen) == 2 * n
    assert all(0 <= c <= n for c in seen)
    stats = db.statistics()
    assert stats.writes >= n
    assert stats.reads >= 2 * n
    assert stats.readers_busy == 0


async def test_read_sees_one_snapshot(db: Database, db_path: Path) -> None:
    await db.write(add_user, "@a:example.org")
    inside = threading.Event()
    resume = threading.Event()

    def two_counts(conn: sqlite3.Connection) -> tuple[int, int]:
        first = users.count_users(conn)
        inside.set()
        resume.wait(5)
        return first, users.count_users(conn)

    async with trio.open_nursery() as nursery:
        result: list[tuple[int, int]] = []

        async def do_read() -> None:
            result.append(await db.read(two_counts))

        nursery.start_soon(do_read)
        await trio.to_thread.run_sync(inside.wait, 5)
        await db.write(add_user, "@b:example.org")
        resume.set()
    assert result == [(1, 1)]
    assert await db.read(users.count_users) == 2


def test_close_checkpoints_the_wal(db_path: Path) -> None:
    database = Database(db_path, memory_bytes=MEMORY)
    for i in range(20):
        database.write_sync(add_user, f"@u{i}:example.org")
    wal = db_path.with_name(db_path.name + "-wal")
    assert wal.exists()
    assert wal.stat().st_size > 0
    database.close()
    assert not wal.exists() or wal.stat().st_size == 0
    database.close()  # a second close is harmless
    conn = raw_connect(db_path)
    try:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 20
    finally:
        conn.close()


def test_sync_read_and_write(db: Database) -> None:
    assert db.write_sync(add_user, "@sync:example.org")
    assert db.read_sync(users.count_users) == 1


# --- users -----------------------------------------------------------------------------


async def test_insert_duplicate_user_returns_false_and_keeps_the_first(db: Database) -> None:
    assert await db.write(users.insert_user, "@alice:example.org", "$2b$first", 1)
    assert not await db.write(users.insert_user, "@alice:example.org", "$2b$second", 2)
    found = await db.read(users.get_user, "@alice:example.org")
    assert found is not None
    assert found.password_hash == "$2b$first"
    assert found.creation_ts == 1
    assert await db.read(users.count_users) == 1


async def test_user_fields_round_trip(db: Database) -> None:
    def insert(conn: sqlite3.Connection) -> bool:
        return users.insert_user(conn, "@bot:example.org", None, 5, admin=True, user_type="bot")

    assert await db.write(insert)
    found = await db.read(users.get_user, "@bot:example.org")
    assert found == users.User(
        user_id="@bot:example.org",
        password_hash=None,
        creation_ts=5,
        admin=True,
        deactivated=False,
        is_guest=False,
        user_type="bot",
    )


async def test_case_insensitive_lookup(db: Database) -> None:
    await db.write(add_user, "@Alice:example.org")
    await db.write(add_user, "@bob:example.org")
    assert await db.read(users.get_user, "@alice:example.org") is None
    matches = await db.read(users.find_user_case_insensitive, "@ALICE:example.org")
    assert [u.user_id for u in matches] == ["@Alice:example.org"]
    assert await db.read(users.find_user_case_insensitive, "@carol:example.org") == []


async def test_set_password_hash(db: Database) -> None:
    await db.write(add_user, "@alice:example.org")
    assert await db.write(users.set_password_hash, "@alice:example.org", "$2b$new")
    assert not await db.write(users.set_password_hash, "@nobody:example.org", "$2b$new")
    found = await db.read(users.get_user, "@alice:example.org")
    assert found is not None
    assert found.password_hash == "$2b$new"


# --- devices and tokens -----------------------------------------------------------------


async def test_ensure_device_creates_once(db: Database) -> None:
    await db.write(add_user, "@alice:example.org")
    assert await db.write(devices.ensure_device, "@alice:example.org", "DEV", "Phone", 1)
    assert not await db.write(devices.ensure_device, "@alice:example.org", "DEV", "Other", 2)
    assert await db.read(devices.device_exists, "@alice:example.org", "DEV")
    assert not await db.read(devices.device_exists, "@alice:example.org", "OTHER")


async def test_tokens_resolve_to_their_owner(db: Database) -> None:
    def setup(conn: sqlite3.Connection) -> int:
        add_user(conn, "@alice:example.org")
        devices.ensure_device(conn, "@alice:example.org", "DEV", None, 1)
        return devices.insert_token(conn, b"A" * 32, "@alice:example.org", "DEV", 1, 99)

    token_id = await db.write(setup)
    owner = await db.read(devices.get_token_owner, b"A" * 32)
    assert owner == devices.TokenOwner("@alice:example.org", "DEV", token_id, 99)
    assert await db.read(devices.get_token_owner, b"B" * 32) is None
    with pytest.raises(sqlite3.IntegrityError):  # token hashes are unique
        await db.write(devices.insert_token, b"A" * 32, "@alice:example.org", "DEV", 2)


async def test_deleting_a_device_cascades_to_its_tokens(db: Database) -> None:
    def setup(conn: sqlite3.Connection) -> None:
        add_user(conn, "@alice:example.org")
        for dev, token in (("ONE", b"1" * 32), ("TWO", b"2" * 32)):
            devices.ensure_device(conn, "@alice:example.org", dev, None, 1)
            devices.insert_token(conn, token, "@alice:example.org", dev, 1)
        devices.insert_token(conn, b"3" * 32, "@alice:example.org", "ONE", 1)

    await db.write(setup)
    assert sorted(await db.read(devices.token_hashes_for_device, "@alice:example.org", "ONE")) == [
        b"1" * 32,
        b"3" * 32,
    ]
    await db.write(devices.delete_device, "@alice:example.org", "ONE")
    assert await db.read(devices.get_token_owner, b"1" * 32) is None
    assert await db.read(devices.get_token_owner, b"3" * 32) is None
    assert await db.read(devices.get_token_owner, b"2" * 32) is not None
    assert await db.read(devices.token_hashes_for_user, "@alice:example.org") == [b"2" * 32]


async def test_delete_device_tokens_keeps_the_device(db: Database) -> None:
    def setup(conn: sqlite3.Connection) -> None:
        add_user(conn, "@alice:example.org")
        devices.ensure_device(conn, "@alice:example.org", "DEV", None, 1)
        devices.insert_token(conn, b"t" * 32, "@alice:example.org", "DEV", 1)

    await db.write(setup)
    await db.write(devices.delete_device_tokens, "@alice:example.org", "DEV")
    assert await db.read(devices.get_token_owner, b"t" * 32) is None
    assert await db.read(devices.device_exists, "@alice:example.org", "DEV")


async def test_delete_all_devices(db: Database) -> None:
    def setup(conn: sqlite3.Connection) -> None:
        for user in ("@alice:example.org", "@bob:example.org"):
            add_user(conn, user)
            for i, dev in enumerate(("A", "B")):
                devices.ensure_device(conn, user, dev, None, 1)
                devices.insert_token(conn, f"{user}{i}".encode(), user, dev, 1)

    await db.write(setup)
    gone = await db.write(devices.delete_all_devices, "@alice:example.org")
    assert sorted(gone) == ["A", "B"]
    assert await db.read(devices.token_hashes_for_user, "@alice:example.org") == []
    assert not await db.read(devices.device_exists, "@alice:example.org", "A")
    assert len(await db.read(devices.token_hashes_for_user, "@bob:example.org")) == 2


async def test_deleting_a_user_cascades_to_devices_and_tokens(db: Database) -> None:
    def setup(conn: sqlite3.Connection) -> None:
        add_user(conn, "@alice:example.org")
        devices.ensure_device(conn, "@alice:example.org", "DEV", None, 1)
        devices.insert_token(conn, b"t" * 32, "@alice:example.org", "DEV", 1)

    def delete_user(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM users WHERE name = ?", ("@alice:example.org",))

    await db.write(setup)
    await db.write(delete_user)
    assert not await db.read(devices.device_exists, "@alice:example.org", "DEV")
    assert await db.read(devices.get_token_owner, b"t" * 32) is None
