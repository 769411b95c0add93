"""Pushers: ``GET /pushers``, ``POST /pushers/set`` and delivery to push gateways.

Spec: client-server API ``data/api/client-server/pusher.yaml``, ``modules/push.md``
"Pushers"; push gateway API ``push_notifier.yaml``.

``server.py`` builds a :class:`PusherService`, subscribes
:meth:`PushDelivery.on_notifications` to the push evaluator and starts
:meth:`PusherService.run` in its background nursery. A pusher belongs to the device
that set it: logging out or deleting the device (and deactivation) deletes it.

A gateway URL whose host is a literal IP address that ``ip_range_blacklist`` blocks
is refused when set (400 ``M_INVALID_PARAM``: it could never be delivered to). Host
names are not resolved then (their addresses can change): delivery checks every
address of every new connection (``push/delivery.py``).
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import trio

if TYPE_CHECKING:
    import httpx

from pocketserver.core.pushers import (
    PusherError,
    PusherKey,
    PusherRemoval,
    PusherSettings,
    parse_set_body,
)
from pocketserver.errors import MatrixError
from pocketserver.net.addresses import AddressPolicy, Resolver, literal_address, system_resolver
from pocketserver.push.delivery import PushDelivery
from pocketserver.rooms.reading import EventReader
from pocketserver.storage import pushers as store
from pocketserver.storage.db import Database

MAX_PUSHERS_PER_USER = 32


class PusherService:
    def __init__(
        self,
        db: Database,
        reader: EventReader,
        *,
        policy: AddressPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        """``policy``: the gateway addresses allowed (default: the default
        ``ip_range_blacklist``); ``transport``, a test double, bypasses it."""
        self._db = db
        self.delivery = PushDelivery(
            db, reader, transport=transport, policy=policy, resolver=resolver
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.delivery.run(task_status=task_status)

    async def pushers(self, user_id: str) -> list[dict[str, object]]:
        """The user's pushers as ``GET /pushers`` lists them."""
        return [p.to_json() for p in await self._db.read(store.pushers_for_user, user_id)]

    async def set_pusher(self, user_id: str, device_id: str, body: dict[str, object]) -> None:
        """Create, replace or (``kind: null``) delete a pusher (pusher.yaml).

        Raises:
            MatrixError: 400 ``M_MISSING_PARAM``, ``M_BAD_JSON`` or ``M_INVALID_PARAM``
                for a bad body (or too many pushers, or a gateway at a blocked IP
                address); 401 ``M_UNKNOWN_TOKEN`` if the device was deleted meanwhile.
        """
        try:
            parsed = parse_set_body(body)
        except PusherError as e:
            raise MatrixError(400, e.errcode, str(e)) from None
        if isinstance(parsed, PusherRemoval):
            key = PusherKey(user_id, parsed.app_id, parsed.pushkey)
            await self._db.write(store.delete_pusher, key)
            self.delivery.forget(key)
            return
        self._check_gateway(parsed.data.get("url"))
        now_ms = int(time.time() * 1000)
        self.delivery.add_user(user_id)
        try:
            removed = await self._db.write(_set, user_id, device_id, parsed, now_ms)
        except sqlite3.IntegrityError:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "the device was logged out") from None
        for key in removed:
            self.delivery.forget(key)
        self.delivery.pusher_set(PusherKey(user_id, parsed.app_id, parsed.pushkey))

    def _check_gateway(self, url: object) -> None:
        host = urlsplit(url).hostname if isinstance(url, str) else None
        address = literal_address(host) if host else None
        if address is not None and not self.delivery.policy.allowed(address):
            raise MatrixError(
                400,
                "M_INVALID_PARAM",
                "data.url: this server does not send to that address (ip_range_blacklist)",
            )


def _set(
    conn: sqlite3.Connection,
    user_id: str,
    device_id: str,
    settings: PusherSettings,
    now_ms: int,
) -> list[PusherKey]:
    existing = store.get_pusher(conn, PusherKey(user_id, settings.app_id, settings.pushkey))
    if existing is None and store.count_for_user(conn, user_id) >= MAX_PUSHERS_PER_USER:
        raise MatrixError(
            400, "M_INVALID_PARAM", f"a user can have at most {MAX_PUSHERS_PER_USER} pushers"
        )
    return store.set_pusher(conn, user_id, device_id, settings, now_ms)
