"""Ephemeral data from other servers: typing, read receipts and presence.

server-server-api.md "Typing Notifications", "Receipts" and "Presence": EDUs arrive in
transactions (``PUT /send/{txnId}``). Each handler takes the *authenticated* origin of
the transaction and the EDU's ``content``, and changes nothing unless:

- every user the EDU speaks for belongs to the origin server (a server speaks only for
  its own users; Synapse drops the others the same way);
- for room-scoped EDUs (typing, receipts) the room's server ACL lets the origin in
  (server-server-api.md "Server Access Control Lists (ACLs)": such EDUs MUST be
  ignored otherwise) and the user is joined to the room here;
- presence is enabled (with it off, presence EDUs are dropped, as Synapse does).

Malformed EDUs are logged and ignored: a transaction is never refused for its EDUs.
End-to-end encryption EDUs (device lists, signing keys, to-device) have their own
handlers (federation/e2e).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from pocketserver.core.locality import server_of
from pocketserver.ephemeral.presence import PresenceService
from pocketserver.ephemeral.receipts import ReceiptService
from pocketserver.ephemeral.typing_notices import TypingService
from pocketserver.errors import MatrixError

log = logging.getLogger(__name__)

REMOTE_TYPING_TIMEOUT_MS = 30_000
"""How long a remote user's "typing" holds without news (the EDU has no timeout; its
server sends "stopped" or repeats it; Synapse uses 30 s for remote typing too)."""
MAX_RECEIPT_EVENTS = 10
"""Event IDs looked at per receipt (the spec's list usually holds one)."""

AclCheck = Callable[[str, str], Awaitable[None]]
"""``(origin, room_id)``: raises ``MatrixError`` when the room's ACL denies ``origin``."""


def _server_of(user_id: object) -> str | None:
    """The server of a user ID (None for anything that is not one)."""
    if not isinstance(user_id, str) or not user_id.startswith("@"):
        return None
    return server_of(user_id)


class EphemeralEdus:
    """Applies ``m.typing``, ``m.receipt`` and ``m.presence`` EDUs from other servers."""

    def __init__(
        self,
        typing: TypingService,
        receipts: ReceiptService,
        presence: PresenceService,
        check_acl: AclCheck,
    ) -> None:
        self.typing = typing
        self.receipts = receipts
        self.presence = presence
        self._check_acl = check_acl

    async def handle(self, origin: str, edu_type: str, content: object) -> bool:
        """Apply one EDU; return False if its type is not one of ours."""
        if not isinstance(content, Mapping):
            log.info("ignoring %s EDU from %s: content is not an object", edu_type, origin)
            return edu_type in ("m.typing", "m.receipt", "m.presence")
        if edu_type == "m.typing":
            await self.on_typing(origin, content)
        elif edu_type == "m.receipt":
            await self.on_receipt(origin, content)
        elif edu_type == "m.presence":
            self.on_presence(origin, content)
        else:
            return False
        return True

    async def _allowed_in_room(self, origin: str, room_id: object) -> bool:
        if not isinstance(room_id, str):
            return False
        try:
            await self._check_acl(origin, room_id)
        except MatrixError:
            log.info("ignoring an EDU from %s for %s: the room's ACL denies it", origin, room_id)
            return False
        return True

    async def on_typing(self, origin: str, content: Mapping[str, object]) -> None:
        """``m.typing``: ``{room_id, user_id, typing}``."""
        user_id, room_id, typing = (
            content.get("user_id"),
            content.get("room_id"),
            content.get("typing"),
        )
        if (
            not isinstance(user_id, str)
            or _server_of(user_id) != origin
            or not isinstance(typing, bool)
            or not isinstance(room_id, str)
        ):
            log.info("ignoring m.typing from %s for %r", origin, user_id)
            return
        if not await self._allowed_in_room(origin, room_id):
            return
        try:
            await self.typing.set_typing(user_id, room_id, typing, REMOTE_TYPING_TIMEOUT_MS)
        except MatrixError as e:
            log.info("ignoring m.typing from %s: %s", origin, e.error)

    async def on_receipt(self, origin: str, content: Mapping[str, object]) -> None:
        """``m.receipt``: ``{room_id: {"m.read": {user_id: {event_ids, data}}}}``. Only
        public ``m.read`` receipts travel between servers."""
        for room_id, by_type in content.items():
            if not isinstance(by_type, Mapping) or not await self._allowed_in_room(origin, room_id):
                continue
            users = by_type.get("m.read")
            if not isinstance(users, Mapping):
                continue
            for user_id, receipt in users.items():
                if _server_of(user_id) != origin or not isinstance(receipt, Mapping):
                    log.info("ignoring a receipt from %s for %r", origin, user_id)
                    continue
                await self._one_receipt(origin, room_id, user_id, receipt)

    async def _one_receipt(
        self, origin: str, room_id: str, user_id: str, receipt: Mapping[str, object]
    ) -> None:
        event_ids = receipt.get("event_ids")
        data = receipt.get("data")
        thread_id = data.get("thread_id") if isinstance(data, Mapping) else None
        if not isinstance(event_ids, list) or not isinstance(thread_id, str | None):
            return
        for event_id in event_ids[:MAX_RECEIPT_EVENTS]:
            if not isinstance(event_id, str):
                continue
            try:
                await self.receipts.set_receipt(user_id, room_id, "m.read", event_id, thread_id)
            except MatrixError as e:
                log.info("ignoring a receipt from %s for %s: %s", origin, event_id, e.error)
                continue
            return

    def on_presence(self, origin: str, content: Mapping[str, object]) -> None:
        """``m.presence``: ``{push: [{user_id, presence, status_msg?, last_active_ago?,
        currently_active?}]}``."""
        if not self.presence.enabled:
            return
        push = content.get("push")
        for entry in push if isinstance(push, list) else []:
            if not isinstance(entry, Mapping) or _server_of(entry.get("user_id")) != origin:
                log.info("ignoring a presence update from %s", origin)
                continue
            presence = entry.get("presence")
            status = entry.get("status_msg")
            ago = entry.get("last_active_ago")
            if not isinstance(presence, str):
                continue
            self.presence.set_remote(
                str(entry["user_id"]),
                presence,
                status if isinstance(status, str) else None,
                ago if isinstance(ago, int) and not isinstance(ago, bool) else None,
                entry.get("currently_active") is True,
            )
