"""Two pocketservers (real subprocesses, as test_pocket_pair.py): what a server does for
rooms held by the other one.

- A room upgraded on A: when bob of B joins the new room, B moves its own aliases of
  the old room, its public directory entry and bob's tags and ``m.direct`` to the new
  room (Synapse's ``transfer_room_state_on_room_upgrade``; SyTest
  30rooms/60version_upgrade.pl, 42tags.pl). A room that only *claims* a predecessor
  (no tombstone there names it) moves nothing.
- A third-party invite to a room on A, bound to bob of B: the identity server's
  ``/3pid/onbind`` reaches B, which has A (the inviter's server) exchange the invite
  (``/exchange_third_party_invite``); bob is invited and can join (server-server-api
  "Third-party invites"; SyTest 30rooms/12thirdpartyinvite.pl). A forged binding is
  refused by A and changes nothing.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.e2e.fake_identity import ACCESS_TOKEN, FakeIdentityServer, make_tls, serving, sign
from tests.federation.conftest import federation_url, pocket_tls_config
from tests.federation.synapse_peer import TestCA
from tests.federation.test_synapse_rooms import Client, _pocket_user, _timeline
from tests.harness import RunningServer, running_server


def _pocket(
    tmp_path_factory: pytest.TempPathFactory, ca: TestCA, host: str
) -> Iterator[RunningServer]:
    config = pocket_tls_config(
        tmp_path_factory.mktemp(f"pocket-{host}"),
        ca,
        host=host,
        # The fake identity server's certificate is its own (not the federation CA's).
        use_insecure_ssl_client_just_for_testing_do_not_use=True,
    )
    with running_server(config) as server:
        yield server
    assert "Traceback" not in server.log_text(), server.log_text()[-5000:]


@pytest.fixture(scope="module")
def server_a(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[RunningServer]:
    yield from _pocket(tmp_path_factory, test_ca, "127.0.0.2")


@pytest.fixture(scope="module")
def server_b(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[RunningServer]:
    yield from _pocket(tmp_path_factory, test_ca, "127.0.0.3")


def _state_event(room_id: str, event_type: str) -> Callable[[Any], bool]:
    return lambda a: any(ev.get("type") == event_type for ev in _timeline(a, room_id))


def _member(room_id: str, user_id: str, membership: str) -> Callable[[Any], bool]:
    return lambda a: any(
        ev.get("type") == "m.room.member"
        and ev.get("state_key") == user_id
        and ev.get("content", {}).get("membership") == membership
        for ev in _timeline(a, room_id)
    )


def _join_on(user: Client, room_id: str, server: RunningServer) -> None:
    answer = user.call("POST", f"/join/{quote(room_id)}", {}, server_name=server.server_name)
    assert answer == {"room_id": room_id}


def _alias_target(user: Client, alias: str) -> str:
    return str(user.call("GET", f"/directory/room/{quote(alias)}")["room_id"])


def _public_ids(user: Client) -> set[str]:
    return {r["room_id"] for r in user.call("GET", "/publicRooms")["chunk"]}


def _tags(user: Client, room_id: str) -> dict[str, Any]:
    path = f"/user/{quote(user.user_id)}/rooms/{quote(room_id)}/tags"
    return dict(user.call("GET", path)["tags"])


def test_joining_a_room_upgraded_elsewhere_carries_our_state_over(
    server_a: RunningServer, server_b: RunningServer
) -> None:
    alice = _pocket_user(server_a, "alice")
    bob = _pocket_user(server_b, "bob")
    old = alice.call("POST", "/createRoom", {"preset": "public_chat", "room_version": "10"})[
        "room_id"
    ]
    _join_on(bob, old, server_a)
    levels = alice.call("GET", f"/rooms/{quote(old)}/state/m.room.power_levels")
    levels["users"][bob.user_id] = 100
    alice.call("PUT", f"/rooms/{quote(old)}/state/m.room.power_levels", levels)
    bob.wait_for(_state_event(old, "m.room.power_levels"), "bob's new power level")
    # On B: an alias, the public directory, a tag and m.direct, all for the old room.
    alias = f"#old-room:{server_b.server_name}"
    bob.call("PUT", f"/directory/room/{quote(alias)}", {"room_id": old})
    bob.call("PUT", f"/directory/list/room/{quote(old)}", {"visibility": "public"})
    bob.call("PUT", f"/user/{quote(bob.user_id)}/rooms/{quote(old)}/tags/u.work", {"order": 0.5})
    bob.call("PUT", f"/user/{quote(bob.user_id)}/account_data/m.direct", {alice.user_id: [old]})
    assert old in _public_ids(bob)

    # A room of A that names the old room as its predecessor without any tombstone:
    # joining it moves nothing.
    claim = alice.call(
        "POST",
        "/createRoom",
        {"preset": "public_chat", "creation_content": {"predecessor": {"room_id": old}}},
    )["room_id"]
    _join_on(bob, claim, server_a)
    assert _alias_target(bob, alias) == old
    assert _tags(bob, claim) == {}
    assert old in _public_ids(bob)
    assert claim not in _public_ids(bob)

    new = alice.call("POST", f"/rooms/{quote(old)}/upgrade", {"new_version": "11"})[
        "replacement_room"
    ]
    bob.wait_for(_state_event(old, "m.room.tombstone"), "the tombstone")
    _join_on(bob, new, server_a)
    # Once joined (no waiting: the join's answer comes after the carry-over).
    assert _tags(bob, new) == {"u.work": {"order": 0.5}}
    assert _alias_target(bob, alias) == new
    public = _public_ids(bob)
    assert new in public
    assert old not in public
    direct = bob.call("GET", f"/user/{quote(bob.user_id)}/account_data/m.direct")
    assert direct == {alice.user_id: [old, new]}
    # The old room keeps its tag; the claiming room still has none.
    assert _tags(bob, old) == {"u.work": {"order": 0.5}}
    assert _tags(bob, claim) == {}


# --- third-party invites ------------------------------------------------------------------


@pytest.fixture
def ids(tmp_path: Path) -> Iterator[FakeIdentityServer]:
    with serving(FakeIdentityServer(make_tls(tmp_path, "ids"))) as fake:
        yield fake


def _onbind(server: RunningServer, ca: TestCA, body: dict[str, Any]) -> httpx.Response:
    """The identity server's call, at the invitee's server's federation listener."""
    context = ssl.create_default_context(cafile=str(ca.ca_path))
    with httpx.Client(base_url=federation_url(server), verify=context, timeout=60) as c:
        return c.post("/_matrix/federation/v1/3pid/onbind", json=body)


def _invite_by_email(alice: Client, room_id: str, ids: FakeIdentityServer, address: str) -> None:
    body = {
        "id_server": ids.name,
        "id_access_token": ACCESS_TOKEN,
        "medium": "email",
        "address": address,
    }
    alice.call("POST", f"/rooms/{quote(room_id)}/invite", body)


def _member_state(user: Client, room_id: str, target: str) -> dict[str, Any] | None:
    r = user.http.get(
        f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.member/{quote(target)}"
    )
    return dict(r.json()) if r.status_code == 200 else None


def test_a_third_party_invite_is_exchanged_with_the_inviters_server(
    server_a: RunningServer, server_b: RunningServer, ids: FakeIdentityServer, test_ca: TestCA
) -> None:
    alice = _pocket_user(server_a, "alice3")
    bob = _pocket_user(server_b, "bob3")
    mallory = _pocket_user(server_b, "mallory3")
    room = alice.call("POST", "/createRoom", {"preset": "private_chat"})["room_id"]
    _invite_by_email(alice, room, ids, "bob3@example.org")
    _invite_by_email(alice, room, ids, "carol3@example.org")

    # A forged binding (signed by a key that is not the identity server's) for mallory:
    # B passes it on, A refuses it, nothing is written anywhere.
    forged = ids.onbind_body("carol3@example.org", mallory.user_id)
    for invite in forged["invites"]:
        invite["signed"] = {"mxid": mallory.user_id, "token": invite["token"]}
        sign(invite["signed"], FakeIdentityServer(ids.tls).long_term, ids.name)
    r = _onbind(server_b, test_ca, forged)
    assert r.status_code == 403, r.text
    assert _member_state(alice, room, mallory.user_id) is None

    # The real binding for bob: invited through A, then joined.
    r = _onbind(server_b, test_ca, ids.onbind_body("bob3@example.org", bob.user_id))
    assert r.status_code == 200, r.text
    invited = bob.wait_for(lambda a: room in a.get("rooms", {}).get("invite", {}), "the invite")
    stripped = invited["rooms"]["invite"][room]["invite_state"]["events"]
    assert any(e["type"] == "m.room.member" and e["state_key"] == alice.user_id for e in stripped)
    member = _member_state(alice, room, bob.user_id)
    assert member is not None
    assert member["membership"] == "invite"
    assert member["third_party_invite"]["display_name"] == "l...@m..."
    assert bob.call("POST", f"/join/{quote(room)}", {}) == {"room_id": room}
    alice.wait_for(_member(room, bob.user_id, "join"), "bob's join")
    assert _member_state(alice, room, mallory.user_id) is None


def test_a_third_party_invite_from_the_other_server_in_a_shared_room(
    server_a: RunningServer, server_b: RunningServer, ids: FakeIdentityServer, test_ca: TestCA
) -> None:
    """B is in the room too, but only A can sign as the inviter: A exchanges it."""
    alice = _pocket_user(server_a, "alice4")
    bob = _pocket_user(server_b, "bob4")
    dan = _pocket_user(server_b, "dan4")
    room = alice.call("POST", "/createRoom", {"preset": "private_chat"})["room_id"]
    alice.call("POST", f"/rooms/{quote(room)}/invite", {"user_id": dan.user_id})
    dan.wait_for(lambda a: room in a.get("rooms", {}).get("invite", {}), "dan's invite")
    assert dan.call("POST", f"/join/{quote(room)}", {}) == {"room_id": room}
    _invite_by_email(alice, room, ids, "bob4@example.org")
    dan.wait_for(_state_event(room, "m.room.third_party_invite"), "the third-party invite")
    r = _onbind(server_b, test_ca, ids.onbind_body("bob4@example.org", bob.user_id))
    assert r.status_code == 200, r.text
    member = _member_state(alice, room, bob.user_id)
    assert member is not None
    assert member["membership"] == "invite"
    bob.wait_for(lambda a: room in a.get("rooms", {}).get("invite", {}), "the invite")
    assert bob.call("POST", f"/join/{quote(room)}", {}) == {"room_id": room}
    alice.wait_for(_member(room, bob.user_id, "join"), "bob's join")
