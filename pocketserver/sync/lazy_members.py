"""Which member events each device has been sent, for lazy-loading /sync.

Spec: client-server-api "Lazy-loading room members": with ``lazy_load_members`` the
server sends the ``m.room.member`` event of each timeline sender; it "MAY assume that
clients will remember membership events they have already been sent" and skip
those ("redundant membership events") unless ``include_redundant_members`` is set.

The memory is a hint, never a source of truth: a member is taken as known only when
the same member event was sent in a response whose ``next_batch`` is at or before
the request's ``since`` (so a response the client never received, or a retry with
an older token, does not count). Whatever is not remembered (evicted, another
process, after a restart) is sent again: redundant, never missing. This is the
rule of Synapse's per-device ``LazyLoadedMembersCache``.

Each initial or full-state sync starts a new *epoch* for its device, taken from one
process-wide counter, so members sent before it are forgotten at once (the client
may have dropped its store) and an epoch lost from the cache is never confused
with an older one. Both maps are byte-bounded LRUs from the memory budget.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from pocketserver.cache import LruCache, MemoryBudget
from pocketserver.rooms.reading import ReadEvent

StateKey = tuple[str, str]

SENT_CACHE_SHARE, SENT_CACHE_BYTES = 0.02, 2 << 20
EPOCH_CACHE_SHARE, EPOCH_CACHE_BYTES = 0.002, 256 << 10


def members_to_fetch(timeline: Sequence[ReadEvent], *, every_sender: bool) -> set[str]:
    """Timeline senders whose member event the client needs from ``state``: all of them
    with ``every_sender`` (``use_state_after``), else those whose own member event does
    not come earlier in the timeline (as Synapse's ``compute_state_delta``)."""
    wanted: set[str] = set()
    in_timeline: set[str] = set()
    for ev in timeline:
        sender = str(ev.pdu.get("sender"))
        if every_sender or sender not in in_timeline:
            wanted.add(sender)
        if ev.pdu.get("type") == "m.room.member" and isinstance(ev.pdu.get("state_key"), str):
            in_timeline.add(str(ev.pdu["state_key"]))
    return wanted


class SentMembers:
    """Per device: member events sent, with the response position they went out at."""

    def __init__(self, budget: MemoryBudget | None = None) -> None:
        self._epochs: LruCache[str, int] = (
            budget.cache("lazy_member_epochs", EPOCH_CACHE_SHARE)
            if budget is not None
            else LruCache("lazy_member_epochs", EPOCH_CACHE_BYTES)
        )
        """``user\\0device`` -> the device's current epoch."""
        self._sent: LruCache[str, tuple[str, int]] = (
            budget.cache("lazy_members_sent", SENT_CACHE_SHARE)
            if budget is not None
            else LruCache("lazy_members_sent", SENT_CACHE_BYTES)
        )
        """``epoch\\0room\\0member`` -> (member event ID, event position of the response)."""
        self._counter = itertools.count(1)

    def request(
        self, user_id: str, device_id: str, since: int | None, upto: int, *, reset: bool
    ) -> MemberMemory:
        """The memory for one /sync response of a device.

        Args:
            since: the event position of the request's ``since`` token (None: initial).
            upto: the event position of the response's ``next_batch``.
            reset: an initial or full-state sync: forget what the device was sent.
        """
        device_key = f"{user_id}\x00{device_id}"
        epoch = self._epochs.get(device_key)
        if epoch is None or reset or since is None:
            epoch = next(self._counter)
            self._epochs.set(device_key, epoch)
        return MemberMemory(self._sent, epoch, since, upto)


class MemberMemory:
    """What one response may assume the device knows, and what it sends."""

    def __init__(
        self, sent: LruCache[str, tuple[str, int]], epoch: int, since: int | None, upto: int
    ) -> None:
        self._sent = sent
        self._epoch = epoch
        self._since = since
        self._upto = upto

    def _key(self, room_id: str, member: str) -> str:
        return f"{self._epoch}\x00{room_id}\x00{member}"

    def known(self, room_id: str, member: str, event_id: str) -> bool:
        """Whether the device was sent this member event in a response it went on from."""
        if self._since is None:
            return False
        entry = self._sent.get(self._key(room_id, member))
        return entry is not None and entry[0] == event_id and entry[1] <= self._since

    def mark(self, room_id: str, member: str, event_id: str) -> None:
        """Record that this response carries the member event."""
        self._sent.set(self._key(room_id, member), (event_id, self._upto))

    def send(
        self,
        room_id: str,
        state_ids: Mapping[StateKey, str],
        changed: set[StateKey],
        timeline: Sequence[ReadEvent],
        *,
        skip_known: bool,
    ) -> dict[StateKey, str]:
        """The state to send, without (``skip_known``) the member events the device
        already has, except changes (``changed``); records every member event the
        response carries, in ``state`` or in the timeline."""
        result = {
            k: v
            for k, v in state_ids.items()
            if not skip_known
            or k[0] != "m.room.member"
            or k in changed
            or not self.known(room_id, k[1], v)
        }
        for (etype, member), event_id in result.items():
            if etype == "m.room.member":
                self.mark(room_id, member, event_id)
        for ev in timeline:
            target = ev.pdu.get("state_key")
            if ev.pdu.get("type") == "m.room.member" and isinstance(target, str):
                self.mark(room_id, target, ev.event_id)
        return result
