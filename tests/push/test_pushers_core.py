"""The pushers/set body and the push gateway payload (core/pushers.py): table-driven."""

from __future__ import annotations

import pytest

from pocketserver.core.pushers import (
    PusherError,
    PusherRemoval,
    PusherSettings,
    RoomFacts,
    device_entry,
    notification,
    parse_set_body,
    priority,
    stripped_room_facts,
    tweaks_of,
)

URL = "https://push.example.org/_matrix/push/v1/notify"


def body(**changes: object) -> dict[str, object]:
    out: dict[str, object] = {
        "kind": "http",
        "app_id": "org.example.app",
        "pushkey": "key",
        "app_display_name": "App",
        "device_display_name": "Phone",
        "lang": "en",
        "data": {"url": URL},
    }
    for name, value in changes.items():
        if value is ...:
            del out[name]
        else:
            out[name] = value
    return out


def test_a_full_body() -> None:
    parsed = parse_set_body(
        body(profile_tag="t", append=True, data={"url": URL, "format": "event_id_only", "x": 1})
    )
    assert parsed == PusherSettings(
        app_id="org.example.app",
        pushkey="key",
        kind="http",
        app_display_name="App",
        device_display_name="Phone",
        profile_tag="t",
        lang="en",
        data={"url": URL, "format": "event_id_only", "x": 1},
        append=True,
    )


def test_defaults_and_removal() -> None:
    parsed = parse_set_body(body(append=None))
    assert isinstance(parsed, PusherSettings)
    assert parsed.append is False
    assert parsed.profile_tag is None
    # kind null needs only app_id and pushkey; the rest is ignored.
    assert parse_set_body({"kind": None, "app_id": "a", "pushkey": "k"}) == PusherRemoval("a", "k")


def test_limits_are_inclusive() -> None:
    assert isinstance(parse_set_body(body(app_id="a" * 64, pushkey="é" * 256)), PusherSettings)
    assert isinstance(
        parse_set_body(body(data={"url": "http://10.0.0.2:8080/gw/_matrix/push/v1/notify"})),
        PusherSettings,
    )


@pytest.mark.parametrize(
    ("changes", "errcode", "words"),
    [
        ({"kind": ...}, "M_MISSING_PARAM", "kind"),
        ({"app_id": ..., "pushkey": ...}, "M_MISSING_PARAM", "app_id, pushkey"),
        ({"lang": ..., "data": ...}, "M_MISSING_PARAM", "lang, data"),
        ({"app_display_name": None}, "M_MISSING_PARAM", "app_display_name"),
        ({"data": {"format": "event_id_only"}}, "M_MISSING_PARAM", "url"),
        ({"kind": 1}, "M_BAD_JSON", "kind"),
        ({"app_id": 1}, "M_BAD_JSON", "app_id"),
        ({"device_display_name": []}, "M_BAD_JSON", "device_display_name"),
        ({"data": []}, "M_BAD_JSON", "data"),
        ({"data": {"url": None, "x": 1}}, "M_MISSING_PARAM", "url"),
        ({"data": {"url": ["x"]}}, "M_BAD_JSON", "url"),
        ({"data": {"url": URL, "format": {}}}, "M_BAD_JSON", "format"),
        ({"append": 1}, "M_BAD_JSON", "append"),
        ({"kind": "email"}, "M_INVALID_PARAM", "email"),
        ({"app_id": "a" * 65}, "M_INVALID_PARAM", "app_id"),
        ({"pushkey": "é" * 257}, "M_INVALID_PARAM", "512 bytes"),
        ({"lang": "x" * 1025}, "M_INVALID_PARAM", "lang"),
        ({"data": {"url": "https://push.example.org/notify"}}, "M_INVALID_PARAM", "path"),
        ({"data": {"url": "mailto:x/_matrix/push/v1/notify"}}, "M_INVALID_PARAM", "http"),
        ({"data": {"url": "https:///_matrix/push/v1/notify"}}, "M_INVALID_PARAM", "http"),
        ({"data": {"url": "https://h:99999/_matrix/push/v1/notify"}}, "M_INVALID_PARAM", "URL"),
        ({"data": {"url": "https://h:0/_matrix/push/v1/notify"}}, "M_INVALID_PARAM", "http"),
    ],
)
def test_errors(changes: dict[str, object], errcode: str, words: str) -> None:
    with pytest.raises(PusherError) as caught:
        parse_set_body(body(**changes))
    assert caught.value.errcode == errcode
    assert words in str(caught.value)


def test_tweaks_and_priority() -> None:
    actions = ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]
    assert tweaks_of(actions) == {"sound": "default", "highlight": True}
    assert tweaks_of(["notify", {"set_tweak": "highlight", "value": False}, "x", {}]) == {
        "highlight": False
    }
    assert priority("m.room.message", {}) == "low"
    assert priority("m.room.message", {"highlight": False}) == "low"
    assert priority("m.room.message", {"highlight": True}) == "high"
    assert priority("m.room.message", {"sound": "default"}) == "high"
    assert priority("m.room.encrypted", {}) == "high"


PDU = {
    "type": "m.room.member",
    "sender": "@a:hs",
    "state_key": "@b:hs",
    "content": {"membership": "invite"},
}


def test_full_notification() -> None:
    device = device_entry("app", "key", 1_700_000_123_456, {"url": URL, "format": "x"}, {})
    assert device == {
        "app_id": "app",
        "pushkey": "key",
        "pushkey_ts": 1_700_000_123,
        "data": {"format": "x"},
        "tweaks": {},
    }
    body = notification(
        user_id="@b:hs",
        pdu=PDU,
        event_id="$e",
        room_id="!r:hs",
        unread=3,
        device=device,
        event_id_only=False,
        room=RoomFacts("Room", "#room:hs", "Alice"),
    )
    assert body == {
        "notification": {
            "event_id": "$e",
            "room_id": "!r:hs",
            "id": "$e",
            "type": "m.room.member",
            "sender": "@a:hs",
            "sender_display_name": "Alice",
            "room_name": "Room",
            "room_alias": "#room:hs",
            "user_is_target": True,
            "membership": "invite",
            "content": {"membership": "invite"},
            "prio": "low",
            "counts": {"unread": 3},
            "devices": [device],
        }
    }


def test_event_id_only_and_zero_counts() -> None:
    device = device_entry("app", "key", 0, {"url": URL}, {"highlight": True})
    body = notification(
        user_id="@c:hs",
        pdu={"type": "m.room.message", "sender": "@a:hs", "content": {}},
        event_id="$e",
        room_id="!r:hs",
        unread=0,
        device=device,
        event_id_only=True,
        room=RoomFacts("ignored"),
    )
    assert body == {
        "notification": {
            "event_id": "$e",
            "room_id": "!r:hs",
            "prio": "high",
            "counts": {},
            "devices": [device],
        }
    }
    full = notification(
        user_id="@c:hs",
        pdu={"type": "m.room.message", "sender": "@a:hs", "content": {}},
        event_id="$e",
        room_id="!r:hs",
        unread=0,
        device=device,
        event_id_only=False,
        room=RoomFacts(),
    )["notification"]
    assert isinstance(full, dict)
    assert "content" not in full  # empty content is omitted
    assert "room_name" not in full
    assert "user_is_target" not in full
    assert "membership" not in full
    assert full["id"] == "$e"


def _stripped(kind: str, key: str, **content: object) -> dict[str, object]:
    return {"type": kind, "state_key": key, "sender": "@x:r", "content": content}


STRIPPED_CASES: list[tuple[dict[str, object], list[dict[str, object]], RoomFacts]] = [
    (  # an invite: the name, the alias and the inviter's member event of the stripped state
        {"sender": "@bob:r", "state_key": "@me:hs", "content": {"membership": "invite"}},
        [
            _stripped("m.room.name", "", name="Room"),
            _stripped("m.room.canonical_alias", "", alias="#r:r"),
            _stripped("m.room.member", "@bob:r", membership="join", displayname="Bob"),
        ],
        RoomFacts(room_name="Room", room_alias="#r:r", sender_display_name="Bob"),
    ),
    (  # no name: the alias names the room; no member event of the sender
        {"sender": "@bob:r", "state_key": "@me:hs", "content": {"displayname": "Me"}},
        [_stripped("m.room.canonical_alias", "", alias="#r:r"), _stripped("m.room.name", "x")],
        RoomFacts(room_name="#r:r", room_alias="#r:r"),
    ),
    (  # a knock: the sender's own display name in the event; malformed state ignored
        {"sender": "@me:hs", "state_key": "@me:hs", "content": {"displayname": "Me"}},
        [_stripped("m.room.name", "", name=5), {"type": "m.room.canonical_alias"}],
        RoomFacts(sender_display_name="Me"),
    ),
]


@pytest.mark.parametrize(("pdu", "state", "expected"), STRIPPED_CASES)
def test_stripped_room_facts(
    pdu: dict[str, object], state: list[dict[str, object]], expected: RoomFacts
) -> None:
    assert stripped_room_facts(pdu, state) == expected
