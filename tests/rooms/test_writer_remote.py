"""The room writer with remote PDUs: server-server-api.md "Checks performed on receipt of
a PDU", "Rejection" and "Soft failure"."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pocketserver.core.crypto import SignatureError, generate_signing_key, key_id
from pocketserver.core.events import EventFormatError
from pocketserver.core.room_versions import get_room_version
from pocketserver.core.state_res import resolve_state
from pocketserver.rooms.create import RoomSettings, create_room
from pocketserver.rooms.reading import EventReader
from pocketserver.rooms.writer import EventKind, MissingEventsError, RoomWriter
from pocketserver.storage import events as event_store
from pocketserver.storage.db import Database
from pocketserver.streams.notifier import Notifier

from .conftest import (
    ALICE,
    ALL_VERSIONS,
    RBOB,
    RCAROL,
    REMOTE,
    RemoteServer,
    current_state,
    event_count,
    extremities,
    rows,
    state_after,
    state_before,
    stored,
)

MSG = {"msgtype": "m.text", "body": "hi"}
JOIN = {"membership": "join"}


async def public_room(writer: RoomWriter, version: str, **kwargs: Any) -> str:
    settings = RoomSettings(room_version=version, preset="public_chat", **kwargs)
    return await create_room(writer, ALICE, settings)


async def room_with_remotes(
    writer: RoomWriter, remote: RemoteServer, version: str, levels: dict[str, int]
) -> str:
    """A local public room that RBOB and RCAROL (of the remote server) joined, with the
    given power levels for them."""
    room_id = await public_room(writer, version)
    for user in (RBOB, RCAROL):
        joined = await remote.send(writer, room_id, user, "m.room.member", JOIN, user)
        assert joined.accepted, joined.rejected
    users = {} if get_room_version(version).hydra else {ALICE: 100}
    await writer.send_event(
        room_id, ALICE, "m.room.power_levels", {"users": {**users, **levels}}, ""
    )
    return room_id


@pytest.mark.parametrize("version", ALL_VERSIONS)
async def test_remote_join_and_messages(
    writer: RoomWriter, remote: RemoteServer, db: Database, notifier: Notifier, version: str
):
    room_id = await public_room(writer, version)
    join = await remote.send(writer, room_id, RBOB, "m.room.member", JOIN, RBOB)
    assert join.accepted
    assert not join.outlier
    assert notifier.position == join.stream_ordering
    assert extremities(db, room_id) == {join.event_id}
    assert current_state(db, room_id)[("m.room.member", RBOB)] == join.event_id
    msg = await remote.send(writer, room_id, RBOB, "m.room.message", MSG)
    assert msg.accepted
    assert extremities(db, room_id) == {msg.event_id}
    assert state_before(db, msg.event_id) == state_after(db, join.event_id)
    # A local event follows the remote one.
    reply = await writer.send_event(room_id, ALICE, "m.room.message", MSG)
    prev = reply.pdu["prev_events"]
    assert isinstance(prev, list)
    assert len(prev) == 1
    assert (prev[0][0] if isinstance(prev[0], list) else prev[0]) == msg.event_id
    assert stored(db, msg.event_id).pdu == msg.pdu


async def test_idempotent_re_receive(
    writer: RoomWriter, remote: RemoteServer, db: Database, notifier: Notifier
):
    room_id = await public_room(writer, "10")
    _, pdu = await remote.event(writer, room_id, RBOB, "m.room.member", JOIN, RBOB)
    first = await writer.receive_pdu(copy.deepcopy(pdu), "10", remote.keys)
    count, pos = event_count(db), notifier.position
    again = await writer.receive_pdu(copy.deepcopy(pdu), "10", remote.keys)
    assert again.event_id == first.event_id
    assert again.stream_ordering == first.stream_ordering
    assert event_count(db) == count
    assert notifier.position == pos
    # Also as an outlier (e.g. in a later auth chain): still the same row.
    third = await writer.receive_pdu(copy.deepcopy(pdu), "10", remote.keys, kind=EventKind.OUTLIER)
    assert third.stream_ordering == first.stream_ordering
    assert not third.outlier


@pytest.mark.parametrize("version", ["1", "2", "10", "12"])
async def test_fork_gives_two_extremities_and_resolved_state(
    writer: RoomWriter, remote: RemoteServer, db: Database, version: str
):
    room_id = await room_with_remotes(writer, remote, version, {RBOB: 100, RCAROL: 50})
    fork_point = extremities(db, room_id)
    topic_a = await remote.send(writer, room_id, RBOB, "m.room.topic", {"topic": "A"}, "")
    _, pdu_b = await remote.event(
        writer, room_id, RCAROL, "m.room.topic", {"topic": "B"}, "", prev=sorted(fork_point)
    )
    topic_b = await writer.receive_pdu(pdu_b, version, remote.keys)
    assert topic_a.accepted
    assert topic_b.accepted
    assert extremities(db, room_id) == {topic_a.event_id, topic_b.event_id}
    # Each branch has its own state; the current state resolves both.
    assert state_after(db, topic_a.event_id)[("m.room.topic", "")] == topic_a.event_id
    assert state_after(db, topic_b.event_id)[("m.room.topic", "")] == topic_b.event_id
    states = [state_after(db, topic_a.event_id), state_after(db, topic_b.event_id)]
    ids = {e for s in states for e in s.values()}
    chain = db.read_sync(event_store.get_auth_chain_ids, list(ids))
    event_map = {e: ev.pdu for e, ev in db.read_sync(event_store.get_events, ids | chain).items()}
    expected = resolve_state(version, states, event_map)
    current = current_state(db, room_id)
    assert current == expected
    assert current[("m.room.topic", "")] in {topic_a.event_id, topic_b.event_id}
    # A local event then merges the fork: both extremities are its prevs.
    merge = await writer.send_event(room_id, ALICE, "m.room.message", MSG)
    prevs = merge.pdu["prev_events"]
    assert isinstance(prevs, list)
    assert {p[0] if isinstance(p, list) else p for p in prevs} == {
        topic_a.event_id,
        topic_b.event_id,
    }
    assert extremities(db, room_id) == {merge.event_id}
    assert state_before(db, merge.event_id) == current == current_state(db, room_id)


@pytest.mark.parametrize("version", ["2", "10", "12"])
async def test_fork_with_a_power_level_change(
    writer: RoomWriter, remote: RemoteServer, db: Database, version: str
):
    room_id = await room_with_remotes(writer, remote, version, {RBOB: 100, RCAROL: 50})
    old_topic = await writer.send_event(room_id, ALICE, "m.room.topic", {"topic": "old"}, "")
    fork_point = sorted(extremities(db, room_id))
    old_pl = current_state(db, room_id)[("m.room.power_levels", "")]
    # Branch B (received first): Carol, level 50, sets the topic.
    topic_b = await remote.send(writer, room_id, RCAROL, "m.room.topic", {"topic": "B"}, "")
    assert topic_b.accepted
    # Branch A: Bob demotes Carol on the fork point.
    users = {} if get_room_version(version).hydra else {ALICE: 100}
    _, pl_a = await remote.event(
        writer,
        room_id,
        RBOB,
        "m.room.power_levels",
        {"users": {**users, RBOB: 100, RCAROL: 0}},
        "",
        prev=fork_point,
        state=state_after(db, old_topic.event_id),
    )
    demote = await writer.receive_pdu(pl_a, version, remote.keys)
    assert demote.accepted
    assert extremities(db, room_id) == {topic_b.event_id, demote.event_id}
    current = current_state(db, room_id)
    assert current[("m.room.power_levels", "")] == demote.event_id != old_pl
    # Carol's topic does not survive resolution against the new power levels.
    assert current[("m.room.topic", "")] == old_topic.event_id


async def test_soft_fail_when_banned_on_another_branch(
    writer: RoomWriter, remote: RemoteServer, db: Database, notifier: Notifier
):
    version = "10"
    room_id = await room_with_remotes(writer, remote, version, {RBOB: 100, RCAROL: 50})
    fork_point = sorted(extremities(db, room_id))
    before = state_after(db, fork_point[0])
    ban = await remote.send(writer, room_id, RBOB, "m.room.member", {"membership": "ban"}, RCAROL)
    assert ban.accepted
    cur, pos = current_state(db, room_id), notifier.position
    # Carol's topic on the old fork point passes against its own state, not the current.
    _, pdu = await remote.event(
        writer,
        room_id,
        RCAROL,
        "m.room.topic",
        {"topic": "evading"},
        "",
        prev=fork_point,
        state=before,
    )
    evading = await writer.receive_pdu(pdu, version, remote.keys)
    assert evading.soft_failed
    assert evading.rejected is None
    assert not evading.accepted
    row = stored(db, evading.event_id)
    assert row.soft_failed
    assert not row.outlier
    assert state_after(db, evading.event_id)[("m.room.topic", "")] == evading.event_id
    assert extremities(db, room_id) == {ban.event_id}
    assert current_state(db, room_id) == cur
    assert notifier.position == pos


async def test_rejected_against_auth_events(
    writer: RoomWriter, remote: RemoteServer, db: Database, notifier: Notifier
):
    room_id = await public_room(writer, "10")
    ext, cur, pos = extremities(db, room_id), current_state(db, room_id), notifier.position
    # RCAROL never joined: a topic citing no membership of hers fails rule "sender joined".
    topic = await remote.send(writer, room_id, RCAROL, "m.room.topic", {"topic": "x"}, "")
    assert topic.rejected is not None
    assert topic.rejected.startswith("auth events")
    row = stored(db, topic.event_id)
    assert row.rejected == topic.rejected
    assert extremities(db, room_id) == ext
    assert current_state(db, room_id) == cur
    assert notifier.position == pos
    # Its state is the state before it, not updated with it.
    assert state_after(db, topic.event_id) == cur


async def test_rejected_against_state_before(
    writer: RoomWriter, remote: RemoteServer, db: Database
):
    version = "11"
    room_id = await room_with_remotes(writer, remote, version, {RBOB: 100, RCAROL: 50})
    carol_join = current_state(db, room_id)[("m.room.member", RCAROL)]
    ban = await remote.send(writer, room_id, RBOB, "m.room.member", {"membership": "ban"}, RCAROL)
    cur = current_state(db, room_id)
    # Carol cites her old join (passes against those auth events) but builds on the ban.
    auth = [cur[("m.room.create", "")], cur[("m.room.power_levels", "")], carol_join]
    topic = await remote.send(
        writer, room_id, RCAROL, "m.room.topic", {"topic": "x"}, "", auth=auth
    )
    assert topic.rejected is not None
    assert topic.rejected.startswith("state before")
    assert stored(db, topic.event_id).rejected == topic.rejected
    assert extremities(db, room_id) == {ban.event_id}
    assert current_state(db, room_id) == cur
    assert ("m.room.topic", "") not in state_after(db, topic.event_id)
    # A later event that cites the rejected one is accepted; its state is calculated
    # as normal, without the rejected event (server-server-api.md "Rejection").
    follow = await remote.send(writer, room_id, RBOB, "m.room.message", MSG, prev=[topic.event_id])
    assert follow.accepted
    assert state_before(db, follow.event_id) == cur
    assert extremities(db, room_id) == {follow.event_id, ban.event_id}
    assert current_state(db, room_id) == cur


async def test_rejected_auth_event_rejects_the_event(
    writer: RoomWriter, remote: RemoteServer, db: Database
):
    room_id = await public_room(writer, "10")
    bad = await remote.send(writer, room_id, RCAROL, "m.room.topic", {"topic": "x"}, "")
    assert bad.rejected is not None
    cur = current_state(db, room_id)
    join = await remote.send(writer, room_id, RBOB, "m.room.member", JOIN, RBOB)
    auth = [
        cur[("m.room.create", "")],
        cur[("m.room.power_levels", "")],
        join.event_id,
        bad.event_id,
    ]
    msg = await remote.send(writer, room_id, RBOB, "m.room.message", MSG, auth=auth)
    assert msg.rejected is not None


@pytest.mark.parametrize("version", ["1", "5", "11"])
async def test_content_hash_mismatch_is_stored_redacted(
    writer: RoomWriter, remote: RemoteServer, db: Database, version: str
):
    room_id = await public_room(writer, version)
    await remote.send(writer, room_id, RBOB, "m.room.member", JOIN, RBOB)
    _, pdu = await remote.event(writer, room_id, RBOB, "m.room.message", MSG)
    pdu["content"] = {"msgtype": "m.text", "body": "tampered"}  # signatures cover the redacted form
    got = await writer.receive_pdu(pdu, version, remote.keys)
    assert got.accepted
    assert stored(db, got.event_id).pdu["content"] == {}
    assert got.pdu["content"] == {}
    assert extremities(db, room_id) == {got.event_id}


@pytest.mark.parametrize("version", ["2", "10", "12"])
async def test_bad_or_missing_signature_is_dropped(
    writer: RoomWriter, remote: RemoteServer, db: Database, version: str
):
    room_id = await public_room(writer, version)
    count = event_count(db)
    _, pdu = await remote.event(writer, room_id, RBOB, "m.room.member", JOIN, RBOB)
    unsigned = copy.deepcopy(pdu)
    unsigned["signatures"] = {}
    forged = copy.deepcopy(pdu)
    forged["origin_server_ts"] += 1  # kept by redaction: the signature no longer matches
    impostor = RemoteServer(REMOTE, key_version="r_1")  # same key ID, other key
    _, other_key = await impostor.event(writer, room_id, RBOB, "m.room.member", JOIN, RBOB)
    for bad in (unsigned, forged, other_key):
        with pytest.raises(SignatureError):
            await writer.receive_pdu(bad, version, remote.keys)
    with pytest.raises(SignatureError):  # no keys for the sender's server
        await writer.receive_pdu(copy.deepcopy(pdu), version, {})
    assert event_count(db) == count
    assert (await writer.receive_pdu(pdu, version, remote.keys)).accepted


async def test_malformed_pdu_is_dropped(writer: RoomWriter, remote: RemoteServer, db: Database):
    room_id = await public_room(writer, "10")
    count = event_count(db)
    _, pdu = await remote.event(writer, room_id, RBOB, "m.room.member", JOIN, RBOB)
    with pytest.raises(EventFormatError):
        await writer.receive_pdu({**pdu, "depth": "1"}, "10", remote.keys)
    with pytest.raises(EventFormatError):  # the room is version 10, not 9
        await writer.receive_pdu(pdu, "9", remote.keys)
    assert event_count(db) == count


async def test_missing_auth_events(writer: RoomWriter, remote: RemoteServer, db: Database):
    room_id = await public_room(writer, "10")
    join_id, _ = await remote.event(writer, room_id, RBOB, "m.room.member", JOIN, RBOB)
    cur = current_state(db, room_id)
    auth = [cur[("m.room.create", "")], cur[("m.room.power_levels", "")], join_id]
    _, msg = await remote.event(
        writer, room_id, RBOB, "m.room.message", MSG, prev=[join_id], auth=auth
    )
    count = event_count(db)
    with pytest.raises(MissingEventsError) as info:
        await writer.receive_pdu(msg, "10", remote.keys)
    assert info.value.what == "auth"
    assert info.value.event_ids == [join_id]
    assert event_count(db) == count


async def test_missing_prev_events_then_given_state_then_the_gap(
    writer: RoomWriter, remote: RemoteServer, db: Database, notifier: Notifier
):
    version = "10"
    room_id = await room_with_remotes(writer, remote, version, {RBOB: 100})
    (fork_point,) = extremities(db, room_id)
    state = current_state(db, room_id)
    # X (not sent to us) then Y on top of X.
    x_id, x_pdu = await remote.event(writer, room_id, RBOB, "m.room.message", MSG)
    _, y_pdu = await remote.event(
        writer, room_id, RBOB, "m.room.topic", {"topic": "Y"}, "", prev=[x_id], state=state
    )
    count = event_count(db)
    with pytest.raises(MissingEventsError) as info:
        await writer.receive_pdu(copy.deepcopy(y_pdu), version, remote.keys)
    assert info.value.what == "prev"
    assert info.value.event_ids == [x_id]
    assert event_count(db) == count
    # With the state before it (from /state_ids) it is accepted.
    y = await writer.receive_pdu(y_pdu, version, remote.keys, state_before=state)
    assert y.accepted
    assert state_before(db, y.event_id) == state
    assert current_state(db, room_id)[("m.room.topic", "")] == y.event_id
    assert extremities(db, room_id) == {fork_point, y.event_id}
    assert notifier.position == y.stream_ordering
    # The gap arrives: X is accepted but is no forward extremity (Y is its child).
    x = await writer.receive_pdu(x_pdu, version, remote.keys)
    assert x.accepted
    assert extremities(db, room_id) == {y.event_id}
    assert current_state(db, room_id)[("m.room.topic", "")] == y.event_id


async def test_missing_state_events_in_given_state(
    writer: RoomWriter, remote: RemoteServer, db: Database
):
    room_id = await room_with_remotes(writer, remote, "10", {RBOB: 100})
    state = current_state(db, room_id)
    x_id, _ = await remote.event(writer, room_id, RBOB, "m.room.message", MSG)
    _, y_pdu = await remote.event(writer, room_id, RBOB, "m.room.message", MSG, prev=[x_id])
    unknown = "$" + "A" * 43
    with pytest.raises(MissingEventsError) as info:
        await writer.receive_pdu(
            y_pdu, "10", remote.keys, state_before={**state, ("m.room.name", ""): unknown}
        )
    assert info.value.what == "state"
    assert info.value.event_ids == [unknown]


@pytest.mark.parametrize("version", ["1", "10", "12"])
async def test_outliers_then_de_outliered(
    writer: RoomWriter, remote: RemoteServer, db: Database, notifier: Notifier, version: str
):
    # A room on the remote server: create, Bob's join, power levels, join rules.
    room_id, create_id, create = remote.create_room(version, RBOB)
    hydra = get_room_version(version).hydra
    base_auth = [] if hydra else [create_id]
    join_id, join = remote.build(
        version,
        room_id,
        RBOB,
        "m.room.member",
        JOIN,
        state_key=RBOB,
        prev=[create_id],
        auth=base_auth,
        depth=2,
    )
    pl_content = {"users": {} if hydra else {RBOB: 100}}
    pl_id, pl = remote.build(
        version,
        room_id,
        RBOB,
        "m.room.power_levels",
        pl_content,
        state_key="",
        prev=[join_id],
        auth=[*base_auth, join_id],
        depth=3,
    )
    jr_id, jr = remote.build(
        version,
        room_id,
        RBOB,
        "m.room.join_rules",
        {"join_rule": "public"},
        state_key="",
        prev=[pl_id],
        auth=[*base_auth, pl_id, join_id],
        depth=4,
    )
    # Missing create: the room is unknown.
    if hydra:
        with pytest.raises(MissingEventsError) as info:
            await writer.receive_pdu(copy.deepcopy(join), version, remote.keys)
        assert info.value.event_ids == [create_id]
    pos = notifier.position
    outliers = []
    for pdu in (create, join, pl, jr):
        got = await writer.receive_pdu(
            copy.deepcopy(pdu), version, remote.keys, kind=EventKind.OUTLIER
        )
        assert got.accepted
        assert got.outlier
        outliers.append(got)
    assert notifier.position == pos
    assert extremities(db, room_id) == set()
    assert current_state(db, room_id) == {}
    assert all(stored(db, o.event_id).state_after is None for o in outliers)
    # Alice's server joins with the state from the remote server.
    state = {
        ("m.room.create", ""): create_id,
        ("m.room.member", RBOB): join_id,
        ("m.room.power_levels", ""): pl_id,
        ("m.room.join_rules", ""): jr_id,
    }
    local = RemoteServer("local.test", key_version="l_1")
    alice_join_id, alice_join = local.build(
        version,
        room_id,
        ALICE,
        "m.room.member",
        JOIN,
        state_key=ALICE,
        prev=[jr_id],
        auth=[*base_auth, pl_id, jr_id],
        depth=5,
        known=remote.pdus,
    )
    keys = {**remote.keys, **local.keys}
    joined = await writer.receive_pdu(alice_join, version, keys, state_before=state)
    assert joined.accepted
    assert not joined.outlier
    assert current_state(db, room_id) == {**state, ("m.room.member", ALICE): alice_join_id}
    assert extremities(db, room_id) == {alice_join_id}
    # Backfill: the outliers become part of the graph, in order.
    for o, pdu in zip(outliers, (create, join, pl, jr), strict=True):
        got = await writer.receive_pdu(copy.deepcopy(pdu), version, remote.keys)
        assert got.accepted
        assert not got.outlier
        assert got.stream_ordering > o.stream_ordering
        row = stored(db, o.event_id)
        assert not row.outlier
        assert row.state_after is not None
    assert state_after(db, jr_id) == state
    assert extremities(db, room_id) == {alice_join_id}
    assert current_state(db, room_id) == {**state, ("m.room.member", ALICE): alice_join_id}
    assert event_count(db) == 5


async def test_a_second_create_event_is_rejected(
    writer: RoomWriter, remote: RemoteServer, db: Database
):
    room_id, create_id, create = remote.create_room("10", RBOB)
    assert (await writer.receive_pdu(create, "10", remote.keys)).accepted
    second = copy.deepcopy(create)
    second["content"]["extra"] = True
    _, second = remote.sign(
        {k: v for k, v in second.items() if k not in ("hashes", "signatures")}, "10"
    )
    got = await writer.receive_pdu(second, "10", remote.keys)
    assert got.rejected is not None
    assert extremities(db, room_id) == {create_id}
    assert current_state(db, room_id) == {("m.room.create", ""): create_id}


async def test_a_rejected_create_event_does_not_make_a_room(
    writer: RoomWriter, remote: RemoteServer, db: Database
):
    room_id, _, create = remote.create_room("10", RBOB)
    bad = {k: v for k, v in create.items() if k not in ("hashes", "signatures")}
    bad["sender"] = "@mallory:elsewhere.test"  # the room ID's server is not the sender's
    other = RemoteServer("elsewhere.test")
    _, bad = other.sign(bad, "10")
    got = await writer.receive_pdu(bad, "10", other.keys)
    assert got.rejected is not None
    assert rows(db, "SELECT count(*) FROM rooms WHERE room_id = ?", room_id) == [(0,)]


async def test_unknown_signing_key_id(writer: RoomWriter, remote: RemoteServer):
    room_id = await public_room(writer, "10")
    _, pdu = await remote.event(writer, room_id, RBOB, "m.room.member", JOIN, RBOB)
    other = generate_signing_key("r_2")
    with pytest.raises(SignatureError):
        await writer.receive_pdu(pdu, "10", {REMOTE: {key_id(other): other.verify_key}})


async def test_events_on_a_rejected_create_event_are_rejected(
    writer: RoomWriter, remote: RemoteServer, db: Database
):
    room_id, _, create = remote.create_room("10", RBOB)
    bad = {k: v for k, v in create.items() if k not in ("hashes", "signatures")}
    bad["content"] = {"room_version": "10"}  # v10 create events need a creator
    bad_id, bad = remote.sign(bad, "10")
    rejected = await writer.receive_pdu(bad, "10", remote.keys)
    assert rejected.rejected is not None
    join_id, join = remote.build(
        "10",
        room_id,
        RBOB,
        "m.room.member",
        JOIN,
        state_key=RBOB,
        prev=[bad_id],
        auth=[bad_id],
        depth=2,
    )
    got = await writer.receive_pdu(join, "10", remote.keys)
    assert got.rejected is not None
    assert stored(db, join_id).rejected == got.rejected
    assert rows(db, "SELECT count(*) FROM rooms") == [(0,)]


async def test_an_event_without_prev_events_is_rejected(
    writer: RoomWriter, remote: RemoteServer, db: Database
):
    room_id = await public_room(writer, "10")
    ext, cur = extremities(db, room_id), current_state(db, room_id)
    _, pdu = await remote.event(writer, room_id, RBOB, "m.room.member", JOIN, RBOB, prev=[])
    got = await writer.receive_pdu(pdu, "10", remote.keys)
    assert got.rejected is not None
    assert extremities(db, room_id) == ext
    assert current_state(db, room_id) == cur


def test_de_outliering_keeps_the_censored_flag(db: Database):
    pdu = {"type": "m.room.message", "sender": "@a:x.test", "content": {"body": "x"}}

    def setup(conn):  # type: ignore[no-untyped-def]
        event_store.insert_event(
            conn,
            "$e",
            "!r:x.test",
            pdu,
            depth=1,
            prev_ids=[],
            auth_ids=[],
            received_ms=1,
            outlier=True,
        )
        event_store.censor_event(conn, "$e", {**pdu, "content": {}})
        return event_store.de_outlier_event(
            conn, "$e", soft_failed=False, rejected=None, state_before=None, state_after=None
        )

    stream = db.write_sync(setup)
    assert rows(db, "SELECT stream_ordering, outlier, censored FROM events") == [(stream, 0, 1)]
    assert stored(db, "$e").pdu["content"] == {}


async def test_redactions_withheld_from_clients(writer: RoomWriter, remote: RemoteServer) -> None:
    """Room v3+ accepts any redaction into the DAG; the ones that may not apply (another
    server's user without the power, another room's event, an unknown event) are
    neither applied nor shown (rooms/fragments/v3-handling-redactions.md; Synapse
    withholds them, SyTest 50federation/39redactions.pl)."""
    room_a = await room_with_remotes(writer, remote, "10", {})
    room_b = await room_with_remotes(writer, remote, "10", {})
    mine = await writer.send_event(room_a, ALICE, "m.room.message", MSG)
    theirs = await remote.send(writer, room_a, RBOB, "m.room.message", MSG)
    cross_room = await remote.send(
        writer, room_b, RBOB, "m.room.redaction", {}, extra={"redacts": mine.event_id}
    )
    no_power = await remote.send(
        writer, room_a, RBOB, "m.room.redaction", {}, extra={"redacts": mine.event_id}
    )
    unknown = await remote.send(
        writer, room_a, RBOB, "m.room.redaction", {}, extra={"redacts": "$nothing:remote.test"}
    )
    own = await remote.send(
        writer, room_a, RBOB, "m.room.redaction", {}, extra={"redacts": theirs.event_id}
    )
    for accepted in (cross_room, no_power, unknown, own):
        assert accepted.accepted
    ids = [e.event_id for e in (mine, theirs, cross_room, no_power, unknown, own)]
    seen = await EventReader(writer.store).get_events(ids)
    assert set(seen) == {mine.event_id, theirs.event_id, own.event_id}
    assert seen[mine.event_id].pdu["content"] == MSG
    assert seen[mine.event_id].redacted_because is None
    assert seen[theirs.event_id].redacted_because_id == own.event_id
