"""``reset-password``: set a user's password and log out their sessions.

It writes the database directly, so it works whether the server runs or not (no
admin token or shared secret needed, only write access to the database file, as
the server's own user or root). The transaction waits for the server's writes
(SQLite's busy timeout) and is one ``BEGIN IMMEDIATE`` ... ``COMMIT``; a running
server notices the commit and stops honouring the deleted tokens within
``server.OTHER_WRITERS_POLL_S`` (it keeps access tokens cached in memory).

As Synapse's admin ``reset_password`` with ``logout_devices``: every access token
and refresh token of the user goes, and with them the pushers, so no phone gets
notifications for a session that was logged out. Unlike Synapse the devices (and
their end-to-end keys) stay listed until the user removes them: deleting them is
the running server's job (it must tell other users' clients of the change).
"""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

from pocketserver.accounts.passwords import hash_password
from pocketserver.cli.common import (
    add_config_argument,
    fail,
    find_config,
    load_or_exit,
    local_user_id,
)
from pocketserver.cli.passwords import (
    PasswordInputError,
    password_error,
    prompt_new_password,
    read_password_file,
)
from pocketserver.storage import devices as device_store
from pocketserver.storage import pushers as pusher_store
from pocketserver.storage import users as user_store
from pocketserver.storage.guard import ForeignDatabaseError, check_not_foreign
from pocketserver.storage.lock import holder_pid
from pocketserver.storage.migrations import SchemaTooNewError, check_not_too_new

BUSY_TIMEOUT_MS = 30_000


class ResetError(Exception):
    """The password could not be changed; the message says why."""


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser(
        "reset-password",
        help="set a user's password and log out all their sessions",
        description="Set a local user's password (asked twice, hidden) and log out every "
        "session of theirs. Works with the server running or stopped; needs write access "
        "to the database file.",
    )
    add_config_argument(p)
    p.add_argument(
        "-u", "--user", required=True, help="the user: localpart (alice) or @alice:SERVER"
    )
    p.add_argument(
        "--password-file",
        metavar="FILE",
        help="read the new password from the first line of FILE ('-': standard input) "
        "instead of asking",
    )
    p.set_defaults(func=reset_password_command)


def _open(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise ResetError(f"no database at {path}: has the server been started yet?")
    try:
        check_not_foreign(path)
    except ForeignDatabaseError as e:
        raise ResetError(str(e)) from None
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")  # refresh tokens go with their access tokens
    try:
        done = {r[0] for r in conn.execute("SELECT number FROM schema_migrations")}
        check_not_too_new(done)
    except sqlite3.OperationalError:
        conn.close()
        raise ResetError(f"{path} has no users yet: start the server once") from None
    except SchemaTooNewError as e:
        conn.close()
        raise ResetError(str(e)) from None
    return conn


def _reset(conn: sqlite3.Connection, user_id: str, password_hash: str) -> tuple[int, int]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        user = user_store.get_user(conn, user_id)
        if user is None:
            raise ResetError(f"there is no user {user_id}")
        if user.deactivated:
            raise ResetError(f"{user_id} is deactivated")
        user_store.set_password_hash(conn, user_id, password_hash)
        sessions = device_store.delete_user_tokens(conn, user_id)
        pushers = pusher_store.delete_for_user(conn, user_id)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return sessions, pushers


def reset_password_command(args: argparse.Namespace) -> int:
    path = find_config(getattr(args, "config_path", None))
    if path is None:
        return fail("no config: give -c PATH or run in the folder with homeserver.yaml")
    config = load_or_exit(path)
    if config is None:
        return 1
    try:
        user_id = local_user_id(args.user, config.server_name)
    except ValueError as e:
        return fail(str(e))
    db_path = config.database.path
    try:
        conn = _open(db_path)  # before asking: no point typing a password for nothing
        try:
            if args.password_file is not None:
                password = read_password_file(args.password_file)
            else:
                password = prompt_new_password()
        except PasswordInputError as e:
            conn.close()
            return password_error(e)
        try:
            password_hash = hash_password(
                password, pepper=config.password_pepper, rounds=config.bcrypt_rounds
            )
            sessions, pushers = _reset(conn, user_id, password_hash)
        finally:
            conn.close()
    except ResetError as e:
        return fail(str(e))
    except sqlite3.Error as e:
        return fail(f"cannot change {db_path}: {e}")
    print(f"Changed the password of {user_id} and logged out {sessions} session(s).")
    if pushers:
        print(f"Removed {pushers} pusher(s) (push notifications of those sessions).")
    pid = holder_pid(db_path)
    if pid is not None:
        print(f"The running server{f' (pid {pid})' if pid else ''} drops the old sessions now.")
    return 0
