"""What other servers may read of our users' keys: ``GET /user/devices/{userId}``,
``POST /user/keys/query`` and ``POST /user/keys/claim``.

Spec: server-server-api.md "Device Management" (user_devices.yaml) and "End-to-End
Encryption" (user_keys.yaml). Every method takes the *authenticated* origin (X-Matrix).
Only local users are answered; a server never sees a user-signing key (it is private
to its owner: end_to_end_encryption.md "Cross-signing"), nor signatures other users
made with theirs, nor device display names unless
``allow_device_name_lookup_over_federation`` is set (Synapse's option, default off:
names such as "Alice's work laptop" tell a stranger too much).

The ``stream_id`` of a user's list is the position of their latest change others hear
of on our device list stream; the ``m.device_list_update`` EDUs we send for them carry
those positions too (``stream_id`` and ``prev_id``), so that a peer that resynced from
``/user/devices`` recognises the next update's ``prev_id``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping

from pocketserver.core.identifiers import is_valid_user_id
from pocketserver.e2e.keys import MAX_CLAIMS, MAX_USERS_PER_QUERY, E2eKeys, with_signatures
from pocketserver.errors import MatrixError, bad_json, invalid_param, not_found
from pocketserver.storage import e2e_keys as store

log = logging.getLogger(__name__)


def _local(user_id: object, server_name: str) -> bool:
    return isinstance(user_id, str) and (
        is_valid_user_id(user_id) and user_id.split(":", 1)[1] == server_name
    )


class KeyServing:
    def __init__(self, keys: E2eKeys, *, display_names: bool = False) -> None:
        self.keys = keys
        self.server_name = keys.server_name
        self.display_names = display_names

    async def user_devices(self, origin: str, user_id: str) -> dict[str, object]:
        """``GET /_matrix/federation/v1/user/devices/{userId}``.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` for a user of another server or one that
                does not exist here (Synapse answers the former 400; either way the
                asking server learns nothing).
        """
        if not _local(user_id, self.server_name):
            raise not_found("not a user of this server")
        found = await self.keys.db.read(_devices_txn, user_id, self.display_names)
        if found is None:
            raise not_found("unknown user")
        log.debug("%s read the device list of %s", origin, user_id)
        return found

    async def query(self, origin: str, body: Mapping[str, object]) -> dict[str, object]:
        """``POST /_matrix/federation/v1/user/keys/query``: device keys, master and
        self-signing keys of local users.

        Raises:
            MatrixError: 400 ``M_BAD_JSON`` / ``M_INVALID_PARAM`` for a bad body or a
                user of another server (as Synapse: "not a user here").
        """
        wanted = body.get("device_keys")
        if not isinstance(wanted, dict):
            raise bad_json("device_keys must be an object of user IDs")
        if len(wanted) > MAX_USERS_PER_QUERY:
            raise invalid_param(f"at most {MAX_USERS_PER_QUERY} users per query")
        for user_id, device_ids in wanted.items():
            if not _local(user_id, self.server_name):
                raise invalid_param(f"not a user of this server: {str(user_id)[:100]}")
            if not isinstance(device_ids, list) or not all(isinstance(d, str) for d in device_ids):
                raise bad_json("device_keys values must be lists of device IDs")
        answer = await self.keys.query_local("", wanted, display_names=self.display_names)
        answer.pop("user_signing_keys", None)
        return answer

    async def claim(self, origin: str, body: Mapping[str, object]) -> dict[str, object]:
        """``POST /_matrix/federation/v1/user/keys/claim``: one key per requested
        device and algorithm, a one-time key if any is left, else the fallback key.
        Users of other servers are left out (as Synapse).

        Raises:
            MatrixError: 400 ``M_BAD_JSON`` / ``M_INVALID_PARAM`` for a bad body.
        """
        wanted = body.get("one_time_keys")
        if not isinstance(wanted, dict):
            raise bad_json("one_time_keys must be an object of user IDs")
        claims: list[tuple[str, str, str]] = []
        for user_id, per_device in wanted.items():
            if not isinstance(per_device, dict) or not all(
                isinstance(a, str) for a in per_device.values()
            ):
                raise bad_json("one_time_keys values must map device IDs to algorithms")
            if _local(user_id, self.server_name):
                claims.extend((user_id, d, a) for d, a in per_device.items())
        if len(claims) > MAX_CLAIMS:
            raise MatrixError(400, "M_INVALID_PARAM", f"at most {MAX_CLAIMS} keys per claim")
        return {"one_time_keys": await self.keys.claim_local(claims)}


def _devices_txn(
    conn: sqlite3.Connection, user_id: str, display_names: bool
) -> dict[str, object] | None:
    if conn.execute("SELECT 1 FROM users WHERE name = ?", (user_id,)).fetchone() is None:
        return None
    keys = {r.device_id: r for r in store.device_keys_of(conn, {user_id: []})}
    signatures = store.signatures_for(conn, [user_id], "")
    devices: list[dict[str, object]] = []
    rows = conn.execute(
        "SELECT device_id, display_name FROM devices WHERE user_id = ? ORDER BY device_id",
        (user_id,),
    )
    for device_id, display_name in rows:
        # Only devices with uploaded keys: ``keys`` is required in each entry
        # (user_devices.yaml), and Synapse fails the whole resync (and the key query
        # that needed it) on an entry without it. Synapse lists the same devices.
        if device_id not in keys:
            continue
        device: dict[str, object] = {
            "device_id": device_id,
            "keys": with_signatures(keys[device_id].keys, signatures.get((user_id, device_id))),
        }
        if display_names and display_name:
            device["device_display_name"] = display_name
        devices.append(device)
    answer: dict[str, object] = {
        "user_id": user_id,
        "stream_id": store.last_device_change(conn, user_id),
        "devices": devices,
    }
    cross = store.cross_signing_keys(conn, [user_id]).get(user_id, {})
    if "master" in cross:
        master = cross["master"]
        answer["master_key"] = with_signatures(
            master.key, signatures.get((user_id, master.public_key))
        )
    if "self_signing" in cross:
        answer["self_signing_key"] = cross["self_signing"].key
    return answer
