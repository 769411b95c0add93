"""Local redactions and the narrow membership verbs, refused from the attacker's side.

A user below the redact level must not redact another user's event (the auth rules
let it through for events of the same server), and /kick and /unban must not turn a
ban into a leave or write a leave for someone who is not in the room. Each refusal
leaves the room as it was.
"""

from __future__ import annotations

import pytest

from pocketserver.config.model import RateLimit
from pocketserver.errors import MatrixError
from pocketserver.ratelimit import RateLimiter
from pocketserver.rooms.client import RoomClient
from pocketserver.rooms.reading import EventReader
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage.db import Database

from .conftest import ALICE, ALL_VERSIONS, BOB, CAROL, event_count
from .test_writer_local import MSG, make_room

MEMBER = "m.room.member"


def _client(writer: RoomWriter, store: RoomStore) -> RoomClient:
    return RoomClient(writer, EventReader(store), RateLimiter(RateLimit(1000, 1000)))


async def _room_with_bob(writer: RoomWriter, version: str) -> str:
    room_id = await make_room(writer, version, join_rule="public")
    await writer.send_event(room_id, BOB, MEMBER, {"membership": "join"}, BOB)
    return room_id


async def _refused(db: Database, status: int, errcode: str, coro) -> None:  # type: ignore[no-untyped-def]
    before = event_count(db)
    with pytest.raises(MatrixError) as e:
        await coro
    assert (e.value.status, e.value.errcode) == (status, errcode), e.value
    assert event_count(db) == before


@pytest.mark.parametrize("version", ALL_VERSIONS)
async def test_redaction_needs_own_event_or_redact_level(
    writer: RoomWriter, store: RoomStore, db: Database, version: str
) -> None:
    client = _client(writer, store)
    room_id = await _room_with_bob(writer, version)
    alices = await client.send(ALICE, "D", room_id, "m.room.message", MSG, "a1")
    bobs = await client.send(BOB, "D", room_id, "m.room.message", MSG, "b1")

    # Bob (power level 0, same server) may not redact Alice's message...
    await _refused(
        db,
        403,
        "M_FORBIDDEN",
        client.send(BOB, "D", room_id, "m.room.redaction", {}, "r1", redacts=alices),
    )
    read = (await EventReader(store).get_events([alices]))[alices]
    assert read.redacted_because is None
    assert read.pdu["content"] == MSG
    # ...nor an event this server does not know (404: only own events, as Synapse).
    await _refused(
        db,
        404,
        "M_NOT_FOUND",
        client.send(BOB, "D", room_id, "m.room.redaction", {}, "r2", redacts="$nope:local.test"),
    )
    # His own message he may redact; Alice (at the redact level) may redact his.
    await client.send(BOB, "D", room_id, "m.room.redaction", {}, "r3", redacts=bobs)
    read = (await EventReader(store).get_events([bobs]))[bobs]
    assert read.redacted_because is not None
    bobs2 = await client.send(BOB, "D", room_id, "m.room.message", MSG, "b2")
    await client.send(ALICE, "D", room_id, "m.room.redaction", {}, "r4", redacts=bobs2)
    assert (await EventReader(store).get_events([bobs2]))[bobs2].redacted_because is not None
    # At the redact level an unknown event may be named (Synapse allows it).
    await client.send(
        ALICE, "D", room_id, "m.room.redaction", {}, "r5", redacts="$unknown:local.test"
    )


async def test_redaction_of_another_rooms_event_or_the_create_event(
    writer: RoomWriter, store: RoomStore, db: Database
) -> None:
    client = _client(writer, store)
    room_id = await _room_with_bob(writer, "11")
    other = await _room_with_bob(writer, "11")
    theirs = await client.send(BOB, "D", other, "m.room.message", MSG, "o1")
    await _refused(
        db,
        400,
        "M_INVALID_PARAM",
        client.send(ALICE, "D", room_id, "m.room.redaction", {}, "x1", redacts=theirs),
    )
    assert (await EventReader(store).get_events([theirs]))[theirs].redacted_because is None
    create_id = (await store.current_state_ids(room_id))[("m.room.create", "")]
    await _refused(
        db,
        403,
        "M_FORBIDDEN",
        client.send(ALICE, "D", room_id, "m.room.redaction", {}, "x2", redacts=create_id),
    )


async def test_redact_level_raised_above_the_sender(
    writer: RoomWriter, store: RoomStore, db: Database
) -> None:
    client = _client(writer, store)
    room_id = await _room_with_bob(writer, "10")
    pl = {"users": {ALICE: 100, BOB: 50}, "redact": 50, "state_default": 50}
    await writer.send_event(room_id, ALICE, "m.room.power_levels", pl, "")
    alices = await client.send(ALICE, "D", room_id, "m.room.message", MSG, "a1")
    await client.send(BOB, "D", room_id, "m.room.redaction", {}, "r1", redacts=alices)
    pl = {"users": {ALICE: 100, BOB: 50}, "redact": 60, "state_default": 50}
    await writer.send_event(room_id, ALICE, "m.room.power_levels", pl, "")
    alices2 = await client.send(ALICE, "D", room_id, "m.room.message", MSG, "a2")
    await _refused(
        db,
        403,
        "M_FORBIDDEN",
        client.send(BOB, "D", room_id, "m.room.redaction", {}, "r2", redacts=alices2),
    )


async def _membership(store: RoomStore, room_id: str, user: str) -> str | None:
    state = await store.current_state_ids(room_id)
    event_id = state.get((MEMBER, user))
    event = await store.get_event(event_id) if event_id else None
    return event.pdu["content"]["membership"] if event else None  # type: ignore[index]


@pytest.mark.parametrize("version", ["1", "10", "12"])
async def test_kick_only_someone_in_the_room(
    writer: RoomWriter, store: RoomStore, db: Database, version: str
) -> None:
    client = _client(writer, store)
    room_id = await _room_with_bob(writer, version)
    await client.membership(ALICE, room_id, BOB, "ban")
    # A kick of the banned Bob would lift the ban: refused, Bob stays banned.
    await _refused(
        db, 403, "M_FORBIDDEN", client.membership(ALICE, room_id, BOB, "leave", action="kick")
    )
    assert await _membership(store, room_id, BOB) == "ban"
    # Carol was never here: no leave is written for her.
    await _refused(
        db, 403, "M_FORBIDDEN", client.membership(ALICE, room_id, CAROL, "leave", action="kick")
    )
    assert await _membership(store, room_id, CAROL) is None
    # An invite may be kicked (revoked), a member may be kicked.
    await client.membership(ALICE, room_id, CAROL, "invite")
    await client.membership(ALICE, room_id, CAROL, "leave", action="kick")
    assert await _membership(store, room_id, CAROL) == "leave"
    # Kicking someone who already left is refused too.
    await _refused(
        db, 403, "M_FORBIDDEN", client.membership(ALICE, room_id, CAROL, "leave", action="kick")
    )


async def test_unban_only_a_banned_user(writer: RoomWriter, store: RoomStore, db: Database) -> None:
    client = _client(writer, store)
    room_id = await _room_with_bob(writer, "10")
    await _refused(
        db, 403, "M_BAD_STATE", client.membership(ALICE, room_id, BOB, "leave", action="unban")
    )
    assert await _membership(store, room_id, BOB) == "join"
    await _refused(
        db, 403, "M_BAD_STATE", client.membership(ALICE, room_id, CAROL, "leave", action="unban")
    )
    assert await _membership(store, room_id, CAROL) is None
    await client.membership(ALICE, room_id, BOB, "ban")
    # An invite of a banned user is refused by the auth rules.
    await _refused(db, 403, "M_FORBIDDEN", client.membership(ALICE, room_id, BOB, "invite"))
    # Bob (not at the ban level, and now banned) cannot unban himself either.
    await _refused(
        db, 403, "M_FORBIDDEN", client.membership(BOB, room_id, BOB, "leave", action="unban")
    )
    await client.membership(ALICE, room_id, BOB, "leave", action="unban")
    assert await _membership(store, room_id, BOB) == "leave"
