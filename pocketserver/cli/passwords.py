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


def prompt_new_password() -> str | None:
    """Ask twice without echo; None if they differ or there is no terminal."""
    try:
        first = getpass.getpass("Password: ")
        second = getpass.getpass("Confirm password: ")
    except (EOFError, KeyboardInterrupt):
        return None
    if first != second:
        print("Passwords do not match", file=sys.stderr)
        return None
    return first


def hash_password_command(args: argparse.Namespace) -> int:
    pepper, rounds = "", 12
    if getattr(args, "config_path", None):
        config = load_or_exit(Path(args.config_path))
        if config is None:
            return 1
        pepper, rounds = config.password_pepper, config.bcrypt_rounds
    password = args.password if args.password is not None else prompt_new_password()
    if not password:
        return fail("no password given")
    print(hash_password(password, pepper=pepper, rounds=rounds))
    return 0
