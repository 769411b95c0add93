"""``register-user``: create an account through the running server's shared-secret API.

The same protocol as Synapse's register_new_matrix_user, so either tool works
against either server.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from pocketserver.accounts.shared_secret import registration_mac
from pocketserver.cli.common import (
    add_config_argument,
    fail,
    find_config,
    load_or_exit,
    local_user_id,
)
from pocketserver.cli.passwords import PasswordInputError, password_error, prompt_new_password


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser(
        "register-user",
        help="create a user on the running server",
        description="Create a user through the running server's shared-secret registration "
        "API (registration_shared_secret in the config). Prompts for what is missing.",
    )
    add_config_argument(p, help_suffix=", else ./pocket-data/homeserver.yaml")
    p.add_argument(
        "-u", "--user", help="the new user: its localpart (alice) or user ID (@alice:SERVER)"
    )
    p.add_argument("-p", "--password", help="the password (prompted twice if not given)")
    admin = p.add_mutually_exclusive_group()
    admin.add_argument(
        "-a",
        "--admin",
        dest="admin",
        action="store_true",
        default=None,
        help="make the user a server admin",
    )
    admin.add_argument(
        "--no-admin",
        dest="admin",
        action="store_false",
        help="make a normal user (the default when not asked)",
    )
    p.add_argument(
        "-t",
        "--user-type",
        choices=["bot", "support"],
        default=None,
        help="mark the account as a bot or support user",
    )
    p.add_argument("-k", "--shared-secret", help="the shared secret (default: from the config)")
    p.add_argument("--exists-ok", action="store_true", help="exit 0 if the user exists already")
    p.add_argument(
        "server_url",
        nargs="?",
        help="the server's URL (default: the config's first client listener)",
    )
    p.set_defaults(func=register_command)


def _ask(prompt: str, default: str | None = None) -> str | None:
    if not sys.stdin.isatty():
        return default
    try:
        answer = input(prompt).strip()
    except EOFError:
        return default
    return answer or default


def register_command(args: argparse.Namespace) -> int:
    import httpx

    secret, url = args.shared_secret, args.server_url
    server_name = None
    wants_config = secret is None or url is None or (args.user or "").startswith("@")
    path = find_config(getattr(args, "config_path", None)) if wants_config else None
    if wants_config:
        if path is None and secret is not None and url is not None:
            return fail(f"give the localpart, or -c CONFIG to check the server of {args.user}")
        if path is None:
            return fail("no config: give -c PATH, or --shared-secret and the server URL")
        config = load_or_exit(path)
        if config is None:
            return 1
        server_name = config.server_name
        secret = secret or config.registration_shared_secret
        if url is None:
            try:
                url = config.client_base_url()
            except ValueError as e:
                return fail(str(e))
    if not secret:
        return fail("registration_shared_secret is not set in the config")
    user = args.user or _ask(f"New user localpart [{getpass.getuser()}]: ", getpass.getuser())
    if not user:
        return fail("no user name given")
    if user.startswith("@"):  # Synapse's tool wants the localpart; take the ID too
        assert server_name is not None
        try:
            user = local_user_id(user, server_name)[1:].split(":", 1)[0]
        except ValueError as e:
            return fail(str(e))
    try:
        password = args.password if args.password is not None else prompt_new_password()
    except PasswordInputError as e:
        return password_error(e)
    if not password:
        return fail("no password given")
    admin = args.admin
    if admin is None:
        admin = (_ask("Make admin [no]: ", "no") or "no").lower() in ("y", "yes", "true")
    base = url.rstrip("/")
    endpoint = f"{base}/_synapse/admin/v1/register"
    try:
        with httpx.Client(timeout=30.0) as client:
            r = client.get(endpoint)
            if r.status_code != 200:
                return _server_error(r)
            nonce = r.json()["nonce"]
            body = {
                "nonce": nonce,
                "username": user,
                "password": password,
                "admin": admin,
                "user_type": args.user_type,
                "mac": registration_mac(secret, nonce, user, password, admin, args.user_type),
            }
            r = client.post(endpoint, json=body)
    except httpx.HTTPError as e:
        return fail(f"cannot reach the server at {base}: {e}")
    if r.status_code != 200:
        if args.exists_ok and _errcode(r) == "M_USER_IN_USE":
            print(f"User {user} exists already.")
            return 0
        return _server_error(r)
    print(f"Success! Registered {r.json().get('user_id')}{' (admin)' if admin else ''}.")
    return 0


def _errcode(r: object) -> str | None:
    try:
        return r.json().get("errcode")  # type: ignore[attr-defined,no-any-return]
    except ValueError:
        return None


def _server_error(r: object) -> int:
    status = getattr(r, "status_code", "?")
    try:
        body = r.json()  # type: ignore[attr-defined]
        detail = f"{body.get('errcode')}: {body.get('error')}"
    except ValueError:
        detail = getattr(r, "text", "")[:200]
    return fail(f"the server refused: HTTP {status}: {detail}")
