"""Guest access in process: registration, the guest switch of require_auth, joins, the
removal of guests when a room's guest access ends, and the upgrade to a full account."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from pocketserver.app import create_app
from pocketserver.config import load_config
from pocketserver.services import Services, build_services
from tests.harness import make_config

V3 = "/_matrix/client/v3"
PASSWORD = "a fine long password"


@dataclass
class Env:
    services: Services
    client: Any

    async def call(
        self, method: str, path: str, token: str | None = None, json: object = None
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = await self.client.open(
            path if path.startswith("/_") else V3 + path,
            method=method,
            headers=headers,
            json=json,
        )
        body = await r.get_json()
        return r.status_code, body if isinstance(body, dict) else {"list": body}

    async def guest(self, **body: object) -> dict[str, Any]:
        status, answer = await self.call("POST", "/register?kind=guest", json=body)
        assert status == 200, answer
        return answer

    async def user(self, localpart: str) -> dict[str, Any]:
        await self.services.accounts.register(localpart, PASSWORD)
        session = await self.services.accounts.create_session(
            self.services.accounts.user_id_for(localpart), None, None
        )
        return {"user_id": session.user_id, "access_token": session.access_token}

    async def room(self, token: str, guest_access: str | None) -> str:
        initial = []
        if guest_access is not None:
            initial.append(
                {"type": "m.room.guest_access", "content": {"guest_access": guest_access}}
            )
        status, answer = await self.call(
            "POST", "/createRoom", token, {"preset": "public_chat", "initial_state": initial}
        )
        assert status == 200, answer
        return str(answer["room_id"])

    async def membership(self, room_id: str, user_id: str) -> str | None:
        membership, _ = await self.services.room_client.membership_of(room_id, user_id)
        return membership


async def _env(tmp_path: Path, **overrides: object) -> AsyncIterator[Env]:
    config = load_config(make_config(tmp_path, **overrides))
    services = await build_services(config)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(services.guests.run)
            yield Env(services, create_app(services).test_client())
            nursery.cancel_scope.cancel()
    finally:
        services.db.close()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async for e in _env(tmp_path, allow_guest_access=True, enable_registration=True):
        yield e


@pytest.fixture
async def off(tmp_path: Path) -> AsyncIterator[Env]:
    async for e in _env(tmp_path, enable_registration=True):
        yield e


async def wait_for(predicate: Any) -> None:
    for _ in range(500):
        if await predicate():
            return
        await trio.sleep(0.01)
    raise AssertionError("timed out")


# --- registration ------------------------------------------------------------------------


async def test_guest_registration(env: Env) -> None:
    first = await env.guest(
        username="chosen",
        password="ignored",
        device_id="MINE",
        initial_device_display_name="Guest phone",
        inhibit_login=True,
    )
    second = await env.guest()
    assert first["user_id"] == "@1:test.local"
    assert second["user_id"] == "@2:test.local"
    assert first["home_server"] == "test.local"
    # Every field but the device display name is ignored; the server picks the device ID.
    assert first["device_id"] != "MINE"
    token = first["access_token"]
    status, who = await env.call("GET", "/account/whoami", token)
    assert (status, who) == (
        200,
        {"user_id": "@1:test.local", "device_id": first["device_id"], "is_guest": True},
    )
    status, device = await env.call("GET", f"/devices/{first['device_id']}", token)
    assert status == 200
    assert device["display_name"] == "Guest phone"
    status, profile = await env.call("GET", "/profile/@1:test.local")
    assert profile == {"displayname": "1"}
    user = await env.services.db.read(
        lambda conn: conn.execute(
            "SELECT is_guest, password_hash FROM users WHERE name = '@1:test.local'"
        ).fetchone()
    )
    assert tuple(user) == (1, None)


async def test_guest_ids_continue_after_numeric_accounts(env: Env) -> None:
    await env.services.accounts.register("41", None)  # e.g. from before guests existed
    assert (await env.guest())["user_id"] == "@42:test.local"
    for taken in range(43, 60):  # made by an admin since: skipped, however many
        await env.services.accounts.register(str(taken), None)
    assert (await env.guest())["user_id"] == "@60:test.local"


async def test_guest_registration_disabled_by_default(off: Env) -> None:
    status, answer = await off.call("POST", "/register?kind=guest", json={})
    assert (status, answer["errcode"]) == (403, "M_GUEST_ACCESS_FORBIDDEN")


async def test_guest_registration_needs_no_enable_registration(tmp_path: Path) -> None:
    async for e in _env(tmp_path, allow_guest_access=True):
        await e.guest()
        status, answer = await e.call("POST", "/register", json={"username": "x"})
        assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")


async def test_guest_registration_bad_input(env: Env) -> None:
    r = await env.client.post(f"{V3}/register?kind=guest", data=b"{nope")
    assert (r.status_code, (await r.get_json())["errcode"]) == (400, "M_NOT_JSON")
    for body, errcode in (
        ([], "M_BAD_JSON"),
        ({"initial_device_display_name": 5}, "M_BAD_JSON"),
        ({"initial_device_display_name": "x" * 300}, "M_INVALID_PARAM"),
    ):
        status, answer = await env.call("POST", "/register?kind=guest", json=body)
        assert (status, answer.get("errcode")) == (400, errcode), body
    # An empty body is fine.
    r = await env.client.post(f"{V3}/register?kind=guest")
    assert r.status_code == 200


async def test_guest_registration_is_rate_limited(tmp_path: Path) -> None:
    limit = {"per_second": 0.001, "burst_count": 2}
    async for e in _env(tmp_path, allow_guest_access=True, rc_registration=limit):
        await e.guest()
        await e.guest()
        status, answer = await e.call("POST", "/register?kind=guest", json={})
        assert (status, answer["errcode"]) == (429, "M_LIMIT_EXCEEDED")


# --- what guests may do ------------------------------------------------------------------


async def test_refused_endpoints(env: Env) -> None:
    guest = await env.guest()
    token, me = guest["access_token"], guest["user_id"]
    owner = await env.user("owner")
    room_id = await env.room(owner["access_token"], "can_join")
    refused = [
        ("POST", "/createRoom", {}),
        ("POST", f"/user/{me}/filter", {}),
        ("PUT", f"/rooms/{room_id}/typing/{me}", {"typing": True}),
        ("POST", f"/rooms/{room_id}/receipt/m.read/$x", {}),
        ("POST", f"/rooms/{room_id}/read_markers", {}),
        ("GET", f"/presence/{me}/status", None),
        ("PUT", f"/user/{me}/account_data/m.x", {}),
        ("GET", "/pushrules/", None),
        ("GET", "/pushers", None),
        ("POST", f"/rooms/{room_id}/invite", {"user_id": owner["user_id"]}),
        ("POST", f"/rooms/{room_id}/kick", {"user_id": owner["user_id"]}),
        ("POST", f"/knock/{room_id}", {}),
        ("PUT", f"/profile/{me}/avatar_url", {"avatar_url": "mxc://a/b"}),
        ("POST", "/search", {}),
        ("POST", "/user_directory/search", {"search_term": "o"}),
        ("GET", "/room_keys/version", None),
        ("POST", "/keys/device_signing/upload", {}),
        ("POST", "/logout", {}),
        ("POST", "/account/password", {}),
        ("POST", "/_matrix/media/v3/upload", {}),
        ("GET", "/_matrix/client/v1/media/config", None),
    ]
    for method, path, body in refused:
        status, answer = await env.call(method, path, token, body)
        assert (status, answer.get("errcode")) == (403, "M_GUEST_ACCESS_FORBIDDEN"), path


async def test_allowed_endpoints(env: Env) -> None:
    guest = await env.guest()
    token, me, device = guest["access_token"], guest["user_id"], guest["device_id"]
    allowed = [
        ("GET", "/sync?timeout=0", None),
        ("GET", "/capabilities", None),
        ("GET", "/joined_rooms", None),
        ("GET", "/publicRooms", None),
        ("GET", "/devices", None),
        ("PUT", f"/devices/{device}", {"display_name": "renamed"}),
        ("POST", "/keys/upload", {}),
        ("POST", "/keys/query", {"device_keys": {me: []}}),
        ("POST", "/keys/claim", {"one_time_keys": {}}),
        ("GET", "/keys/changes?from=s0&to=s0", None),
        ("PUT", f"/profile/{me}/displayname", {"displayname": "Visitor"}),
        ("PUT", "/sendToDevice/m.x/txn1", {"messages": {}}),
        ("GET", "/voip/turnServer", None),
        ("GET", "/thirdparty/protocols", None),
        ("POST", "/publicRooms", {}),
        ("POST", "/keys/signatures/upload", {}),
        ("GET", "/_matrix/client/v1/media/download/test.local/abc", None),
        ("GET", "/_matrix/client/v1/media/download/test.local/abc/name.png", None),
        ("GET", "/_matrix/client/v1/media/thumbnail/test.local/abc?width=8&height=8", None),
        ("GET", "/_matrix/client/v1/rooms/!nowhere:test.local/hierarchy", None),
        ("GET", "/_matrix/client/v1/room_summary/!nowhere:test.local", None),
        ("GET", "/_matrix/client/v1/rooms/!nowhere:test.local/relations/$e", None),
    ]
    for method, path, body in allowed:
        status, answer = await env.call(method, path, token, body)
        assert answer.get("errcode") != "M_GUEST_ACCESS_FORBIDDEN", (path, answer)
        assert status < 500, path
    status, profile = await env.call("GET", f"/profile/{me}")
    assert profile == {"displayname": "Visitor"}


# --- joins and their end -------------------------------------------------------------------


async def test_guests_join_only_can_join_rooms(env: Env) -> None:
    owner = await env.user("owner")
    guest = await env.guest()
    token = guest["access_token"]
    closed = await env.room(owner["access_token"], None)
    forbidden = await env.room(owner["access_token"], "forbidden")
    status, _ = await env.call(
        "PUT", "/directory/room/%23closed:test.local", owner["access_token"], {"room_id": closed}
    )
    assert status == 200
    for path in (
        f"/join/{closed}",
        f"/rooms/{closed}/join",
        "/join/%23closed:test.local",
        f"/rooms/{forbidden}/join",
    ):
        status, answer = await env.call("POST", path, token, {})
        assert (status, answer["errcode"]) == (403, "M_FORBIDDEN"), path
    assert await env.membership(closed, guest["user_id"]) is None
    # Non-guests are not affected.
    other = await env.user("other")
    status, _ = await env.call("POST", f"/join/{closed}", other["access_token"], {})
    assert status == 200
    # A can_join room: join, read, send, set state, leave.
    open_room = await env.room(owner["access_token"], "can_join")
    status, _ = await env.call("POST", f"/rooms/{open_room}/join", token, {})
    assert status == 200
    status, sent = await env.call(
        "PUT",
        f"/rooms/{open_room}/send/m.room.message/t1",
        token,
        {"msgtype": "m.text", "body": "hi"},
    )
    assert status == 200
    for path in (
        f"/rooms/{open_room}/messages?dir=b",
        f"/rooms/{open_room}/state",
        f"/rooms/{open_room}/members",
        f"/rooms/{open_room}/event/{sent['event_id']}",
        f"/rooms/{open_room}/context/{sent['event_id']}",
        f"/rooms/{open_room}/state/m.room.guest_access/",
    ):
        status, _ = await env.call("GET", path, token)
        assert status == 200, path
    status, _ = await env.call("POST", f"/rooms/{open_room}/leave", token, {})
    assert status == 200
    assert await env.membership(open_room, guest["user_id"]) == "leave"


async def test_guests_leave_when_guest_access_ends(env: Env) -> None:
    owner = await env.user("owner")
    member = await env.user("member")
    joined, invited = await env.guest(), await env.guest()
    room_id = await env.room(owner["access_token"], "can_join")
    for who in (joined, member):
        status, _ = await env.call("POST", f"/rooms/{room_id}/join", who["access_token"], {})
        assert status == 200
    status, _ = await env.call(
        "POST", f"/rooms/{room_id}/invite", owner["access_token"], {"user_id": invited["user_id"]}
    )
    assert status == 200
    status, _ = await env.call(
        "PUT",
        f"/rooms/{room_id}/state/m.room.guest_access/",
        owner["access_token"],
        {"guest_access": "forbidden"},
    )
    assert status == 200

    async def gone() -> bool:
        return (
            await env.membership(room_id, joined["user_id"]) == "leave"
            and await env.membership(room_id, invited["user_id"]) == "leave"
        )

    await wait_for(gone)
    assert await env.membership(room_id, member["user_id"]) == "join"
    assert await env.membership(room_id, owner["user_id"]) == "join"
    # The guest left by itself (its own leave event, no kick).
    state = await env.services.room_client.state_event(
        owner["user_id"], room_id, "m.room.member", joined["user_id"]
    )
    assert state.pdu["sender"] == joined["user_id"]
    stats = env.services.guests.statistics()
    assert stats.guests_removed == 2
    assert stats.rooms_dropped == 0
    # Joining again is refused now.
    status, answer = await env.call("POST", f"/rooms/{room_id}/join", joined["access_token"], {})
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")


async def test_join_checked_before_guest_access_ends_is_undone(env: Env) -> None:
    guests = env.services.guests
    owner = await env.user("owner")
    guest = await env.guest()
    room_id = await env.room(owner["access_token"], "can_join")
    requester = await env.services.accounts.authenticate(guest["access_token"])
    await guests.check_join(requester, room_id)  # allowed ...
    await env.services.room_client.set_state(
        owner["user_id"], room_id, "m.room.guest_access", "", {"guest_access": "forbidden"}
    )
    await trio.sleep(0.05)  # ... the removal ran and found no guest ...
    await env.services.room_client.membership(  # ... then the join lands
        guest["user_id"], room_id, guest["user_id"], "join"
    )

    async def gone() -> bool:
        return await env.membership(room_id, guest["user_id"]) == "leave"

    await wait_for(gone)


async def test_full_removal_queue_drops_and_counts(env: Env) -> None:
    guests = env.services.guests
    guests._send, guests._receive = trio.open_memory_channel[str](1)
    guests._queue("!a:test.local")
    guests._queue("!a:test.local")  # already queued: once
    guests._queue("!b:test.local")
    stats = guests.statistics()
    assert (stats.rooms_queued, stats.rooms_dropped) == (1, 1)


# --- upgrade -------------------------------------------------------------------------------


async def _register(env: Env, body: dict[str, object]) -> tuple[int, dict[str, Any]]:
    """POST /register through the dummy UIA stage."""
    status, answer = await env.call("POST", "/register", json=body)
    if status != 401 or "session" not in answer:
        return status, answer
    auth = {"type": "m.login.dummy", "session": answer["session"]}
    return await env.call("POST", "/register", json={**body, "auth": auth})


async def test_upgrade_keeps_the_user_id(env: Env) -> None:
    guest = await env.guest()
    old_token, user_id = guest["access_token"], guest["user_id"]
    owner = await env.user("owner")
    room_id = await env.room(owner["access_token"], "can_join")
    await env.call("POST", f"/rooms/{room_id}/join", old_token, {})
    await env.call("PUT", f"/profile/{user_id}/displayname", old_token, {"displayname": "Vis"})
    status, answer = await _register(
        env,
        {
            "username": "1",
            "password": PASSWORD,
            "guest_access_token": old_token,
            "initial_device_display_name": "Full phone",
        },
    )
    assert status == 200, answer
    assert answer["user_id"] == user_id
    token = answer["access_token"]
    assert answer["device_id"] != guest["device_id"]
    status, who = await env.call("GET", "/account/whoami", token)
    assert who["is_guest"] is False
    status, _ = await env.call("POST", "/createRoom", token, {})
    assert status == 200
    # The guest token is gone; the password logs in; the profile and rooms stay.
    status, answer = await env.call("GET", "/account/whoami", old_token)
    assert (status, answer["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    assert await env.services.accounts.login_password("1", PASSWORD) == user_id
    status, profile = await env.call("GET", f"/profile/{user_id}")
    assert profile == {"displayname": "Vis"}
    assert await env.membership(room_id, user_id) == "join"
    # No longer a guest: ending guest access leaves the account in the room.
    await env.services.room_client.set_state(
        owner["user_id"], room_id, "m.room.guest_access", "", {"guest_access": "forbidden"}
    )
    assert await env.services.guests.remove_guests(room_id) == []


async def test_upgrade_without_username_and_keeping_the_device(env: Env) -> None:
    guest = await env.guest()
    status, answer = await _register(
        env,
        {
            "password": PASSWORD,
            "guest_access_token": guest["access_token"],
            "device_id": guest["device_id"],
        },
    )
    assert status == 200, answer
    assert (answer["user_id"], answer["device_id"]) == (guest["user_id"], guest["device_id"])


async def test_upgrade_refusals(env: Env) -> None:
    guest = await env.guest()
    user = await env.user("someone")
    cases = [
        ({"guest_access_token": "nope"}, 401, "M_UNKNOWN_TOKEN"),
        ({"guest_access_token": user["access_token"]}, 403, "M_FORBIDDEN"),
        ({"guest_access_token": user["access_token"], "username": "someone"}, 403, "M_FORBIDDEN"),
        ({"guest_access_token": guest["access_token"], "username": "2"}, 403, "M_FORBIDDEN"),
        ({"guest_access_token": guest["access_token"], "username": "other"}, 403, "M_FORBIDDEN"),
        ({"guest_access_token": 7}, 400, "M_BAD_JSON"),
        ({"username": "123"}, 400, "M_INVALID_USERNAME"),
    ]
    for extra, code, errcode in cases:
        status, answer = await _register(env, {"password": PASSWORD, **extra})
        assert (status, answer.get("errcode")) == (code, errcode), extra
    status, who = await env.call("GET", "/account/whoami", guest["access_token"])
    assert who["is_guest"] is True


async def test_upgrade_needs_enable_registration(tmp_path: Path) -> None:
    async for e in _env(tmp_path, allow_guest_access=True):
        guest = await e.guest()
        status, answer = await _register(
            e, {"password": PASSWORD, "guest_access_token": guest["access_token"]}
        )
        assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")
