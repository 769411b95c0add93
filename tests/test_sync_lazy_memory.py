"""The per-device memory of lazy-loaded members: known only after a response the
client went on from, forgotten by a new epoch, bounded by bytes."""

from __future__ import annotations

from pocketserver.cache import MemoryBudget
from pocketserver.sync.lazy_members import SentMembers


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
