"""Push evaluation against the real room writer: the per-room facts cache and its
invalidation when the room's current state changes."""

from __future__ import annotations

from pocketserver.cache import MemoryBudget
from pocketserver.push.evaluator import PushEvaluator
from pocketserver.push.rules import PushRules
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import PersistedEvent, RoomWriter
from pocketserver.storage import push_counts
from pocketserver.streams.notifier import Notifier

from .conftest import ALICE, BOB, CAROL, LOCAL
from .test_writer_local import make_room

MSG = {"msgtype": "m.text", "body": "hello"}


def _evaluator(
    writer: RoomWriter, store: RoomStore, notifier: Notifier, budget: MemoryBudget
) -> PushEvaluator:
    ev = PushEvaluator(store, PushRules(store.db, notifier, budget), LOCAL, budget=budget)
    writer.add_listener(ev.on_event)
    return ev


async def _join(writer: RoomWriter, room_id: str, user: str, name: str) -> PersistedEvent:
    content = {"membership": "join", "displayname": name}
    return await writer.send_event(room_id, user, "m.room.member", content, user)


async def test_state_changed_is_set_only_when_current_state_changes(writer: RoomWriter) -> None:
    room_id = await make_room(writer, join_rule="public")
    seen: list[PersistedEvent] = []
    writer.add_listener(seen.append)
    await writer.send_event(room_id, ALICE, "m.room.message", MSG)
    await _join(writer, room_id, BOB, "Bob")
    assert [e.state_changed for e in seen] == [False, True]


async def test_room_facts_follow_state_changes(
    writer: RoomWriter, store: RoomStore, notifier: Notifier, budget: MemoryBudget
) -> None:
    ev = _evaluator(writer, store, notifier, budget)
    room_id = await make_room(writer, join_rule="public")
    await _join(writer, room_id, BOB, "Bob")
    facts = await ev.room_facts(room_id)
    assert sorted(facts.local_members) == [(ALICE, None), (BOB, "Bob")]
    assert facts.member_count == 2
    assert await ev.room_facts(room_id) is facts  # cached
    await writer.send_event(room_id, ALICE, "m.room.message", MSG)
    assert await ev.room_facts(room_id) is facts  # a message changes no state

    await _join(writer, room_id, BOB, "Robert")  # a new display name
    facts = await ev.room_facts(room_id)
    assert sorted(facts.local_members) == [(ALICE, None), (BOB, "Robert")]
    await _join(writer, room_id, CAROL, "Carol")
    assert (await ev.room_facts(room_id)).member_count == 3
    await writer.send_event(room_id, CAROL, "m.room.member", {"membership": "leave"}, CAROL)
    assert (await ev.room_facts(room_id)).member_count == 2

    # Power levels are facts too: Bob's level decides .m.rule.is_room_mention.
    pl = {"users": {ALICE: 100, BOB: 50}, "notifications": {"room": 50}}
    before = (await ev.room_facts(room_id)).sender_levels(BOB)
    await writer.send_event(room_id, ALICE, "m.room.power_levels", pl, "")
    after = (await ev.room_facts(room_id)).sender_levels(BOB)
    assert (before[0], after[0]) == (0, 50)


async def test_a_load_overtaken_by_a_state_change_is_not_cached(
    writer: RoomWriter, store: RoomStore, notifier: Notifier, budget: MemoryBudget
) -> None:
    ev = _evaluator(writer, store, notifier, budget)
    room_id = await make_room(writer, join_rule="public")
    real_get_events = store.get_events
    changed: list[bool] = []

    async def get_events_then_change(ids: object) -> object:
        found = await real_get_events(ids)  # type: ignore[arg-type]
        if not changed:  # the room changes while the facts are being loaded
            changed.append(True)
            await _join(writer, room_id, BOB, "Bob")
        return found

    store.get_events = get_events_then_change  # type: ignore[method-assign]
    stale = await ev.room_facts(room_id)
    store.get_events = real_get_events  # type: ignore[method-assign]
    assert stale.member_count == 1  # loaded before Bob joined...
    fresh = await ev.room_facts(room_id)
    assert fresh is not stale  # ...so it was not cached
    assert fresh.member_count == 2


async def test_counts_use_the_new_display_name(
    writer: RoomWriter, store: RoomStore, notifier: Notifier, budget: MemoryBudget
) -> None:
    ev = _evaluator(writer, store, notifier, budget)
    rules = ev._rules
    room_id = await make_room(writer, join_rule="public")
    await _join(writer, room_id, BOB, "Bob")
    await _join(writer, room_id, CAROL, "Carol")
    # Bob is notified for messages only when they contain his display name.
    await rules.set_enabled(BOB, "underride", ".m.rule.message", False)
    # ... not when they contain his localpart "bob" (the legacy content rule).
    await rules.set_enabled(BOB, "content", ".m.rule.contains_user_name", False)
    await rules.put_rule(
        BOB,
        "override",
        "name",
        {"conditions": [{"kind": "contains_display_name"}], "actions": ["notify"]},
    )

    async def send(body: str) -> None:
        event = await writer.send_event(room_id, ALICE, "m.room.message", {"body": body})
        await ev.process([event])

    await send("hi Bob")
    await send("hi Robert")
    await _join(writer, room_id, BOB, "Robert")
    await send("hi Bob")
    await send("hi Robert")
    counts = await store.db.read(push_counts.counts_for_rooms, BOB, [room_id])
    assert counts == {room_id: {"main": (2, 0)}}  # "hi Bob" before, "hi Robert" after
    carol = await store.db.read(push_counts.counts_for_rooms, CAROL, [room_id])
    assert carol == {room_id: {"main": (4, 0)}}  # .m.rule.message
