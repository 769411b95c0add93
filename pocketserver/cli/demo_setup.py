"""What ``demo`` does on its running servers, through their public APIs only: a user on
each, a check that the servers federate (each fetches the others' keys), and a room of
alice's on server 1 that bob and carol join from their own servers.

Everything goes through the APIs a person or a client would use (shared-secret
registration, ``/login``, ``/createRoom``, ``POST /join/{roomId}?server_name=``), so the
demo shows federation as it is, and an earlier run's directory is picked up again
(users that exist log in; the room is kept).
"""

from __future__ import annotations

import secrets
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from pocketserver.accounts.shared_secret import registration_mac
from pocketserver.cli.demo_servers import DemoError, DemoServer

USERS = ("alice", "bob", "carol")
ROOM_ALIAS = "demo"
V3 = "/_matrix/client/v3"
TIMEOUT_S = 60.0  # a join across servers fetches the room's state


@dataclass
class DemoUser:
    server: DemoServer
    localpart: str
    password: str
    token: str = ""

    @property
    def user_id(self) -> str:
        return f"@{self.localpart}:{self.server.server_name}"


@dataclass
class DemoRoom:
    room_id: str
    alias: str
    joined: dict[str, str] = field(default_factory=dict)
    """user ID -> "joined", or why the join failed."""


def _client(base_url: str, token: str = "") -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=base_url, timeout=TIMEOUT_S, headers=headers)


def _error(r: httpx.Response) -> str:
    try:
        body = r.json()
        return f"{body.get('errcode')}: {body.get('error')}"
    except ValueError:
        return f"HTTP {r.status_code}"


def make_user(server: DemoServer, localpart: str, password: str | None) -> DemoUser:
    """Register the user through the shared-secret API (or, if it exists from an earlier
    run, log in with the password kept then) and return it with an access token.

    Raises:
        DemoError: the server refused.
    """
    user = DemoUser(server, localpart, password or secrets.token_urlsafe(9))
    secret = str(server.config()["registration_shared_secret"])
    with _client(server.client_url) as http:
        nonce = http.get("/_synapse/admin/v1/register").json()["nonce"]
        mac = registration_mac(secret, nonce, localpart, user.password, False)
        r = http.post(
            "/_synapse/admin/v1/register",
            json={
                "nonce": nonce,
                "username": localpart,
                "password": user.password,
                "admin": False,
                "mac": mac,
            },
        )
        if r.status_code == 200:
            user.token = str(r.json()["access_token"])
            return user
        if r.status_code != 400 or r.json().get("errcode") != "M_USER_IN_USE":
            raise DemoError(f"cannot register {user.user_id}: {_error(r)}")
        r = http.post(
            f"{V3}/login",
            json={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": localpart},
                "password": user.password,
                "initial_device_display_name": "pocketserver demo",
            },
        )
        if r.status_code != 200:
            raise DemoError(f"{user.user_id} exists but cannot log in: {_error(r)}")
        user.token = str(r.json()["access_token"])
    return user


def check_keys(servers: list[DemoServer], ca_file: str) -> None:
    """Ask each server, as a notary, for each other server's keys
    (``GET /_matrix/key/v2/query/{serverName}``, server-server-api.md "Querying keys
    through another server"): it fetches them over TLS, trusting the demo's CA, and
    answers them signed. This proves TLS, the CA and the loopback whitelist work before
    any room is shared.

    Raises:
        DemoError: a server could not fetch another's keys.
    """
    trusting = ssl.create_default_context(cafile=ca_file)
    for asker in servers:
        with httpx.Client(base_url=asker.federation_url, verify=trusting, timeout=30.0) as http:
            for other in servers:
                if other is asker:
                    continue
                r = http.get(f"/_matrix/key/v2/query/{quote(other.server_name)}")
                keys = r.json().get("server_keys", []) if r.status_code == 200 else []
                if not any(k.get("server_name") == other.server_name for k in keys):
                    raise DemoError(
                        f"server {asker.number} could not fetch the keys of server "
                        f"{other.number}: {r.status_code} {r.text[:300]}"
                    )


def _call(user: DemoUser, method: str, path: str, body: object = None, **params: Any) -> Any:
    with _client(user.server.client_url, user.token) as http:
        r = http.request(method, V3 + path, json=body, params=params or None)
    if r.status_code != 200:
        raise DemoError(f"{user.user_id}: {method} {path}: {_error(r)}")
    return r.json()


def make_room(owner: DemoUser, room_id: str | None) -> DemoRoom:
    """The public room ``#demo`` of ``owner`` (kept from an earlier run if given)."""
    alias = f"#{ROOM_ALIAS}:{owner.server.server_name}"
    if room_id is None:
        room_id = str(
            _call(
                owner,
                "POST",
                "/createRoom",
                {
                    "preset": "public_chat",
                    "room_alias_name": ROOM_ALIAS,
                    "name": "pocketserver demo",
                    "topic": "Three pocketservers on 127.0.0.1, federating",
                },
            )["room_id"]
        )
        txn = secrets.token_hex(8)
        _call(
            owner,
            "PUT",
            f"/rooms/{quote(room_id)}/send/m.room.message/{txn}",
            {"msgtype": "m.text", "body": "Hello from server 1! Say hi from the others."},
        )
    return DemoRoom(room_id, alias, {owner.user_id: "joined"})


def join_from_afar(user: DemoUser, room: DemoRoom, via: DemoServer) -> None:
    """``user`` joins the room from their own server, through ``via`` (the room's server):
    ``POST /join/{roomIdOrAlias}?server_name=`` (client-server-api "Joining rooms"); their
    server then runs make_join/send_join with ``via``. The outcome goes in ``room.joined``
    (a failure is reported, not fatal: the servers stay up for the user to try)."""
    with _client(user.server.client_url, user.token) as http:
        r = http.post(
            f"{V3}/join/{quote(room.room_id)}",
            params={"server_name": via.server_name},
            json={},
        )
    room.joined[user.user_id] = "joined" if r.status_code == 200 else _error(r)
