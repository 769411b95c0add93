"""``GET /admin/whois/{userId}`` (client-server API "Server administration"): a user's
devices and where they were last seen.

Per device, one session with one connection: the last address, time and user agent
the server noted (``accounts/devices.py`` keeps one of each per device, no history; a
request without a User-Agent leaves it out; a device never seen since login has no
connection).
Synapse answers every connection under one device named ``""``; here each device is
its own key, as the spec's shape ("each key is an identifier for one of the user's
devices") means.
"""

from __future__ import annotations

from pocketserver.accounts.devices import DeviceManager
from pocketserver.core.locality import Locality
from pocketserver.errors import MatrixError, forbidden, not_found
from pocketserver.storage import users as user_store
from pocketserver.storage.db import Database


async def whois(
    db: Database, devices: DeviceManager, server_name: str, requester: str, user_id: str
) -> dict[str, object]:
    """The whois answer for ``user_id``, as ``requester`` may see it.

    Raises:
        MatrixError: 403 ``M_FORBIDDEN`` unless the requester is the user or a server
            admin (checked first, as Synapse, so nobody else learns who exists); 400
            ``M_INVALID_PARAM`` for a user of another server; 404 ``M_NOT_FOUND`` for a
            local user that does not exist (Synapse answers an empty 200 there).
    """
    if requester != user_id:
        asking = await db.read(user_store.get_user, requester)
        if asking is None or not asking.admin:
            raise forbidden("You are not a server admin")
    if not user_id.startswith("@") or not Locality(server_name).is_mine(user_id):
        raise MatrixError(400, "M_INVALID_PARAM", "Can only whois a local user")
    if await db.read(user_store.get_user, user_id) is None:
        raise not_found("no such user")
    found: dict[str, object] = {}
    for device in await devices.list(user_id):
        connections: list[dict[str, object]] = []
        if device.last_seen_ts is not None:
            connection: dict[str, object] = {"last_seen": device.last_seen_ts}
            if device.last_seen_ip is not None:
                connection["ip"] = device.last_seen_ip
            if device.last_seen_user_agent is not None:
                connection["user_agent"] = device.last_seen_user_agent
            connections.append(connection)
        found[device.device_id] = {"sessions": [{"connections": connections}]}
    return {"user_id": user_id, "devices": found}
