"""Redactions and moderation verbs through the real server, from the attacker's side:
each refused request answers the spec's error and a follow-up read shows nothing
changed (issue #9)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.e2e.clients import V3, User, close_all, err
from tests.harness import RunningServer, make_config, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = make_config(tmp_path_factory.mktemp("moderation"))
    with running_server(config) as s:
        yield s
        close_all()
    assert "Traceback" not in s.log_text(), s.log_text()


def redact(user: User, room: str, event_id: str, txn: str):  # type: ignore[no-untyped-def]
    return user.http.put(f"{V3}/rooms/{room}/redact/{quote(event_id)}/{txn}", json={})


def content_of(user: User, room: str, event_id: str) -> dict[str, object]:
    return dict(user.ok(f"/rooms/{room}/event/{quote(event_id)}")["content"])


def membership(user: User, room: str, target: str) -> str | None:
    r = user.get(f"/rooms/{room}/state/m.room.member/{target}")
    return r.json().get("membership") if r.status_code == 200 else None


def timeline_len(user: User, room: str) -> int:
    r = user.ok(f"/rooms/{room}/messages", dir="b", limit="100")
    return len(r["chunk"])


@pytest.mark.parametrize("version", ["1", "10", "11", "12"])
def test_power_level_zero_cannot_redact_others(server: RunningServer, version: str) -> None:
    alice, bob = User(server, f"ra{version}"), User(server, f"rb{version}")
    room = alice.create(preset="public_chat", room_version=version)
    bob.join(room)
    message = alice.text(room, "mine")
    before = timeline_len(alice, room)

    r = redact(bob, room, message, "bad1")
    assert err(r) == (403, "M_FORBIDDEN"), r.text
    assert content_of(alice, room, message)["body"] == "mine"
    assert content_of(bob, room, message)["body"] == "mine"
    assert timeline_len(alice, room) == before
    # An event the server does not know: only one's own may be redacted, so 404.
    unknown = "$doesnotexist:" + server.server_name if version == "1" else "$doesnotexist"
    assert err(redact(bob, room, unknown, "bad2")) == (404, "M_NOT_FOUND")

    # His own message Bob may redact; Alice (room creator, 100) may redact his.
    own = bob.text(room, "his")
    assert redact(bob, room, own, "ok1").status_code == 200
    assert content_of(alice, room, own) == {}
    other = bob.text(room, "his too")
    assert redact(alice, room, other, "ok2").status_code == 200
    assert content_of(bob, room, other) == {}


def test_redaction_of_another_rooms_event(server: RunningServer) -> None:
    alice = User(server, "xroom")
    room, elsewhere = alice.create(), alice.create()
    message = alice.text(elsewhere, "keep me")
    assert err(redact(alice, room, message, "x1")) == (400, "M_INVALID_PARAM")
    assert content_of(alice, elsewhere, message)["body"] == "keep me"


def test_kick_of_banned_or_absent_user_is_refused(server: RunningServer) -> None:
    alice, bob, carol = User(server, "ka"), User(server, "kb"), User(server, "kc")
    room = alice.create(preset="public_chat")
    bob.join(room)
    assert alice.post(f"/rooms/{room}/ban", {"user_id": bob.user_id}).status_code == 200
    before = timeline_len(alice, room)

    r = alice.post(f"/rooms/{room}/kick", {"user_id": bob.user_id})
    assert err(r) == (403, "M_FORBIDDEN"), r.text
    assert membership(alice, room, bob.user_id) == "ban"
    assert err(bob.post(f"/rooms/{room}/join")) == (403, "M_FORBIDDEN")  # still banned

    r = alice.post(f"/rooms/{room}/kick", {"user_id": carol.user_id})
    assert err(r) == (403, "M_FORBIDDEN"), r.text
    assert membership(alice, room, carol.user_id) is None
    assert timeline_len(alice, room) == before

    # A member, or a pending invite, may be kicked.
    carol.join(room)
    assert alice.post(f"/rooms/{room}/kick", {"user_id": carol.user_id}).status_code == 200
    assert membership(alice, room, carol.user_id) == "leave"


def test_banned_user_may_not_read_the_room_state(server: RunningServer) -> None:
    """A banned user is refused the room's state (Synapse's 403; SyTest 30rooms/07ban.pl),
    while one who left reads it as it was when they left; a world-readable room is
    readable by anyone."""
    alice, bob, carol = User(server, "sba"), User(server, "sbb"), User(server, "sbc")
    room = alice.create(preset="public_chat")
    bob.join(room)
    carol.join(room)
    assert bob.get(f"/rooms/{room}/state/m.room.member/{bob.user_id}").status_code == 200
    assert alice.post(f"/rooms/{room}/ban", {"user_id": bob.user_id}).status_code == 200
    assert carol.post(f"/rooms/{room}/leave").status_code == 200

    for path in (f"/state/m.room.member/{bob.user_id}", "/state", "/members"):
        assert err(bob.get(f"/rooms/{room}{path}")) == (403, "M_FORBIDDEN"), path
    assert membership(carol, room, carol.user_id) == "leave"
    assert membership(alice, room, bob.user_id) == "ban"

    r = alice.http.put(
        f"{V3}/rooms/{room}/state/m.room.history_visibility",
        json={"history_visibility": "world_readable"},
    )
    assert r.status_code == 200, r.text
    assert membership(bob, room, bob.user_id) == "ban"


def test_unban_and_invite_follow_the_target_membership(server: RunningServer) -> None:
    alice, bob, carol = User(server, "ua"), User(server, "ub"), User(server, "uc")
    room = alice.create(preset="public_chat")
    bob.join(room)
    before = timeline_len(alice, room)
    # Unban of someone not banned (a member, a stranger) would write a leave: refused.
    assert err(alice.post(f"/rooms/{room}/unban", {"user_id": bob.user_id})) == (
        403,
        "M_BAD_STATE",
    )
    assert membership(alice, room, bob.user_id) == "join"
    assert err(alice.post(f"/rooms/{room}/unban", {"user_id": carol.user_id})) == (
        403,
        "M_BAD_STATE",
    )
    assert membership(alice, room, carol.user_id) is None
    # Inviting a member is refused by the auth rules.
    assert err(alice.post(f"/rooms/{room}/invite", {"user_id": bob.user_id})) == (
        403,
        "M_FORBIDDEN",
    )
    assert timeline_len(alice, room) == before

    assert alice.post(f"/rooms/{room}/ban", {"user_id": bob.user_id}).status_code == 200
    r = alice.post(f"/rooms/{room}/invite", {"user_id": bob.user_id})
    assert err(r) == (403, "M_FORBIDDEN"), r.text
    assert membership(alice, room, bob.user_id) == "ban"
    # Bob, at power level 0, cannot lift his own ban.
    r = bob.post(f"/rooms/{room}/unban", {"user_id": bob.user_id})
    assert err(r) == (403, "M_FORBIDDEN"), r.text
    assert membership(alice, room, bob.user_id) == "ban"

    assert alice.post(f"/rooms/{room}/unban", {"user_id": bob.user_id}).status_code == 200
    assert membership(alice, room, bob.user_id) == "leave"
    bob.join(room)
