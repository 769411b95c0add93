"""Interop with a real Synapse: invites both ways, rejections both ways, and a knock.

- A Synapse user invites our user to a room on Synapse (``PUT /v2/invite`` to us):
  our /sync shows it with the stripped state; our user rejects it (``make_leave`` /
  ``v2/send_leave`` to Synapse) and Synapse sees the leave.
- Our user invites a Synapse user into a room here (we send ``PUT /v2/invite`` and
  store the event with Synapse's signature): Synapse's /sync shows it, the Synapse
  user joins (``make_join`` / ``send_join`` here) and messages cross; another Synapse
  user rejects our invite (Synapse's ``send_leave`` to us) and our /sync shows it.
- Our user knocks on a Synapse room whose join rule is ``knock`` (``make_knock`` /
  ``send_knock``): Synapse's admin sees the knock and invites; our /sync moves the
  room from ``knock`` to ``invite``.
- Our user accepts a Synapse invite: ``POST /join/{roomId}`` with no ``via`` joins
  through the inviting server.
- A Synapse invite is pushed to our user's push gateway with the room's name and the
  inviter's display name from the invite's stripped state (SyTest 61push).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.test_pushers import Gateway, _pusher
from tests.federation.conftest import pocket_tls_config
from tests.federation.synapse_peer import SynapsePeer, TestCA
from tests.federation.test_synapse_rooms import (
    Client,
    _has_message,
    _pocket_user,
    _synapse_user,
)
from tests.harness import RunningServer, running_server


@pytest.fixture(scope="module")
def pocket(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[RunningServer]:
    config = pocket_tls_config(tmp_path_factory.mktemp("pocket"), test_ca)
    with running_server(config) as server:
        yield server
    assert "Traceback" not in server.log_text(), server.log_text()[-5000:]


def _section(answer: dict[str, Any], kind: str) -> dict[str, Any]:
    return dict(answer.get("rooms", {}).get(kind, {}))


def _member_in_timeline(room_id: str, user_id: str, membership: str) -> Callable[[Any], bool]:
    return lambda a: any(
        ev.get("type") == "m.room.member"
        and ev.get("state_key") == user_id
        and ev.get("content", {}).get("membership") == membership
        for kind in ("join", "leave")
        for ev in _section(a, kind).get(room_id, {}).get("timeline", {}).get("events", [])
    )


def _membership_on(client: Client, room_id: str, user_id: str) -> str | None:
    r = client.http.get(
        f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.member/{quote(user_id)}"
    )
    return r.json().get("membership") if r.status_code == 200 else None


def test_synapse_invites_our_user_who_rejects(pocket: RunningServer, synapse: SynapsePeer) -> None:
    alice = _pocket_user(pocket, "alice")
    bob = _synapse_user(synapse, "bob")
    alice.wait_for(lambda a: True, "a first sync")
    room_id = bob.call("POST", "/createRoom", {"preset": "private_chat", "name": "Syn room"})[
        "room_id"
    ]
    bob.call("POST", f"/rooms/{quote(room_id)}/invite", {"user_id": alice.user_id})

    answer = alice.wait_for(lambda a: room_id in _section(a, "invite"), "bob's invite")
    state = _section(answer, "invite")[room_id]["invite_state"]["events"]
    by_type = {(ev["type"], ev["state_key"]): ev for ev in state}
    assert by_type[("m.room.name", "")]["content"] == {"name": "Syn room"}
    assert ("m.room.create", "") in by_type
    own = by_type[("m.room.member", alice.user_id)]
    assert (own["sender"], own["content"]["membership"]) == (bob.user_id, "invite")
    # An initial sync shows it too (it is the user's membership now).
    assert room_id in _section(alice.call("GET", "/sync"), "invite")
    # Push rules saw it (.m.rule.invite_for_me), as for a local invite.
    notified = alice.call("GET", "/notifications")["notifications"]
    assert [(n["room_id"], n["event"]["type"]) for n in notified] == [(room_id, "m.room.member")]

    alice.call("POST", f"/rooms/{quote(room_id)}/leave", {})
    left = alice.wait_for(lambda a: room_id in _section(a, "leave"), "her rejection")
    assert room_id not in _section(left, "invite")
    assert room_id not in _section(alice.call("GET", "/sync"), "invite")
    bob.wait_for(_member_in_timeline(room_id, alice.user_id, "leave"), "alice's rejection")
    assert _membership_on(bob, room_id, alice.user_id) == "leave"


def test_our_user_invites_synapse_users_one_joins_one_rejects(
    pocket: RunningServer, synapse: SynapsePeer
) -> None:
    alice = _pocket_user(pocket, "alice2")
    carol = _synapse_user(synapse, "carol")
    dave = _synapse_user(synapse, "dave")
    carol.wait_for(lambda a: True, "a first sync")
    dave.wait_for(lambda a: True, "a first sync")
    room_id = alice.call(
        "POST",
        "/createRoom",
        {"preset": "private_chat", "name": "Pi room", "invite": [carol.user_id]},
    )["room_id"]
    invited = carol.wait_for(lambda a: room_id in _section(a, "invite"), "alice's invite")
    names = [
        ev["content"].get("name")
        for ev in _section(invited, "invite")[room_id]["invite_state"]["events"]
        if ev["type"] == "m.room.name"
    ]
    assert names == ["Pi room"]
    # The stored invite carries Synapse's signature: it is in the room's state here.
    assert _membership_on(alice, room_id, carol.user_id) == "invite"

    carol.call("POST", f"/join/{quote(room_id)}", {})
    alice.wait_for(_member_in_timeline(room_id, carol.user_id, "join"), "carol's join")
    alice.send(room_id, "welcome carol")
    carol.wait_for(_has_message(room_id, "welcome carol"), "alice's message")
    carol.send(room_id, "thanks alice")
    alice.wait_for(_has_message(room_id, "thanks alice"), "carol's message")

    # Carol invites another of our users into this room, which lives here: Synapse's
    # PUT /v2/invite to us goes through the room writer like any event of the room.
    zoe = _pocket_user(pocket, "zoe")
    zoe.wait_for(lambda a: True, "a first sync")
    carol.call("POST", f"/rooms/{quote(room_id)}/invite", {"user_id": zoe.user_id})
    invited_here = zoe.wait_for(lambda a: room_id in _section(a, "invite"), "carol's invite")
    here_state = _section(invited_here, "invite")[room_id]["invite_state"]["events"]
    assert {"m.room.name", "m.room.create"} <= {ev["type"] for ev in here_state}
    assert _membership_on(alice, room_id, zoe.user_id) == "invite"
    zoe.call("POST", f"/join/{quote(room_id)}", {})
    carol.wait_for(_member_in_timeline(room_id, zoe.user_id, "join"), "zoe's join")

    # An invite written as a member state event goes the same way.
    ivan = _synapse_user(synapse, "ivan")
    ivan.wait_for(lambda a: True, "a first sync")
    alice.call(
        "PUT",
        f"/rooms/{quote(room_id)}/state/m.room.member/{quote(ivan.user_id)}",
        {"membership": "invite"},
    )
    ivan.wait_for(lambda a: room_id in _section(a, "invite"), "alice's invite as state")

    # Dave is invited through /invite and rejects: Synapse sends the leave to us.
    alice.call("POST", f"/rooms/{quote(room_id)}/invite", {"user_id": dave.user_id})
    dave.wait_for(lambda a: room_id in _section(a, "invite"), "alice's invite")
    dave.call("POST", f"/rooms/{quote(room_id)}/leave", {})
    alice.wait_for(_member_in_timeline(room_id, dave.user_id, "leave"), "dave's rejection")
    assert _membership_on(alice, room_id, dave.user_id) == "leave"


def test_our_user_knocks_on_a_synapse_room(pocket: RunningServer, synapse: SynapsePeer) -> None:
    alice = _pocket_user(pocket, "alice3")
    erin = _synapse_user(synapse, "erin")
    room_id = _knock_room(erin, "Knock here")
    erin.wait_for(lambda a: room_id in _section(a, "join"), "her room")
    alice.wait_for(lambda a: True, "a first sync")
    r = alice.http.post(
        f"/_matrix/client/v3/knock/{quote(room_id)}",
        params={"via": synapse.server_name},
        json={"reason": "may I?"},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"room_id": room_id}
    knocked = alice.wait_for(lambda a: room_id in _section(a, "knock"), "her knock")
    state = _section(knocked, "knock")[room_id]["knock_state"]["events"]
    assert {"m.room.name", "m.room.join_rules"} <= {ev["type"] for ev in state}
    erin.wait_for(_member_in_timeline(room_id, alice.user_id, "knock"), "alice's knock")

    erin.call("POST", f"/rooms/{quote(room_id)}/invite", {"user_id": alice.user_id})
    invited = alice.wait_for(lambda a: room_id in _section(a, "invite"), "erin's invite")
    assert room_id not in _section(invited, "knock")
    # (Joining now means joining a room on another server: not on this branch.)


def test_an_invite_from_an_ignored_user_is_not_shown(
    pocket: RunningServer, synapse: SynapsePeer
) -> None:
    """Accepted (and signed) but hidden, as Synapse does (client-server-api "Ignoring
    Users": nothing from an ignored user reaches the client)."""
    alice = _pocket_user(pocket, "alice6")
    yves = _synapse_user(synapse, "yves")
    wendy = _synapse_user(synapse, "wendy")
    alice.call(
        "PUT",
        f"/user/{quote(alice.user_id)}/account_data/m.ignored_user_list",
        {"ignored_users": {yves.user_id: {}}},
    )
    alice.wait_for(lambda a: True, "a first sync")
    ignored_room = yves.call("POST", "/createRoom", {"preset": "private_chat"})["room_id"]
    yves.call("POST", f"/rooms/{quote(ignored_room)}/invite", {"user_id": alice.user_id})
    other_room = wendy.call("POST", "/createRoom", {"preset": "private_chat"})["room_id"]
    wendy.call("POST", f"/rooms/{quote(other_room)}/invite", {"user_id": alice.user_id})
    answer = alice.wait_for(lambda a: other_room in _section(a, "invite"), "wendy's invite")
    assert ignored_room not in _section(answer, "invite")
    assert ignored_room not in _section(alice.call("GET", "/sync"), "invite")
    notified = alice.call("GET", "/notifications")["notifications"]
    assert [n["room_id"] for n in notified] == [other_room]


def _knock_room(owner: Client, name: str) -> str:
    return str(
        owner.call(
            "POST",
            "/createRoom",
            {
                "preset": "private_chat",
                "name": name,
                "initial_state": [
                    {
                        "type": "m.room.join_rules",
                        "state_key": "",
                        "content": {"join_rule": "knock"},
                    }
                ],
            },
        )["room_id"]
    )


def test_our_user_withdraws_a_knock(pocket: RunningServer, synapse: SynapsePeer) -> None:
    alice = _pocket_user(pocket, "alice4")
    frank = _synapse_user(synapse, "frank")
    room_id = _knock_room(frank, "Knock and go")
    alice.wait_for(lambda a: True, "a first sync")
    r = alice.http.post(
        f"/_matrix/client/v3/knock/{quote(room_id)}", params={"via": synapse.server_name}, json={}
    )
    assert r.status_code == 200, r.text
    alice.wait_for(lambda a: room_id in _section(a, "knock"), "her knock")
    frank.wait_for(_member_in_timeline(room_id, alice.user_id, "knock"), "alice's knock")
    alice.call("POST", f"/rooms/{quote(room_id)}/leave", {})
    left = alice.wait_for(lambda a: room_id in _section(a, "leave"), "her withdrawal")
    assert room_id not in _section(left, "knock")
    frank.wait_for(_member_in_timeline(room_id, alice.user_id, "leave"), "alice's withdrawal")


def test_a_synapse_user_knocks_on_our_room_and_is_invited(
    pocket: RunningServer, synapse: SynapsePeer
) -> None:
    """The resident side of a knock: our ``knock_room_state`` (full PDUs since v1.16)
    reaches the Synapse user's /sync; then our invite of a knocking user."""
    alice = _pocket_user(pocket, "alice7")
    henry = _synapse_user(synapse, "henry")
    room_id = _knock_room(alice, "Knock on the pi")
    henry.wait_for(lambda a: True, "a first sync")
    r = henry.http.post(
        f"/_matrix/client/v3/knock/{quote(room_id)}", params={"via": pocket.server_name}, json={}
    )
    assert r.status_code == 200, r.text
    knocked = henry.wait_for(lambda a: room_id in _section(a, "knock"), "his knock")
    names = [
        ev["content"].get("name")
        for ev in _section(knocked, "knock")[room_id]["knock_state"]["events"]
        if ev["type"] == "m.room.name"
    ]
    assert names == ["Knock on the pi"]
    alice.wait_for(_member_in_timeline(room_id, henry.user_id, "knock"), "henry's knock")
    alice.call("POST", f"/rooms/{quote(room_id)}/invite", {"user_id": henry.user_id})
    henry.wait_for(lambda a: room_id in _section(a, "invite"), "alice's invite")
    henry.call("POST", f"/join/{quote(room_id)}", {})
    alice.wait_for(_member_in_timeline(room_id, henry.user_id, "join"), "henry's join")


def test_our_user_accepts_a_synapse_invite(pocket: RunningServer, synapse: SynapsePeer) -> None:
    """Accepting a remote invite: POST /join/{roomId} with no ``via`` joins through the
    server that sent the invite (the invite's sender's server), the room's history and
    state reach our /sync, and Synapse sees the join."""
    alice = _pocket_user(pocket, "alice8")
    kim = _synapse_user(synapse, "kim")
    alice.wait_for(lambda a: True, "a first sync")
    room_id = kim.call("POST", "/createRoom", {"preset": "private_chat", "name": "Accept me"})[
        "room_id"
    ]
    kim.send(room_id, "before the invite")
    kim.call("POST", f"/rooms/{quote(room_id)}/invite", {"user_id": alice.user_id})
    alice.wait_for(lambda a: room_id in _section(a, "invite"), "kim's invite")

    r = alice.http.post(f"/_matrix/client/v3/join/{quote(room_id)}", json={})
    assert r.status_code == 200, r.text
    assert r.json() == {"room_id": room_id}
    joined = alice.wait_for(lambda a: room_id in _section(a, "join"), "the joined room")
    assert room_id not in _section(joined, "invite")
    kim.wait_for(_member_in_timeline(room_id, alice.user_id, "join"), "alice's join")
    assert _membership_on(kim, room_id, alice.user_id) == "join"
    assert _membership_on(alice, room_id, alice.user_id) == "join"

    kim.send(room_id, "welcome alice")
    alice.wait_for(_has_message(room_id, "welcome alice"), "kim's message after the join")
    alice.send(room_id, "thanks kim")
    kim.wait_for(_has_message(room_id, "thanks kim"), "alice's message")
    # The name set before the invite is in the room's state here.
    name = alice.call("GET", f"/rooms/{quote(room_id)}/state/m.room.name")
    assert name == {"name": "Accept me"}


def test_synapse_invite_is_pushed_with_the_room_name(
    pocket: RunningServer, synapse: SynapsePeer
) -> None:
    # The room is not on our server: its name and the inviter's display name come from
    # the stripped state that came with the invite (core/pushers.stripped_room_facts).
    gateway = Gateway()
    try:
        pia = _pocket_user(pocket, "pia")
        vic = _synapse_user(synapse, "vic")
        vic.call("PUT", f"/profile/{quote(vic.user_id)}/displayname", {"displayname": "Vic"})
        pia.call("POST", "/pushers/set", _pusher(gateway.url, "pia-key"))
        room_id = vic.call("POST", "/createRoom", {"preset": "private_chat", "name": "Push room"})[
            "room_id"
        ]
        vic.call("POST", f"/rooms/{quote(room_id)}/invite", {"user_id": pia.user_id})
        note = gateway.wait_for("pia-key", 1, timeout=30.0)[0]
        assert {k: note.get(k) for k in ("type", "room_id", "sender", "membership")} == {
            "type": "m.room.member",
            "room_id": room_id,
            "sender": vic.user_id,
            "membership": "invite",
        }
        assert note["user_is_target"] is True
        assert note["room_name"] == "Push room"
        assert note["sender_display_name"] == "Vic"
    finally:
        gateway.close()


def test_an_invite_from_a_server_that_is_gone_can_be_rejected(
    pocket: RunningServer, synapse: SynapsePeer
) -> None:
    """Last in this module: it stops Synapse. The rejection cannot reach the inviting
    server, so it is made here only (as Synapse's "locally rejected" invites): the user
    is rid of the invite all the same."""
    alice = _pocket_user(pocket, "alice5")
    grace = _synapse_user(synapse, "grace")
    alice.wait_for(lambda a: True, "a first sync")
    room_id = grace.call("POST", "/createRoom", {"preset": "private_chat"})["room_id"]
    grace.call("POST", f"/rooms/{quote(room_id)}/invite", {"user_id": alice.user_id})
    alice.wait_for(lambda a: room_id in _section(a, "invite"), "grace's invite")
    synapse.stop()
    alice.call("POST", f"/rooms/{quote(room_id)}/leave", {})
    left = alice.wait_for(lambda a: room_id in _section(a, "leave"), "her rejection")
    events = _section(left, "leave")[room_id]["timeline"]["events"]
    assert [(ev["type"], ev["content"]["membership"]) for ev in events] == [
        ("m.room.member", "leave")
    ]
    assert room_id not in _section(alice.call("GET", "/sync"), "invite")
