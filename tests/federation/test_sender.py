"""The federation sender (pocketserver/federation/sender/) against an in-process fake of
the other servers: batching, one transaction in flight, backoff, catch-up, restarts."""

from __future__ import annotations

import trio

from pocketserver.federation.sender import queue as queue_mod
from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage import federation_sender as store
from pocketserver.storage.db import Database

from ..rooms.conftest import ALICE, LOCAL, REMOTE, RemoteServer, rows
from .conftest import FakeFederation, SenderHarness, room_with, say, settle, until

MIN_MS = 600_000


def timings(db: Database, destination: str) -> store.RetryTimings:
    return db.read_sync(store.retry_timings, destination)


async def test_sixty_events_go_as_fifty_then_ten_one_transaction_at_a_time(
    harness: SenderHarness, writer: RoomWriter, remote: RemoteServer, fed: FakeFederation
) -> None:
    room_id = await room_with(writer, remote)
    sender = await harness.start()
    fed.gate = trio.Event()  # the first transaction waits: the rest queue up behind it
    await say(writer, room_id, "first")
    await until(lambda: fed.in_flight[REMOTE] == 1)
    await say(writer, room_id, *(f"m{i}" for i in range(60)))
    await settle()
    assert fed.attempts[REMOTE] == 1  # still only the one transaction
    fed.gate.set()
    await until(lambda: len(fed.to(REMOTE)) == 3)
    first, fifty, ten = fed.to(REMOTE)
    assert first.bodies == ["first"]
    assert fifty.bodies == [f"m{i}" for i in range(50)]
    assert ten.bodies == [f"m{i}" for i in range(50, 60)]
    assert fed.most_in_flight[REMOTE] == 1
    assert [s.destination for s in fed.sent] == [REMOTE] * 3
    assert len({t.txn_id for t in fed.sent}) == 3
    body = ten.body
    assert body["origin"] == LOCAL
    assert isinstance(body["origin_server_ts"], int)
    assert body["edus"] == []
    stats = sender.statistics()
    assert stats.transactions_sent == 3
    assert stats.pending_pdus == 0


async def test_only_our_live_events_go_to_the_servers_in_the_room(
    harness: SenderHarness,
    writer: RoomWriter,
    remote: RemoteServer,
    fed: FakeFederation,
    db: Database,
) -> None:
    other = RemoteServer("other.test", "o_1")
    invited = "@dave:invited.test"
    room_id = await room_with(writer, remote, other)
    lonely = await room_with(writer)
    await harness.start()
    await say(writer, lonely, "nobody else here")
    await remote.send(writer, room_id, f"@user:{REMOTE}", "m.room.message", {"body": "theirs"})
    await writer.send_event(room_id, ALICE, "m.room.member", {"membership": "invite"}, invited)
    await until(lambda: len(fed.sent) == 2)
    await settle()
    # The invitee's server gets its invite through /invite, not in a transaction.
    assert sorted(s.destination for s in fed.sent) == ["other.test", REMOTE]
    assert all(s.bodies == ["m.room.member"] for s in fed.sent)
    owed = rows(db, "SELECT DISTINCT room_id FROM federation_destination_rooms")
    assert owed == [(room_id,)]  # the room with nobody else costs nothing


async def test_backoff_grows_is_remembered_and_ends_when_the_server_contacts_us(
    harness: SenderHarness,
    writer: RoomWriter,
    remote: RemoteServer,
    fed: FakeFederation,
    db: Database,
    clock,
) -> None:
    room_id = await room_with(writer, remote)
    sender = await harness.start()
    fed.down.add(REMOTE)
    await say(writer, room_id, "one")
    await until(lambda: timings(db, REMOTE).retry_interval_ms > 0)
    first = timings(db, REMOTE)
    assert first.retry_interval_ms == MIN_MS  # Synapse's destination_min_retry_interval
    assert first.failure_ts == clock.ms
    # While backing off, new events are recorded but nothing is tried.
    await say(writer, room_id, "two")
    await settle()
    assert fed.attempts[REMOTE] == 1
    assert sender.statistics().destinations_in_memory == 0
    # Due again: the wake loop tries, fails, and the interval grows (x2, jitter 0.8-1.4).
    clock.ms += MIN_MS
    await until(lambda: fed.attempts[REMOTE] == 2)
    await until(lambda: timings(db, REMOTE).retry_interval_ms != MIN_MS)
    second = timings(db, REMOTE)
    assert 2 * 0.8 * MIN_MS <= second.retry_interval_ms <= 2 * 1.4 * MIN_MS
    assert second.failure_ts == first.failure_ts
    # The server comes back and talks to us: the backoff ends and it gets what it is owed.
    fed.down.discard(REMOTE)
    sender.on_remote_contact(REMOTE)
    await until(lambda: len(fed.to(REMOTE)) == 1)
    assert fed.to(REMOTE)[0].bodies == ["two"]  # catch-up: the room's latest event
    assert timings(db, REMOTE) == store.NO_BACKOFF
    # Known to be up: another contact costs nothing.
    sender.on_remote_contact(REMOTE)
    await say(writer, room_id, "three")
    await until(lambda: len(fed.to(REMOTE)) == 2)
    assert fed.to(REMOTE)[1].bodies == ["three"]


async def test_backoff_never_exceeds_a_week() -> None:
    backoff = queue_mod.DESTINATION_BACKOFF
    delay, seen = 0.0, []
    for _ in range(40):
        delay = backoff.next(delay, lambda lo, hi: hi)
        seen.append(delay)
    assert seen[0] == 600
    assert seen[1] == 600 * 2 * 1.4
    assert max(seen) == seen[-1] == 7 * 86400
    assert backoff.next(1000.0, lambda lo, hi: lo) == 1000 * 2 * 0.8


async def test_catch_up_sends_only_each_rooms_latest_event(
    harness: SenderHarness,
    writer: RoomWriter,
    remote: RemoteServer,
    fed: FakeFederation,
    db: Database,
) -> None:
    rooms = [await room_with(writer, remote) for _ in range(3)]
    sender = await harness.start()
    fed.down.add(REMOTE)
    for n, room_id in enumerate(rooms):
        await say(writer, room_id, *(f"r{n}-{i}" for i in range(20)))
    await until(lambda: timings(db, REMOTE).retry_interval_ms > 0)
    await settle()
    fed.down.discard(REMOTE)
    sender.on_remote_contact(REMOTE)
    await until(lambda: len(fed.to(REMOTE)) == 3)
    await settle()
    assert [t.bodies for t in fed.to(REMOTE)] == [["r0-19"], ["r1-19"], ["r2-19"]]
    assert sender.statistics().catch_up_transactions == 3
    # Caught up: back to sending every event.
    await say(writer, rooms[0], "a", "b")
    await until(lambda: sum(len(t.bodies) for t in fed.to(REMOTE)) == 5)
    assert [b for t in fed.to(REMOTE)[3:] for b in t.bodies] == ["a", "b"]


async def test_owed_events_and_backoff_survive_a_restart(
    harness: SenderHarness,
    writer: RoomWriter,
    remote: RemoteServer,
    fed: FakeFederation,
    db: Database,
    clock,
) -> None:
    rooms = [await room_with(writer, remote) for _ in range(2)]
    await harness.start()
    fed.down.add(REMOTE)
    await say(writer, rooms[0], "a1", "a2")
    await say(writer, rooms[1], "b1")
    await until(lambda: timings(db, REMOTE).retry_interval_ms > 0)
    await settle()
    await harness.stop()
    fed.down.discard(REMOTE)
    # Events sent while no sender runs are matched when it starts again.
    await say(writer, rooms[1], "b2")
    await harness.start()
    await settle()
    assert fed.attempts[REMOTE] == 1  # the stored backoff holds across the restart
    assert fed.sent == []
    clock.ms += MIN_MS
    await until(lambda: len(fed.to(REMOTE)) == 2)
    assert [t.bodies for t in fed.to(REMOTE)] == [["a2"], ["b2"]]
    assert timings(db, REMOTE) == store.NO_BACKOFF


async def test_a_restart_in_mid_stream_sends_what_was_not_acknowledged(
    harness: SenderHarness,
    writer: RoomWriter,
    remote: RemoteServer,
    fed: FakeFederation,
) -> None:
    room_id = await room_with(writer, remote)
    await harness.start()
    fed.gate = trio.Event()
    await say(writer, room_id, "in flight")
    await until(lambda: fed.in_flight[REMOTE] == 1)
    await harness.stop()  # the transaction never got its answer
    fed.gate = None
    await harness.start()
    await until(lambda: len(fed.to(REMOTE)) == 1)
    assert fed.to(REMOTE)[0].bodies == ["in flight"]


async def test_falling_far_behind_a_live_destination_catches_up(
    harness: SenderHarness,
    writer: RoomWriter,
    remote: RemoteServer,
    fed: FakeFederation,
) -> None:
    room_id = await room_with(writer, remote)
    sender = await harness.start()
    fed.gate = trio.Event()
    await say(writer, room_id, "first")
    await until(lambda: fed.in_flight[REMOTE] == 1)
    cap = queue_mod.PENDING_PDU_CAP
    await say(writer, room_id, *(f"m{i}" for i in range(cap + 5)))
    await settle()
    assert sender.statistics().pending_pdus <= cap
    fed.gate.set()
    await until(lambda: len(fed.to(REMOTE)) == 2)
    await settle()
    assert [t.bodies for t in fed.to(REMOTE)] == [["first"], [f"m{cap + 4}"]]


async def test_a_ban_reaches_the_banned_server_and_a_rescinded_invite_the_invitee(
    harness: SenderHarness, writer: RoomWriter, remote: RemoteServer, fed: FakeFederation
) -> None:
    room_id = await room_with(writer, remote)
    await harness.start()
    invited = "@dave:invited.test"
    await writer.send_event(room_id, ALICE, "m.room.member", {"membership": "invite"}, invited)
    await writer.send_event(room_id, ALICE, "m.room.member", {"membership": "leave"}, invited)
    user = f"@user:{REMOTE}"
    await writer.send_event(room_id, ALICE, "m.room.member", {"membership": "ban"}, user)
    await say(writer, room_id, "after the ban")
    await until(lambda: sum(len(t.bodies) for t in fed.to(REMOTE)) == 3)
    await settle()
    # The last member of remote.test was banned: the ban goes there (state before it),
    # what follows does not.
    pdus = [p for t in fed.to(REMOTE) for p in t.body["pdus"]]
    assert [(p["content"]["membership"], p["state_key"]) for p in pdus][-1] == ("ban", user)
    assert all(p["type"] == "m.room.member" for p in pdus)
    invitee = [p["content"]["membership"] for t in fed.to("invited.test") for p in t.body["pdus"]]
    assert invitee == ["leave"]  # the rescinded invite (the invite went by /invite)


async def test_a_broken_client_only_backs_that_destination_off(
    harness: SenderHarness,
    writer: RoomWriter,
    remote: RemoteServer,
    fed: FakeFederation,
    db: Database,
) -> None:
    other = RemoteServer("other.test", "o_1")
    room_id = await room_with(writer, remote, other)
    real_put = fed.put_json

    async def put_json(destination: str, path: str, body: dict, timeout: float) -> dict:  # noqa: ASYNC109
        if destination == REMOTE:
            raise RuntimeError("a bug in the client")
        return await real_put(destination, path, body, timeout)

    fed.put_json = put_json  # type: ignore[method-assign]
    await harness.start()
    await say(writer, room_id, "hello")
    await until(lambda: timings(db, REMOTE).retry_interval_ms == MIN_MS)
    await until(lambda: len(fed.to("other.test")) == 1)
    await say(writer, room_id, "still running")
    await until(lambda: len(fed.to("other.test")) == 2)
