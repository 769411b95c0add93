"""The per-device memory of lazy-loaded members: known only after a response the
client went on from, forgotten by a new epoch, bounded by bytes."""

from __future__ import annotations

from pocketserver.cache import MemoryBudget
from pocketserver.rooms.reading import ReadEvent
from pocketserver.sync.lazy_members import SentMembers, members_to_fetch


def test_known_only_from_responses_the_client_went_on_from() -> None:
    sent = SentMembers()
    first = sent.request("@a:x", "DEV", 10, 20, reset=False)
    assert not first.known("!r:x", "@b:x", "$m1")
    first.mark("!r:x", "@b:x", "$m1")
    # A retry from the same token: the response at 20 was not received.
    assert not sent.request("@a:x", "DEV", 10, 21, reset=False).known("!r:x", "@b:x", "$m1")
    later = sent.request("@a:x", "DEV", 20, 30, reset=False)
    assert later.known("!r:x", "@b:x", "$m1")
    assert not later.known("!r:x", "@b:x", "$m2")  # a newer member event is not known
    assert not later.known("!other:x", "@b:x", "$m1")
    # Another device of the same user knows nothing.
    assert not sent.request("@a:x", "DEV2", 20, 30, reset=False).known("!r:x", "@b:x", "$m1")


def test_initial_or_full_state_sync_forgets() -> None:
    sent = SentMembers()
    sent.request("@a:x", "DEV", 10, 20, reset=False).mark("!r:x", "@b:x", "$m1")
    assert sent.request("@a:x", "DEV", 20, 30, reset=False).known("!r:x", "@b:x", "$m1")
    sent.request("@a:x", "DEV", None, 40, reset=False)  # an initial sync
    assert not sent.request("@a:x", "DEV", 40, 50, reset=False).known("!r:x", "@b:x", "$m1")
    sent.request("@a:x", "DEV", 40, 50, reset=False).mark("!r:x", "@b:x", "$m1")
    sent.request("@a:x", "DEV", 50, 60, reset=True)  # full_state
    assert not sent.request("@a:x", "DEV", 60, 70, reset=False).known("!r:x", "@b:x", "$m1")


def test_memory_is_bounded_by_the_budget() -> None:
    budget = MemoryBudget(16 << 20)
    sent = SentMembers(budget)
    memory = sent.request("@a:x", "DEV", 0, 1, reset=False)
    for i in range(50_000):
        memory.mark(f"!room{i % 100}:x", f"@user{i}:x", f"$event{i}")
    stats = {s.name: s for s in budget.statistics()}
    held = stats["lazy_members_sent"]
    assert held.size_bytes <= held.max_bytes
    assert held.evictions > 0
    # Evicted means unknown: sent again, never wrongly assumed known.
    assert not sent.request("@a:x", "DEV", 1, 2, reset=False).known(
        "!room0:x", "@user0:x", "$event0"
    )


def _ev(event_id: str, sender: str, etype: str = "m.room.message", **extra: object) -> ReadEvent:
    pdu: dict[str, object] = {"type": etype, "sender": sender, "content": {}, **extra}
    return ReadEvent(event_id, "!r:x", 1, pdu, "10")


def test_members_to_fetch_skips_senders_whose_join_came_first() -> None:
    timeline = [
        _ev("$1", "@a:x"),
        _ev("$2", "@a:x", "m.room.member", state_key="@c:x"),  # e.g. an invite, then a join
        _ev("$3", "@c:x"),
    ]
    assert members_to_fetch(timeline, every_sender=False) == {"@a:x"}
    assert members_to_fetch(timeline, every_sender=True) == {"@a:x", "@c:x"}


def test_send_keeps_changes_and_unknown_members_and_records_the_timeline() -> None:
    sent = SentMembers()
    before = sent.request("@me:x", "D", 0, 10, reset=False)
    before.mark("!r:x", "@old:x", "$old")
    memory = sent.request("@me:x", "D", 10, 20, reset=False)
    state = {("m.room.member", "@old:x"): "$old", ("m.room.member", "@new:x"): "$new"}
    assert memory.send("!r:x", state, set(), [], skip_known=True) == {
        ("m.room.member", "@new:x"): "$new"
    }
    changed = {("m.room.member", "@old:x")}
    assert memory.send("!r:x", state, changed, [], skip_known=True) == state
    assert memory.send("!r:x", state, set(), [], skip_known=False) == state
    joined = _ev("$j", "@tl:x", "m.room.member", state_key="@tl:x")
    memory.send("!r:x", {}, set(), [joined], skip_known=True)
    assert sent.request("@me:x", "D", 20, 30, reset=False).known("!r:x", "@tl:x", "$j")
