"""The E2EE part of federation as one service: what the ``/send`` processor and the
federation routes call.

- EDUs (server-server-api.md "Device Management", "End-to-End Encryption",
  "Send-to-device messaging"): :meth:`FederationE2e.on_edu` with the *authenticated*
  origin of the transaction, for ``m.device_list_update``, ``m.signing_key_update``,
  ``org.matrix.signing_key_update`` and ``m.direct_to_device``.
- Routes: :attr:`FederationE2e.serving` (``/user/devices``, ``/user/keys/query``,
  ``/user/keys/claim``).
- Background: :meth:`FederationE2e.run` (resyncs, retries, sweeping lists no longer
  shared), started in the server's nursery.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import trio

from pocketserver.e2e.keys import E2eKeys
from pocketserver.e2e.stream import DeviceListStream
from pocketserver.federation.e2e import parsing
from pocketserver.federation.e2e.device_lists import MAX_TRACKED_USERS, RemoteDeviceLists
from pocketserver.federation.e2e.remote_keys import RemoteKeyClient
from pocketserver.federation.e2e.requests import FederationRequests
from pocketserver.federation.e2e.serving import KeyServing
from pocketserver.storage.db import Database
from pocketserver.to_device.service import ToDeviceService

log = logging.getLogger(__name__)

DEVICE_LIST_UPDATE = "m.device_list_update"
SIGNING_KEY_UPDATE = "m.signing_key_update"
SIGNING_KEY_UPDATE_UNSTABLE = "org.matrix.signing_key_update"
DIRECT_TO_DEVICE = "m.direct_to_device"
EDU_TYPES = frozenset(
    {DEVICE_LIST_UPDATE, SIGNING_KEY_UPDATE, SIGNING_KEY_UPDATE_UNSTABLE, DIRECT_TO_DEVICE}
)
MAX_MESSAGE_ID_LENGTH = 255
"""The spec says 32 codepoints; Synapse takes any string: be lenient, but bounded."""


class FederationE2e:
    def __init__(
        self,
        lists: RemoteDeviceLists,
        remote_keys: RemoteKeyClient,
        serving: KeyServing,
        to_device: ToDeviceService,
    ) -> None:
        self.lists = lists
        self.remote_keys = remote_keys
        self.serving = serving
        self.to_device = to_device

    @classmethod
    def build(
        cls,
        db: Database,
        stream: DeviceListStream,
        server_name: str,
        to_device: ToDeviceService,
        client: FederationRequests | None,
        *,
        display_names: bool = False,
        max_tracked: int = MAX_TRACKED_USERS,
    ) -> tuple[E2eKeys, FederationE2e]:
        """The client-facing :class:`E2eKeys` (asking other servers through
        ``client``, None for no federation) and this service, wired together."""
        lists = RemoteDeviceLists(db, stream, client, max_tracked=max_tracked)
        remote_keys = RemoteKeyClient(db, lists, client)
        keys = E2eKeys(db, stream, server_name, remote_keys)
        return keys, cls(
            lists, remote_keys, KeyServing(keys, display_names=display_names), to_device
        )

    async def on_edu(self, origin: str, edu_type: str, content: object) -> bool:
        """Handle one EDU of a transaction from the authenticated ``origin``.

        Returns:
            False if ``edu_type`` is not one of :data:`EDU_TYPES` (not ours to handle).
            Malformed or unauthorised EDUs are ignored (True: handled, nothing done);
            a transaction is never refused for its EDUs.
        """
        if edu_type not in EDU_TYPES:
            return False
        if not isinstance(content, Mapping):
            log.info("ignored a %s from %s whose content is not an object", edu_type, origin)
            return True
        if edu_type == DEVICE_LIST_UPDATE:
            await self.lists.on_device_list_update(origin, content)
        elif edu_type == DIRECT_TO_DEVICE:
            await self.on_direct_to_device(origin, content)
        else:
            await self.lists.on_signing_key_update(origin, content)
        return True

    async def on_direct_to_device(self, origin: str, content: Mapping[str, object]) -> int:
        """Deliver an ``m.direct_to_device`` EDU to our devices (``*``: every device
        the user has); return how many devices got a message. The sender must be a
        user of ``origin``; a repeated ``message_id`` from the same origin delivers
        nothing again."""
        sender = parsing.user_of(origin, content.get("sender"))
        event_type = content.get("type")
        message_id = content.get("message_id")
        messages = content.get("messages")
        if (
            sender is None
            or not isinstance(event_type, str)
            or not event_type
            or not isinstance(message_id, str)
            or not 0 < len(message_id) <= MAX_MESSAGE_ID_LENGTH
            or not isinstance(messages, Mapping)
        ):
            log.info("ignored a malformed or foreign m.direct_to_device from %s", origin)
            return 0
        return await self.to_device.receive_remote(origin, message_id, sender, event_type, messages)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.lists.run(task_status=task_status)
