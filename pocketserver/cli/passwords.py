"""``hash-password``: print a bcrypt hash for the users table (Synapse's format)."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from pocketserver.accounts.passwords import hash_password
from pocketserver.cli.common import add_config_argument, fail, load_or_exit


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser(
        "hash-password",
        help="print a password hash for a manual password reset",
        description="Print a bcrypt hash that pocketserver and Synapse accept. With -c, the "
        "config's password pepper and bcrypt_rounds are used.",
    )
    add_config_argument(p, help_suffix="; without it: no pepper, 12 rounds")
    p.add_argument("-p", "--password", help="the password (prompted twice if not given)")
    p.set_defaults(func=hash_password_command)


class PasswordInputError(Exception):
    """No usable new password: the two entries differ, or nothing was entered."""


def prompt_new_password() -> str:
    """Ask twice without echo.

    Raises:
        PasswordInputError: the entries differ ("Passwords do not match"), are empty, or
            there is no input.
    """
    try:
        first = getpass.getpass("Password: ")
        second = getpass.getpass("Confirm password: ")
    except (EOFError, KeyboardInterrupt):
        raise PasswordInputError("no password given") from None
    if first != second:
        raise PasswordInputError("Passwords do not match")
    if not first:
        raise PasswordInputError("no password given")
    return first


def read_password_file(name: str) -> str:
    """The first line of a file (``-``: standard input), for scripts.

    Raises:
        PasswordInputError: the file cannot be read or its first line is empty.
    """
    try:
        if name == "-":
            text = sys.stdin.readline()
        else:
            with open(name, encoding="utf-8") as f:
                text = f.readline()
    except (OSError, UnicodeDecodeError) as e:
        raise PasswordInputError(f"cannot read the password file {name}: {e}") from None
    password = text.rstrip("\r\n")
    if not password:
        raise PasswordInputError(f"the password file {name} has an empty first line")
    return password


def password_error(e: PasswordInputError) -> int:
    """Report a password input problem: a mismatch says only that (as Synapse's tools do)."""
    message = str(e)
    print(message if message == "Passwords do not match" else f"error: {message}", file=sys.stderr)
    return 1


def hash_password_command(args: argparse.Namespace) -> int:
    pepper, rounds = "", 12
    if getattr(args, "config_path", None):
        config = load_or_exit(Path(args.config_path))
        if config is None:
            return 1
        pepper, rounds = config.password_pepper, config.bcrypt_rounds
    try:
        password = args.password if args.password is not None else prompt_new_password()
    except PasswordInputError as e:
        return password_error(e)
    if not password:
        return fail("no password given")
    print(hash_password(password, pepper=pepper, rounds=rounds))
    return 0
