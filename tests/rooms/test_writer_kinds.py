"""The room writer's input kinds for remote events: live (*new*), old history
(*backfill*) and *outlier*; the batch entry; derived data (push) at the event.

A remote room is joined the way federation will: its state and auth chain arrive as a
batch of outliers, then live events, then backfilled history, all signed by the test
remote server's key.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from pocketserver.cache import MemoryBudget
from pocketserver.core.event_filter import EventFilter
from pocketserver.core.room_versions import get_room_version
from pocketserver.errors import MatrixError
from pocketserver.push.evaluator import PushEvaluator
from pocketserver.push.rules import PushRules
from pocketserver.ratelimit import RateLimit, RateLimiter
from pocketserver.rooms.client import RoomClient
from pocketserver.rooms.history import History, parse_token
from pocketserver.rooms.reading import EventReader
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import EventKind, MissingEventsError, PersistedEvent, RoomWriter
from pocketserver.storage import history as history_store
from pocketserver.storage import stream as stream_store
from pocketserver.storage.db import Database
from pocketserver.storage.push_counts import Notify
from pocketserver.streams.notifier import Notifier

from .conftest import (
    ALICE,
    BOB,
    LOCAL,
    RBOB,
    RCAROL,
    REMOTE,
    RemoteServer,
    current_state,
    event_count,
    extremities,
    rows,
    stored,
)

MSG = {"msgtype": "m.text", "body": "hi"}
JOIN = {"membership": "join"}
Pdu = dict[str, Any]


class _RemoteRoom:
    """A room on the remote server: its state, history m1..m3, then Carol's join and m4."""

    def __init__(self, remote: RemoteServer, version: str) -> None:
        self.version = version
        self.hydra = get_room_version(version).hydra
        self.room_id, self.create, create_pdu = remote.create_room(version, RBOB)
        self.pdus: dict[str, Pdu] = {self.create: create_pdu}
        self.order = [self.create]
        self._remote = remote
        self.join = self._add(RBOB, "m.room.member", JOIN, RBOB, auth=[])
        levels = {"users": {} if self.hydra else {RBOB: 100}}  # v12: creators are not listed
        self.pl = self._add(RBOB, "m.room.power_levels", levels, "", [self.join])
        self.jr = self._add(
            RBOB, "m.room.join_rules", {"join_rule": "public"}, "", [self.pl, self.join]
        )
        self.state_ids = list(self.order)
        self.history = [
            self._add(RBOB, "m.room.message", {"body": f"m{i}"}, None, [self.pl, self.join])
            for i in (1, 2, 3)
        ]
        self.carol = self._add(RCAROL, "m.room.member", JOIN, RCAROL, [self.jr, self.pl])
        self.m4 = self._add(RCAROL, "m.room.message", {"body": "m4"}, None, [self.pl, self.carol])

    def _add(
        self, sender: str, etype: str, content: Any, state_key: str | None, auth: list[str]
    ) -> str:
        prev = self.order[-1]
        auth = auth if self.hydra else [self.create, *auth]
        event_id, pdu = self._remote.build(
            self.version,
            self.room_id,
            sender,
            etype,
            content,
            state_key=state_key,
            prev=[prev],
            auth=auth,
            depth=len(self.order) + 1,
        )
        self.pdus[event_id] = pdu
        self.order.append(event_id)
        return event_id

    def state_before_carol(self) -> dict[tuple[str, str], str]:
        return {
            ("m.room.create", ""): self.create,
            ("m.room.member", RBOB): self.join,
            ("m.room.power_levels", ""): self.pl,
            ("m.room.join_rules", ""): self.jr,
        }

    def get(self, *event_ids: str) -> list[Pdu]:
        return [copy.deepcopy(self.pdus[e]) for e in event_ids]


def _client(writer: RoomWriter, store: RoomStore) -> RoomClient:
    return RoomClient(writer, EventReader(store), RateLimiter(RateLimit(1000, 1000)))


async def _join_remote_room(
    writer: RoomWriter, remote: RemoteServer, version: str
) -> tuple[_RemoteRoom, list[PersistedEvent]]:
    """The room's state as a batch of outliers (shuffled: the writer orders it), then
    Carol's join and m4 live."""
    room = _RemoteRoom(remote, version)
    state = room.get(*room.state_ids)
    random.Random(4).shuffle(state)
    outliers = await writer.receive_batch(room.room_id, version, state, remote.keys)
    carol = await writer.receive_pdu(
        room.get(room.carol)[0], version, remote.keys, state_before=room.state_before_carol()
    )
    m4 = await writer.receive_pdu(room.get(room.m4)[0], version, remote.keys)
    assert carol.accepted, carol.rejected
    assert m4.accepted, m4.rejected
    return room, [*outliers, carol, m4]


@pytest.mark.parametrize("version", ["10", "12"])
async def test_outliers_have_no_place_in_the_timeline(
    writer: RoomWriter, remote: RemoteServer, db: Database, notifier: Notifier, version: str
) -> None:
    room = _RemoteRoom(remote, version)
    seen: list[PersistedEvent] = []
    writer.add_listener(seen.append)
    state = room.get(*room.state_ids)
    random.Random(1).shuffle(state)
    result = await writer.receive_batch(room.room_id, version, state, remote.keys)
    assert [p.event_id for p in result] == room.state_ids  # in auth order
    assert all(p.kind is EventKind.OUTLIER and p.accepted and not p.live for p in result)
    assert all(p.origin == REMOTE for p in result)
    assert await writer.store.room_version(room.room_id) == version
    for event_id in room.state_ids:
        ev = stored(db, event_id)
        assert ev.outlier
        assert (ev.state_before, ev.state_after) == (None, None)
    assert extremities(db, room.room_id) == set()
    assert current_state(db, room.room_id) == {}
    assert db.read_sync(history_store.room_events, room.room_id, [], [], False, 50) == []
    assert notifier.position == 0  # nothing woke /sync
    assert [p.event_id for p in seen] == room.state_ids
    # Received again as outliers: the same rows, nothing new stored.
    count = event_count(db)
    again = await writer.receive_batch(
        room.room_id, version, room.get(*room.state_ids), remote.keys
    )
    assert [p.stream_ordering for p in again] == [p.stream_ordering for p in result]
    assert event_count(db) == count


@pytest.mark.parametrize("version", ["10", "12"])
async def test_backfill_is_history_not_news(
    writer: RoomWriter,
    remote: RemoteServer,
    store: RoomStore,
    db: Database,
    notifier: Notifier,
    budget: MemoryBudget,
    version: str,
) -> None:
    evaluator = PushEvaluator(store, PushRules(db, notifier, budget), LOCAL, budget=budget)
    writer.add_listener(evaluator.on_event)
    room, live = await _join_remote_room(writer, remote, version)
    room_id = room.room_id
    carol, m4 = live[-2:]
    assert m4.kind is EventKind.NEW
    assert m4.live
    assert extremities(db, room_id) == {room.m4}
    state_now = current_state(db, room_id)
    position, wakes = notifier.position, notifier.statistics().notifications
    queued = evaluator.statistics().queued
    assert queued == 2  # the live events were offered to push evaluation

    # Backfill the whole history before Carol's join (newest first, as /backfill
    # answers): the outliers among it get their state and place, below every event.
    older = [*reversed(room.history), *reversed(room.state_ids)]
    backfilled = await writer.receive_batch(
        room_id, version, room.get(*older), remote.keys, kind=EventKind.BACKFILL
    )
    assert [p.event_id for p in backfilled] == [*room.state_ids, *room.history]
    # Numbered upwards in DAG order, below everything stored before.
    orderings = [p.stream_ordering for p in backfilled]
    assert orderings == sorted(orderings)
    assert orderings[-1] < 0
    for p in backfilled:
        assert p.kind is EventKind.BACKFILL, p.event_id
        assert p.accepted, p.rejected
        assert not p.live
        assert p.stream_ordering < 0 < carol.stream_ordering
        ev = stored(db, p.event_id)
        assert not ev.outlier
        assert ev.state_after is not None or ev.type == "m.room.create"
    # Never an extremity, never a change of the current state.
    assert extremities(db, room_id) == {room.m4}
    assert current_state(db, room_id) == state_now
    # Nothing woke /sync or reached push evaluation, and no sync token sees it as new.
    assert (notifier.position, notifier.statistics().notifications) == (position, wakes)
    assert evaluator.statistics().queued == queued
    since_zero, _ = db.read_sync(stream_store.recent_event_ids, room_id, 0, notifier.position, 100)
    assert since_zero == [room.carol, room.m4]
    # A late live event still goes on top of the extremity.
    m5 = await remote.send(writer, room_id, RCAROL, "m.room.message", MSG)
    assert m5.live
    assert extremities(db, room_id) == {m5.event_id}

    # /messages walks the DAG: newest first, backfilled history after the live events.
    history = History(_client(writer, store))
    everything = [*room.order, m5.event_id]
    walked: list[str] = []
    token = None
    while True:
        page = await history.messages(
            RCAROL,
            room_id,
            from_pos=token,
            to_pos=None,
            forwards=False,
            limit=3,
            flt=EventFilter(),
        )
        walked += [ev.event_id for ev in page.chunk]
        if page.end is None:
            break
        token = parse_token(page.end.encode())
        assert token.depth is not None  # a topological token
    assert walked == list(reversed(everything))
    # And forwards from the start of the room.
    page = await history.messages(
        RCAROL, room_id, from_pos=None, to_pos=None, forwards=True, limit=100, flt=EventFilter()
    )
    assert [ev.event_id for ev in page.chunk] == everything
    # /context around a backfilled event sees its DAG neighbours, live ones included.
    ctx = await history.context(RCAROL, room_id, room.history[2], limit=4, flt=EventFilter())
    assert [ev.event_id for ev in ctx.before] == [room.history[1], room.history[0]]
    assert [ev.event_id for ev in ctx.after] == [room.carol, room.m4]
    before = await history.messages(
        RCAROL, room_id, from_pos=ctx.start, to_pos=None, forwards=False, limit=1,
        flt=EventFilter(),
    )  # fmt: skip
    assert [ev.event_id for ev in before.chunk] == [room.jr]
    after = await history.messages(
        RCAROL, room_id, from_pos=ctx.end, to_pos=None, forwards=True, limit=5, flt=EventFilter()
    )
    assert [ev.event_id for ev in after.chunk] == [m5.event_id]


async def test_a_sync_prev_batch_stream_token_pages_into_backfill(
    writer: RoomWriter, remote: RemoteServer, store: RoomStore
) -> None:
    """``t<N>`` (a sync prev_batch, or a token given before history went topological)
    still pages back, through the live events into backfilled history."""
    room, _ = await _join_remote_room(writer, remote, "10")
    # m1's prev event is an outlier (no state): its state comes with it (/state_ids).
    m1 = await writer.receive_pdu(
        room.get(room.history[0])[0],
        "10",
        remote.keys,
        kind=EventKind.BACKFILL,
        state_before=room.state_before_carol(),
    )
    assert m1.kind is EventKind.BACKFILL
    assert m1.stream_ordering < 0
    # After a restart (a new writer on the same database) ...
    restarted = RoomWriter(writer.store, LOCAL, writer._signing_key, Notifier())
    rest = await restarted.receive_batch(
        room.room_id, "10", room.get(*room.history[1:]), remote.keys, kind=EventKind.BACKFILL
    )
    # ... each backfill still goes below the one before (backfill goes back in time).
    assert rest[1].stream_ordering < m1.stream_ordering
    assert rest[0].stream_ordering < rest[1].stream_ordering
    m4 = stored(writer.store.db, room.m4)
    history = History(_client(writer, store))
    page = await history.messages(
        RCAROL,
        room.room_id,
        from_pos=parse_token(f"t{m4.stream_ordering}"),
        to_pos=None,
        forwards=False,
        limit=3,
        flt=EventFilter(),
    )
    assert [ev.event_id for ev in page.chunk] == [room.carol, *reversed(room.history[1:])]
    for bad in ("t1-", "t--2", "s5", "t1-2-3"):
        with pytest.raises(MatrixError) as exc:
            parse_token(bad)
        assert (exc.value.status, exc.value.errcode) == (400, "M_INVALID_PARAM")


async def test_a_batch_of_outliers_is_a_few_transactions(
    writer: RoomWriter, remote: RemoteServer, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A send_join answer of 2,000 member events (and the room's first state) goes in as
    three write transactions, each event still checked."""
    version = "10"
    room = _RemoteRoom(remote, version)
    pdus = room.get(*room.state_ids)
    prev = room.jr
    auth = [room.create, room.jr, room.pl]
    for n in range(2000):
        user = f"@u{n}:{REMOTE}"
        prev, pdu = remote.build(
            version,
            room.room_id,
            user,
            "m.room.member",
            JOIN,
            state_key=user,
            prev=[prev],
            auth=auth,
            depth=5 + n,
        )
        pdus.append(pdu)
    # One event is forged (bad signature): dropped. One claims to be a join of another
    # user than its sender: stored, rejected by the auth rules.
    forged = copy.deepcopy(pdus[-1])
    forged["content"] = {"membership": "join", "displayname": "forged"}
    mallory = f"@mallory:{REMOTE}"
    _, wrong = remote.build(
        version, room.room_id, mallory, "m.room.member", JOIN, state_key=f"@x:{REMOTE}",
        prev=[room.jr], auth=auth, depth=5,
    )  # fmt: skip
    writes = 0
    real_write = db.write

    async def counting_write(fn: Any, *args: Any) -> Any:
        nonlocal writes
        writes += 1
        return await real_write(fn, *args)

    reads = 0
    real_read = db.read

    async def counting_read(fn: Any, *args: Any) -> Any:
        nonlocal reads
        reads += 1
        return await real_read(fn, *args)

    monkeypatch.setattr(db, "write", counting_write)
    monkeypatch.setattr(db, "read", counting_read)
    before = event_count(db)
    result = await writer.receive_batch(
        room.room_id, version, [*reversed(pdus), forged, wrong], remote.keys
    )
    assert writes == 3  # 2,005 events, 1,000 a transaction
    assert reads <= 5  # not one per event either
    assert event_count(db) == before + 2005
    assert len(result) == 2005
    rejected = [p for p in result if p.rejected]
    assert [p.pdu["state_key"] for p in rejected] == [f"@x:{REMOTE}"]
    assert all(p.outlier for p in result)
    outliers = rows(db, "SELECT count(*) FROM events WHERE outlier = 1")[0][0]
    assert outliers == 2005
    assert extremities(db, room.room_id) == set()


async def test_a_batch_missing_auth_events_stores_nothing(
    writer: RoomWriter, remote: RemoteServer, db: Database
) -> None:
    room = _RemoteRoom(remote, "10")
    without_pl = room.get(room.create, room.join, room.jr)  # jr cites pl
    with pytest.raises(MissingEventsError) as exc:
        await writer.receive_batch(room.room_id, "10", without_pl, remote.keys)
    assert exc.value.event_ids == [room.pl]
    assert event_count(db) == 0


async def test_push_of_a_forked_event_reads_the_state_at_it(
    writer: RoomWriter,
    remote: RemoteServer,
    store: RoomStore,
    db: Database,
    notifier: Notifier,
    budget: MemoryBudget,
) -> None:
    """Bob (local) is a member where a remote fork begins but has left in the current
    state: the forked message notifies him, a message on top of the room does not."""
    evaluator = PushEvaluator(store, PushRules(db, notifier, budget), LOCAL, budget=budget)
    notified: list[Notify] = []
    evaluator.notification_listeners.append(notified.extend)
    from .test_writer_remote import public_room

    room_id = await public_room(writer, "10")
    await writer.send_event(room_id, BOB, "m.room.member", JOIN, BOB)
    joined = await remote.send(writer, room_id, RBOB, "m.room.member", JOIN, RBOB)
    fork_point = sorted(extremities(db, room_id))
    fork_state = current_state(db, room_id)
    await writer.send_event(room_id, BOB, "m.room.member", {"membership": "leave"}, BOB)
    _, pdu = await remote.event(
        writer, room_id, RBOB, "m.room.message", MSG, prev=fork_point, state=fork_state
    )
    forked = await writer.receive_pdu(pdu, "10", remote.keys)
    assert forked.live, forked.rejected
    assert not forked.at_current
    assert forked.state_before == stored(db, joined.event_id).state_after
    on_top = await remote.send(writer, room_id, RBOB, "m.room.message", MSG)
    assert on_top.at_current
    await evaluator.process([forked, on_top])
    by_event = {(n.event_id, n.user_id) for n in notified}
    assert (forked.event_id, BOB) in by_event
    assert (forked.event_id, ALICE) in by_event
    assert (on_top.event_id, BOB) not in by_event
    assert (on_top.event_id, ALICE) in by_event


async def test_search_index_judges_a_forked_redaction_by_the_state_at_it(
    writer: RoomWriter, remote: RemoteServer, db: Database
) -> None:
    """Remote Bob may redact (level 50) where his fork begins, not in the current state
    (demoted): his forked redaction removes its target from the index, a redaction he
    sends on top of the room does not."""
    from pocketserver.rooms.search_index import index_event

    from .test_writer_remote import public_room

    writer.add_txn_hook(index_event)
    room_id = await public_room(writer, "10")
    await remote.send(writer, room_id, RBOB, "m.room.member", JOIN, RBOB)
    secret = await writer.send_event(room_id, ALICE, "m.room.message", {"body": "secret one"})
    other = await writer.send_event(room_id, ALICE, "m.room.message", {"body": "secret two"})
    levels = {"users": {ALICE: 100, RBOB: 50}, "redact": 50}
    await writer.send_event(room_id, ALICE, "m.room.power_levels", levels, "")
    fork_point = sorted(extremities(db, room_id))
    fork_state = current_state(db, room_id)
    demoted = {"users": {ALICE: 100}, "redact": 50}
    await writer.send_event(room_id, ALICE, "m.room.power_levels", demoted, "")

    def indexed() -> set[int]:
        return {r[0] for r in rows(db, "SELECT rowid FROM event_search")}

    assert {secret.stream_ordering, other.stream_ordering} <= indexed()
    redaction = {"redacts": secret.event_id}
    _, pdu = await remote.event(
        writer, room_id, RBOB, "m.room.redaction", {}, prev=fork_point, state=fork_state,
        extra=redaction,
    )  # fmt: skip
    forked = await writer.receive_pdu(pdu, "10", remote.keys)
    assert forked.live, forked.rejected
    assert not forked.at_current
    assert secret.stream_ordering not in indexed()
    on_top = await remote.send(
        writer, room_id, RBOB, "m.room.redaction", {}, extra={"redacts": other.event_id}
    )
    assert on_top.live, on_top.rejected
    assert other.stream_ordering in indexed()
