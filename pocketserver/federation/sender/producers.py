"""Connecting the services that produce EDUs to the federation sender."""

from __future__ import annotations

from collections.abc import Callable

from pocketserver.ephemeral.clock import wall_ms
from pocketserver.ephemeral.receipts import ReceiptListener
from pocketserver.federation.sender.servers import server_of
from pocketserver.federation.sender.service import FederationSender


def receipt_forwarder(
    sender: FederationSender, server_name: str, now_ms: Callable[[], int] = wall_ms
) -> ReceiptListener:
    """A receipt listener that sends our users' public receipts to the servers in the
    room (server-server-api.md "Receipts": ``data`` carries ``ts`` and, for a threaded
    receipt, ``thread_id``)."""

    def forward(
        user_id: str, room_id: str, receipt_type: str, event_id: str, thread_id: str | None
    ) -> None:
        if server_of(user_id) != server_name:
            return
        data: dict[str, object] = {"ts": now_ms()}
        if thread_id is not None:
            data["thread_id"] = thread_id
        sender.send_receipt(room_id, receipt_type, user_id, [event_id], data)

    return forward
