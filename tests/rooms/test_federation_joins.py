"""The resident side of joins, leaves and knocks (federation/joins.py): another server's
user asks for a template, signs it and sends it back; refused cases change nothing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from nacl.signing import VerifyKey

from pocketserver.core.events import compute_event_id
from pocketserver.core.room_versions import get_room_version
from pocketserver.errors import MatrixError
from pocketserver.federation.history import FederationHistory
from pocketserver.federation.joins import ResidentMemberships
from pocketserver.rooms.create import RoomSettings, create_room
from pocketserver.rooms.reading import EventReader
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage.db import Database

from .conftest import ALICE, BOB, LOCAL, RBOB, RCAROL, REMOTE, RemoteServer, current_state

JOIN = {"membership": "join"}


@pytest.fixture
def history(store: RoomStore) -> FederationHistory:
    return FederationHistory(store, EventReader(store))


@pytest.fixture
def resident(
    writer: RoomWriter, history: FederationHistory, remote: RemoteServer
) -> ResidentMemberships:
    async def keys_for(
        pdu: Mapping[str, object], room_version: str
    ) -> Mapping[str, Mapping[str, VerifyKey]]:
        return remote.keys_with(writer)

    return ResidentMemberships(writer, history, LOCAL, writer._signing_key, keys_for)


async def _room(
    writer: RoomWriter, version: str = "10", preset: str = "public_chat", **kw: Any
) -> str:
    return await create_room(writer, ALICE, RoomSettings(room_version=version, preset=preset, **kw))


async def _refused(coro: Any, status: int, errcode: str) -> MatrixError:
    with pytest.raises(MatrixError) as caught:
        await coro
    assert (caught.value.status, caught.value.errcode) == (status, errcode), caught.value
    return caught.value


_n = [0]


def _sign(
    remote: RemoteServer, template: Mapping[str, object], version: str
) -> tuple[str, dict[str, object]]:
    """Sign a template as the joining server does (v1/v2: it names the event ID)."""
    pdu = dict(template)
    if get_room_version(version).event_ids_in_pdu:
        _n[0] += 1
        pdu["event_id"] = f"$joiner{_n[0]}:{REMOTE}"
    return remote.sign(pdu, version)


async def _signed_from_template(
    resident: ResidentMemberships,
    remote: RemoteServer,
    room_id: str,
    user: str,
    membership: str = "join",
    ver: list[str] | None = None,
) -> tuple[str, dict[str, object]]:
    made = await resident.make(REMOTE, room_id, user, membership, ver)
    template = dict(made["event"])  # type: ignore[call-overload]
    template["origin_server_ts"] = int(template["origin_server_ts"])
    return _sign(remote, template, str(made["room_version"]))


@pytest.mark.parametrize("version", ["1", "3", "10", "12"])
async def test_remote_user_joins_through_make_and_send_join(
    writer: RoomWriter,
    resident: ResidentMemberships,
    remote: RemoteServer,
    db: Database,
    version: str,
) -> None:
    room_id = await _room(writer, version)
    made = await resident.make(REMOTE, room_id, RBOB, "join", [version])
    assert made["room_version"] == version
    template = made["event"]
    assert isinstance(template, dict)
    assert template["type"] == "m.room.member"
    assert template["state_key"] == RBOB
    assert template["content"] == JOIN
    assert "signatures" not in template
    assert "hashes" not in template
    event_id, pdu = _sign(remote, template, version)
    answer = await resident.send_join(REMOTE, room_id, event_id, pdu, omit_members=False)
    assert current_state(db, room_id)[("m.room.member", RBOB)] == event_id
    state_types = {k for k in current_state(db, room_id)}
    assert ("m.room.member", ALICE) in state_types
    assert len(answer.state_ids) == len(current_state(db, room_id)) - 1  # before the join
    assert event_id not in answer.state_ids
    # A full answer's auth chain is the whole chain, state events included
    # (joins-v2.yaml; SyTest 30room-join.pl walks it alone); never the join itself.
    chain_needed = await writer.store.auth_chain_ids([*answer.state_ids, event_id])
    assert set(answer.auth_chain_ids) == chain_needed - {event_id}
    assert set(answer.auth_chain_ids) & set(answer.state_ids)
    assert answer.servers_in_room == [LOCAL]
    assert answer.members_omitted is False
    # A repeated send_join (the joining server retrying) answers again, stores nothing new.
    again = await resident.send_join(REMOTE, room_id, event_id, pdu, omit_members=False)
    assert again.state_ids == answer.state_ids


async def test_the_auth_chain_comes_oldest_first(
    writer: RoomWriter, resident: ResidentMemberships, remote: RemoteServer
) -> None:
    """Power levels changed several times: each version comes after the one it
    replaced, whatever their IDs, so a joining server that takes the state from the
    chain in order ends with the newest (SyTest 36state's fake server does)."""
    room_id = await _room(writer, "1")
    levels: list[str] = []
    for n in range(6):
        sent = await writer.send_event(
            room_id,
            ALICE,
            "m.room.power_levels",
            {"users": {ALICE: 100, f"@u{n}:{LOCAL}": n + 1}},
            "",
        )
        levels.append(sent.event_id)
    event_id, pdu = await _signed_from_template(resident, remote, room_id, RBOB)
    answer = await resident.send_join(REMOTE, room_id, event_id, pdu, omit_members=False)
    chain = answer.auth_chain_ids
    in_chain = [e for e in chain if e in levels]
    assert in_chain == [e for e in levels if e in in_chain]
    assert in_chain[-1] == levels[-1]
    create = await writer.store.get_event(chain[0])
    assert create is not None
    assert create.pdu["type"] == "m.room.create"


async def test_omit_members_keeps_heroes_only_without_a_name(
    writer: RoomWriter, resident: ResidentMemberships, remote: RemoteServer
) -> None:
    room_id = await _room(writer)
    await writer.send_event(room_id, ALICE, "m.room.member", {"membership": "invite"}, BOB)
    event_id, pdu = await _signed_from_template(resident, remote, room_id, RBOB, ver=["10"])
    answer = await resident.send_join(REMOTE, room_id, event_id, pdu, omit_members=True)
    assert answer.members_omitted is True
    assert not set(answer.auth_chain_ids) & set(answer.state_ids)  # may be left out
    members = [
        ev.pdu["state_key"]
        for ev in (await writer.store.get_events(answer.state_ids)).values()
        if ev.type == "m.room.member"
    ]
    assert sorted(members) == sorted([ALICE, BOB])  # the heroes: no name, no alias
    # With a name, no member events at all.
    named = await _room(writer, name="Named")
    event_id, pdu = await _signed_from_template(resident, remote, named, RCAROL, ver=["10"])
    answer = await resident.send_join(REMOTE, named, event_id, pdu, omit_members=True)
    types = {ev.type for ev in (await writer.store.get_events(answer.state_ids)).values()}
    assert "m.room.member" not in types
    assert "m.room.name" in types
    assert answer.servers_in_room == [LOCAL]


async def test_make_join_refusals(
    writer: RoomWriter, resident: ResidentMemberships, db: Database
) -> None:
    room_id = await _room(writer)
    await _refused(
        resident.make(REMOTE, room_id, f"@x:{LOCAL}", "join", ["10"]), 403, "M_FORBIDDEN"
    )
    await _refused(
        resident.make(REMOTE, "!nope:local.test", RBOB, "join", ["10"]), 404, "M_NOT_FOUND"
    )
    err = await _refused(
        resident.make(REMOTE, room_id, RBOB, "join", ["1", "2"]), 400, "M_INCOMPATIBLE_ROOM_VERSION"
    )
    assert err.to_json()["room_version"] == "10"
    # Without ver, only room version 1 is assumed.
    await _refused(
        resident.make(REMOTE, room_id, RBOB, "join", None), 400, "M_INCOMPATIBLE_ROOM_VERSION"
    )
    # An invite-only room: the auth rules refuse.
    private = await _room(writer, preset="private_chat")
    await _refused(resident.make(REMOTE, private, RBOB, "join", ["10"]), 403, "M_FORBIDDEN")
    # A banned user.
    await writer.send_event(room_id, ALICE, "m.room.member", {"membership": "ban"}, RBOB)
    await _refused(resident.make(REMOTE, room_id, RBOB, "join", ["10"]), 403, "M_FORBIDDEN")
    # A server the ACL denies.
    acl_room = await _room(writer)
    await writer.send_event(
        acl_room, ALICE, "m.room.server_acl", {"allow": ["*"], "deny": [REMOTE]}, ""
    )
    await _refused(resident.make(REMOTE, acl_room, RBOB, "join", ["10"]), 403, "M_FORBIDDEN")
    # A room all our users have left: nobody here can authorise a join (Synapse: 404).
    left = await _room(writer)
    await writer.send_event(left, ALICE, "m.room.member", {"membership": "leave"}, ALICE)
    await _refused(resident.make(REMOTE, left, RBOB, "join", ["10"]), 404, "M_NOT_FOUND")
    await _refused(resident.make(REMOTE, left, RBOB, "knock", ["10"]), 404, "M_NOT_FOUND")
    for room in (room_id, private, acl_room, left):
        assert ("m.room.member", RBOB) not in current_state(db, room) or room == room_id


@pytest.mark.parametrize(
    ("change", "status", "errcode"),
    [
        ({"type": "m.room.message"}, 400, "M_INVALID_PARAM"),
        ({"content": {"membership": "leave"}}, 400, "M_INVALID_PARAM"),
        ({"state_key": RCAROL}, 400, "M_INVALID_PARAM"),
        # Another server's user: 403 as Synapse ("User not from origin").
        ({"sender": BOB, "state_key": BOB}, 403, "M_FORBIDDEN"),
    ],
)
async def test_send_join_refuses_a_wrong_event_and_changes_nothing(
    writer: RoomWriter,
    resident: ResidentMemberships,
    remote: RemoteServer,
    db: Database,
    change: dict[str, object],
    status: int,
    errcode: str,
) -> None:
    room_id = await _room(writer)
    made = await resident.make(REMOTE, room_id, RBOB, "join", ["10"])
    template = {**made["event"], **change}  # type: ignore[dict-item]
    event_id, pdu = _sign(remote, template, "10")
    before = current_state(db, room_id)
    await _refused(resident.send_join(REMOTE, room_id, event_id, pdu, False), status, errcode)
    assert current_state(db, room_id) == before


async def test_send_join_checks_the_path_and_signatures(
    writer: RoomWriter, resident: ResidentMemberships, remote: RemoteServer, db: Database
) -> None:
    room_id = await _room(writer)
    event_id, pdu = await _signed_from_template(resident, remote, room_id, RBOB, ver=["10"])
    before = current_state(db, room_id)
    await _refused(
        resident.send_join(REMOTE, room_id, "$other", pdu, False), 400, "M_INVALID_PARAM"
    )
    other_room = await _room(writer)
    await _refused(
        resident.send_join(REMOTE, other_room, event_id, pdu, False), 400, "M_INVALID_PARAM"
    )
    forged = dict(pdu)
    forged["signatures"] = {REMOTE: {"ed25519:r_1": "A" * 86}}
    await _refused(resident.send_join(REMOTE, room_id, event_id, forged, False), 403, "M_FORBIDDEN")
    assert current_state(db, room_id) == before


async def test_a_join_the_rules_refuse_is_403_and_not_stored_as_state(
    writer: RoomWriter, resident: ResidentMemberships, remote: RemoteServer, db: Database
) -> None:
    """The joining server builds a join itself for an invite-only room (no template)."""
    private = await _room(writer, preset="private_chat")
    _, pdu = await remote.event(writer, private, RBOB, "m.room.member", JOIN, RBOB)
    from pocketserver.core.events import compute_event_id

    event_id = compute_event_id(pdu, "10")
    await _refused(resident.send_join(REMOTE, private, event_id, pdu, False), 403, "M_FORBIDDEN")
    assert ("m.room.member", RBOB) not in current_state(db, private)


async def test_restricted_join_is_authorised_and_countersigned(
    writer: RoomWriter, resident: ResidentMemberships, remote: RemoteServer, db: Database
) -> None:
    space = await _room(writer)
    event_id, pdu = await _signed_from_template(resident, remote, space, RBOB, ver=["10"])
    await resident.send_join(REMOTE, space, event_id, pdu, False)
    rules = {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]}
    room_id = await _room(writer, preset="private_chat")
    await writer.send_event(room_id, ALICE, "m.room.join_rules", rules, "")
    made = await resident.make(REMOTE, room_id, RBOB, "join", ["10"])
    assert made["event"]["content"]["join_authorised_via_users_server"] == ALICE  # type: ignore[index]
    event_id, pdu = _sign(remote, made["event"], "10")  # type: ignore[arg-type]
    answer = await resident.send_join(REMOTE, room_id, event_id, pdu, False)
    assert LOCAL in answer.event["signatures"]  # type: ignore[operator]
    assert REMOTE in answer.event["signatures"]  # type: ignore[operator]
    assert current_state(db, room_id)[("m.room.member", RBOB)] == event_id
    # RCAROL is in no allowed room: refused, nothing stored.
    await _refused(resident.make(REMOTE, room_id, RCAROL, "join", ["10"]), 403, "M_FORBIDDEN")
    # A room whose allowed rooms we do not know.
    unknown = {
        "join_rule": "restricted",
        "allow": [{"type": "m.room_membership", "room_id": "!x:elsewhere"}],
    }
    other = await _room(writer, preset="private_chat")
    await writer.send_event(other, ALICE, "m.room.join_rules", unknown, "")
    await _refused(
        resident.make(REMOTE, other, RBOB, "join", ["10"]), 400, "M_UNABLE_TO_AUTHORISE_JOIN"
    )
    assert ("m.room.member", RCAROL) not in current_state(db, room_id)


async def test_restricted_join_without_a_local_inviter(
    writer: RoomWriter, resident: ResidentMemberships, remote: RemoteServer
) -> None:
    space = await _room(writer)
    event_id, pdu = await _signed_from_template(resident, remote, space, RBOB, ver=["10"])
    await resident.send_join(REMOTE, space, event_id, pdu, False)
    rules = {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]}
    room_id = await _room(writer, preset="private_chat")
    await writer.send_event(room_id, ALICE, "m.room.join_rules", rules, "")
    await writer.send_event(
        room_id, ALICE, "m.room.power_levels", {"users": {ALICE: 50}, "invite": 100}, ""
    )
    await _refused(
        resident.make(REMOTE, room_id, RBOB, "join", ["10"]), 400, "M_UNABLE_TO_GRANT_JOIN"
    )


async def test_remote_leave(
    writer: RoomWriter, resident: ResidentMemberships, remote: RemoteServer, db: Database
) -> None:
    room_id = await _room(writer)
    event_id, pdu = await _signed_from_template(resident, remote, room_id, RBOB, ver=["10"])
    await resident.send_join(REMOTE, room_id, event_id, pdu, False)
    event_id, pdu = await _signed_from_template(resident, remote, room_id, RBOB, "leave")
    await resident.send_leave(REMOTE, room_id, event_id, pdu)
    leave = current_state(db, room_id)[("m.room.member", RBOB)]
    assert leave == event_id
    # A leave sent as a join is refused.
    await _refused(
        resident.send_join(REMOTE, room_id, event_id, pdu, False), 400, "M_INVALID_PARAM"
    )


async def test_remote_knock(
    writer: RoomWriter, resident: ResidentMemberships, remote: RemoteServer, db: Database
) -> None:
    room_id = await _room(writer, preset="private_chat", name="Knock here")
    await writer.send_event(room_id, ALICE, "m.room.join_rules", {"join_rule": "knock"}, "")
    event_id, pdu = await _signed_from_template(resident, remote, room_id, RBOB, "knock", ["10"])
    state = await resident.send_knock(REMOTE, room_id, event_id, pdu)
    assert {s["type"] for s in state} >= {"m.room.create", "m.room.join_rules", "m.room.name"}
    # Full PDUs, signed, as the spec asks since v1.16 (the knocking server strips them).
    current = set(current_state(db, room_id).values())
    assert {compute_event_id(s, "10") for s in state} <= current
    assert all("signatures" in s and "hashes" in s for s in state)
    assert current_state(db, room_id)[("m.room.member", RBOB)] == event_id
    # Knocking on a room version without knocks.
    old = await _room(writer, "6", preset="private_chat")
    await _refused(
        resident.make(REMOTE, old, RCAROL, "knock", ["6"]), 400, "M_INCOMPATIBLE_ROOM_VERSION"
    )


@pytest.mark.parametrize(("version", "errcode"), [("6", "M_BAD_JSON"), ("5", "M_INVALID_PARAM")])
async def test_send_leave_with_a_float_in_a_strict_json_room_is_bad_json(
    writer: RoomWriter,
    resident: ResidentMemberships,
    remote: RemoteServer,
    db: Database,
    version: str,
    errcode: str,
) -> None:
    """v6+ rooms allow no floats (v6-canonical-json.md): the leave is 400 ``M_BAD_JSON``
    before anything else is looked at (even the event ID of the path, as Synapse's
    event_from_pdu_json; SyTest 35room-invite.pl). Before v6 a float is allowed, so
    here the wrong path is what is refused."""
    room_id = await _room(writer, version)
    event_id, pdu = await _signed_from_template(resident, remote, room_id, RBOB, ver=[version])
    await resident.send_join(REMOTE, room_id, event_id, pdu, False)
    made = await resident.make(REMOTE, room_id, RBOB, "leave", None)
    template = dict(made["event"])  # type: ignore[call-overload]
    template["content"] = {**template["content"], "bad_val": 1.1}
    _, leave = _sign(remote, template, version)
    before = current_state(db, room_id)
    await _refused(resident.send_leave(REMOTE, room_id, "xxx", leave), 400, errcode)
    assert current_state(db, room_id) == before
