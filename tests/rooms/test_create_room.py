"""createRoom: the spec's event order, presets, initial_state, invites, power levels."""

from __future__ import annotations

from typing import Any

import pytest

from pocketserver.core.events import compute_room_id_v12
from pocketserver.core.room_versions import get_room_version
from pocketserver.errors import MatrixError
from pocketserver.rooms.create import RoomSettings, create_room
from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage.db import Database

from .conftest import (
    ALICE,
    ALL_VERSIONS,
    BOB,
    CAROL,
    current_state,
    event_count,
    extremities,
    rows,
    stored,
)


def room_events(db: Database, room_id: str) -> list[dict[str, Any]]:
    return [
        stored(db, eid).pdu
        for (eid,) in rows(
            db, "SELECT event_id FROM events WHERE room_id = ? ORDER BY stream_ordering", room_id
        )
    ]


def state_content(db: Database, room_id: str, etype: str, state_key: str = "") -> dict[str, Any]:
    event_id = current_state(db, room_id)[(etype, state_key)]
    content = stored(db, event_id).pdu["content"]
    assert isinstance(content, dict)
    return content


@pytest.mark.parametrize("version", ALL_VERSIONS)
async def test_create_room_every_version(writer: RoomWriter, db: Database, version: str):
    settings = RoomSettings(
        room_version=version,
        name="Room",
        topic="Topic",
        canonical_alias="#room:local.test",
        invite=[BOB],
    )
    room_id = await create_room(writer, ALICE, settings)
    events = room_events(db, room_id)
    order = [(e["type"], e.get("state_key")) for e in events]
    assert order == [
        ("m.room.create", ""),
        ("m.room.member", ALICE),
        ("m.room.power_levels", ""),
        ("m.room.canonical_alias", ""),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        ("m.room.guest_access", ""),
        ("m.room.name", ""),
        ("m.room.topic", ""),
        ("m.room.member", BOB),
    ]
    rv = get_room_version(version)
    create_id = current_state(db, room_id)[("m.room.create", "")]
    if rv.hydra:
        assert room_id == compute_room_id_v12(events[0])
        assert create_id == "$" + room_id[1:]
    else:
        assert events[0]["room_id"] == room_id
    if rv.event_ids_in_pdu:
        assert all("event_id" in e for e in events)
        assert all(isinstance(p, list) for e in events[1:] for p in e["prev_events"])
    memberships = dict(
        rows(
            db,
            "SELECT state_key, membership FROM current_state WHERE room_id = ?"
            " AND type = 'm.room.member'",
            room_id,
        )
    )
    assert memberships == {ALICE: "join", BOB: "invite"}
    pl = state_content(db, room_id, "m.room.power_levels")
    if rv.hydra:
        assert pl["users"] == {}
        assert pl["events"]["m.room.tombstone"] == 150 > pl["state_default"]
    else:
        assert pl["users"] == {ALICE: 100}
    assert state_content(db, room_id, "m.room.name") == {"name": "Room"}
    topic = state_content(db, room_id, "m.room.topic")
    assert topic["topic"] == "Topic"
    assert topic["m.topic"] == {"m.text": [{"mimetype": "text/plain", "body": "Topic"}]}
    assert state_content(db, room_id, "m.room.canonical_alias") == {"alias": "#room:local.test"}
    assert extremities(db, room_id) == {current_state(db, room_id)[("m.room.member", BOB)]}


@pytest.mark.parametrize(
    ("preset", "join_rule", "history", "guest"),
    [
        ("private_chat", "invite", "shared", "can_join"),
        ("trusted_private_chat", "invite", "shared", "can_join"),
        ("public_chat", "public", "shared", ""),
    ],
)
async def test_presets(
    writer: RoomWriter, db: Database, preset: str, join_rule: str, history: str, guest: str
):
    room_id = await create_room(writer, ALICE, RoomSettings(room_version="10", preset=preset))
    assert state_content(db, room_id, "m.room.join_rules") == {"join_rule": join_rule}
    assert state_content(db, room_id, "m.room.history_visibility") == {
        "history_visibility": history
    }
    if guest:
        assert state_content(db, room_id, "m.room.guest_access") == {"guest_access": guest}
    else:  # public_chat: no event, which means forbidden (as Synapse)
        assert ("m.room.guest_access", "") not in current_state(db, room_id)


async def test_initial_state_beats_preset_and_name_topic_beat_initial_state(
    writer: RoomWriter, db: Database
):
    settings = RoomSettings(
        room_version="11",
        preset="private_chat",
        name="From name",
        initial_state=[
            ("m.room.join_rules", "", {"join_rule": "public"}),
            ("m.room.name", "", {"name": "From initial_state"}),
            ("org.example.custom", "k", {"x": 1}),
            ("m.room.history_visibility", "", {"history_visibility": "joined"}),
        ],
    )
    room_id = await create_room(writer, ALICE, settings)
    assert state_content(db, room_id, "m.room.join_rules") == {"join_rule": "public"}
    assert state_content(db, room_id, "m.room.history_visibility") == {
        "history_visibility": "joined"
    }
    assert state_content(db, room_id, "m.room.guest_access") == {"guest_access": "can_join"}
    assert state_content(db, room_id, "org.example.custom", "k") == {"x": 1}
    assert state_content(db, room_id, "m.room.name") == {"name": "From name"}
    types = [(e["type"], e.get("state_key")) for e in room_events(db, room_id)]
    # The preset sends only what initial_state does not set; initial_state in its order.
    assert types[3:] == [
        ("m.room.guest_access", ""),
        ("m.room.join_rules", ""),
        ("m.room.name", ""),
        ("org.example.custom", "k"),
        ("m.room.history_visibility", ""),
        ("m.room.name", ""),
    ]


async def test_invites_with_is_direct(writer: RoomWriter, db: Database):
    settings = RoomSettings(room_version="10", invite=[BOB, CAROL], is_direct=True)
    room_id = await create_room(writer, ALICE, settings)
    for user in (BOB, CAROL):
        content = state_content(db, room_id, "m.room.member", user)
        assert content == {"membership": "invite", "is_direct": True}
    settings = RoomSettings(room_version="10", invite=[BOB])
    room_id = await create_room(writer, ALICE, settings)
    assert state_content(db, room_id, "m.room.member", BOB) == {"membership": "invite"}


@pytest.mark.parametrize("version", ["1", "11"])
async def test_trusted_private_chat_before_v12_gives_invitees_creator_level(
    writer: RoomWriter, db: Database, version: str
):
    settings = RoomSettings(room_version=version, preset="trusted_private_chat", invite=[BOB])
    room_id = await create_room(writer, ALICE, settings)
    pl = state_content(db, room_id, "m.room.power_levels")
    assert pl["users"] == {ALICE: 100, BOB: 100}
    assert "additional_creators" not in state_content(db, room_id, "m.room.create")


async def test_trusted_private_chat_v12_adds_additional_creators(writer: RoomWriter, db: Database):
    settings = RoomSettings(
        room_version="12",
        preset="trusted_private_chat",
        invite=[BOB, CAROL],
        creation_content={"additional_creators": [CAROL], "m.federate": True},
    )
    room_id = await create_room(writer, ALICE, settings)
    create = state_content(db, room_id, "m.room.create")
    assert create["additional_creators"] == [CAROL, BOB]
    assert create["m.federate"] is True
    assert state_content(db, room_id, "m.room.power_levels")["users"] == {}
    # Bob, a creator, may act with infinite power once joined.
    await writer.send_event(room_id, BOB, "m.room.member", {"membership": "join"}, BOB)
    await writer.send_event(room_id, BOB, "m.room.power_levels", {"users": {"@x:y.test": 99}}, "")
    # An untrusted v12 private chat: no additional creators.
    plain = await create_room(writer, ALICE, RoomSettings(room_version="12", invite=[BOB]))
    assert "additional_creators" not in state_content(db, plain, "m.room.create")


async def test_creation_content_cannot_override_server_keys(writer: RoomWriter, db: Database):
    settings = RoomSettings(
        room_version="10", creation_content={"room_version": "1", "creator": BOB, "x": 2}
    )
    room_id = await create_room(writer, ALICE, settings)
    create = state_content(db, room_id, "m.room.create")
    assert create == {"room_version": "10", "creator": ALICE, "x": 2}


async def test_power_level_content_override(writer: RoomWriter, db: Database):
    settings = RoomSettings(
        room_version="10",
        power_level_content_override={"events_default": 10, "users": {ALICE: 100, BOB: 50}},
        invite=[BOB],
    )
    room_id = await create_room(writer, ALICE, settings)
    pl = state_content(db, room_id, "m.room.power_levels")
    assert pl["events_default"] == 10
    assert pl["users"] == {ALICE: 100, BOB: 50}
    assert pl["state_default"] == 50  # the rest of the defaults stay


async def test_unsupported_version_and_preset(writer: RoomWriter, db: Database):
    with pytest.raises(MatrixError) as info:
        await create_room(writer, ALICE, RoomSettings(room_version="0"))
    assert (info.value.status, info.value.errcode) == (400, "M_UNSUPPORTED_ROOM_VERSION")
    with pytest.raises(MatrixError) as info:
        await create_room(writer, ALICE, RoomSettings(room_version="10", preset="party"))
    assert (info.value.status, info.value.errcode) == (400, "M_INVALID_PARAM")
    assert event_count(db) == 0


async def test_initial_state_the_rules_refuse(writer: RoomWriter):
    settings = RoomSettings(
        room_version="10",
        initial_state=[("m.room.member", BOB, {"membership": "join"})],
    )
    with pytest.raises(MatrixError) as info:
        await create_room(writer, ALICE, settings)
    assert (info.value.status, info.value.errcode) == (400, "M_INVALID_ROOM_STATE")


async def test_name_the_creator_may_not_set_is_invalid_room_state(writer: RoomWriter):
    # The spec's example: the creator's power level is below what the name needs.
    settings = RoomSettings(
        room_version="10",
        name="nope",
        power_level_content_override={"events": {"m.room.name": 101}},
    )
    with pytest.raises(MatrixError) as info:
        await create_room(writer, ALICE, settings)
    assert (info.value.status, info.value.errcode) == (400, "M_INVALID_ROOM_STATE")


async def test_initial_state_power_levels_are_sent_third_with_the_override(
    writer: RoomWriter, db: Database
):
    settings = RoomSettings(
        room_version="10",
        initial_state=[("m.room.power_levels", "", {"users": {ALICE: 100}, "ban": 100})],
        power_level_content_override={"kick": 75},
    )
    room_id = await create_room(writer, ALICE, settings)
    pl = state_content(db, room_id, "m.room.power_levels")
    assert pl == {"users": {ALICE: 100}, "ban": 100, "kick": 75}
    types = [e["type"] for e in room_events(db, room_id)]
    assert types.count("m.room.power_levels") == 1
    assert types.index("m.room.power_levels") == 2
