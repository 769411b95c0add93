"""EDUs waiting for one destination in memory: typing, read receipts and presence
(server-server-api.md "Typing Notifications", "Receipts", "Presence").

They may be lost (a restart, a long outage): each is superseded by the next one
anyway. Only the newest of each key is kept (a user's typing in a room; a user's
receipt of a type in a room and thread; a user's presence), and each kind is capped,
dropping the oldest, so a destination's pending EDUs stay small however many are
produced while a transaction is in flight.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

Edu = dict[str, object]

TYPING = "m.typing"
RECEIPT = "m.receipt"
PRESENCE = "m.presence"
DEVICE_LIST_UPDATE = "m.device_list_update"
SIGNING_KEY_UPDATE = "m.signing_key_update"
SIGNING_KEY_UPDATE_UNSTABLE = "org.matrix.signing_key_update"
DIRECT_TO_DEVICE = "m.direct_to_device"

MAX_PRESENCE_PER_EDU = 50
"""As Synapse: one presence EDU per transaction carries at most this many users."""
TYPING_CAP = 200
RECEIPT_CAP = 500
PRESENCE_CAP = 500


def edu(edu_type: str, content: Mapping[str, object]) -> Edu:
    return {"edu_type": edu_type, "content": dict(content)}


ReceiptKey = tuple[str, str, str, str | None]
"""(room_id, receipt_type, user_id, thread_id)"""


class VolatileEdus:
    """Typing, receipts and presence pending for one destination; see the module doc."""

    def __init__(self) -> None:
        self._typing: OrderedDict[tuple[str, str], bool] = OrderedDict()
        self._receipts: OrderedDict[ReceiptKey, dict[str, object]] = OrderedDict()
        self._presence: OrderedDict[str, dict[str, object]] = OrderedDict()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._typing) + len(self._receipts) + len(self._presence)

    def has_receipts(self) -> bool:
        return bool(self._receipts)

    def add_typing(self, room_id: str, user_id: str, typing: bool) -> None:
        key = (room_id, user_id)
        self._typing.pop(key, None)
        self._typing[key] = typing
        self._cap(self._typing, TYPING_CAP)

    def add_receipt(
        self,
        room_id: str,
        receipt_type: str,
        user_id: str,
        event_ids: list[str],
        data: Mapping[str, object],
    ) -> None:
        """Keep this receipt, replacing a pending one with the same key."""
        thread = data.get("thread_id")
        key = (room_id, receipt_type, user_id, thread if isinstance(thread, str) else None)
        self._receipts.pop(key, None)
        self._receipts[key] = {"event_ids": list(event_ids), "data": dict(data)}
        self._cap(self._receipts, RECEIPT_CAP)

    def add_presence(self, state: Mapping[str, object]) -> None:
        user_id = str(state["user_id"])
        self._presence.pop(user_id, None)
        self._presence[user_id] = dict(state)
        self._cap(self._presence, PRESENCE_CAP)

    def _cap(self, pending: OrderedDict[Any, Any], cap: int) -> None:
        while len(pending) > cap:
            pending.popitem(last=False)
            self.dropped += 1

    def drop_transient(self) -> None:
        """The destination failed: typing and presence will be stale by the retry."""
        self._typing.clear()
        self._presence.clear()

    def clear(self) -> None:
        self._typing.clear()
        self._receipts.clear()
        self._presence.clear()

    # --- taking EDUs for a transaction ---------------------------------------------------

    def take_presence(self) -> list[Edu]:
        """At most one presence EDU of up to ``MAX_PRESENCE_PER_EDU`` users."""
        if not self._presence:
            return []
        push: list[dict[str, object]] = []
        while self._presence and len(push) < MAX_PRESENCE_PER_EDU:
            push.append(self._presence.popitem(last=False)[1])
        return [edu(PRESENCE, {"push": push})]

    def take_receipts(self, max_edus: int) -> list[Edu]:
        """Pending receipts packed into at most ``max_edus`` EDUs; a user's receipts in
        several threads of one room need one EDU each."""
        contents: list[dict[str, dict[str, dict[str, object]]]] = []
        taken: list[ReceiptKey] = []
        for key, receipt in self._receipts.items():
            room_id, receipt_type, user_id, _ = key
            for content in contents:
                users = content.setdefault(room_id, {}).setdefault(receipt_type, {})
                assert isinstance(users, dict)
                if user_id not in users:
                    users[user_id] = receipt
                    break
            else:
                if len(contents) >= max_edus:
                    continue
                contents.append({room_id: {receipt_type: {user_id: receipt}}})
            taken.append(key)
        for key in taken:
            del self._receipts[key]
        return [edu(RECEIPT, c) for c in contents]

    def take_typing(self, limit: int) -> list[Edu]:
        found: list[Edu] = []
        while self._typing and len(found) < limit:
            (room_id, user_id), typing = self._typing.popitem(last=False)
            found.append(edu(TYPING, {"room_id": room_id, "user_id": user_id, "typing": typing}))
        return found
