"""Dehydrated devices (MSC3814 "Dehydrated Devices with SSSS", unstable).

A client uploads a device that no client runs (``PUT /dehydrated_device``): its
encrypted ``device_data`` and its device, one-time and fallback keys, in one request.
Other devices send it room keys like to any device. A new login of the same user
fetches the data (``GET /dehydrated_device``), rehydrates the device locally and reads
the to-device messages sent to it (``POST /dehydrated_device/{device_id}/events``).

Here the dehydrated device is an ordinary device without access tokens, marked in
``dehydrated_devices`` (:mod:`pocketserver.storage.dehydrated`):

- its keys are served by ``/keys/query`` and ``/keys/claim`` as stored (the client
  signs ``"dehydrated": true`` into the device keys, MSC3814 "Dehydrating a device");
- messages for it queue in the usual to-device inbox, bounded per device;
- replacing it (a new PUT), ``DELETE /dehydrated_device``, ``/delete_devices``,
  ``/logout/all`` and deactivation delete it with its keys and messages;
- no login takes over its device ID (:meth:`AccountService.create_session`).

MSC3814 "Rehydrating a device": reading messages does *not* delete them, so an
interrupted rehydration can start again; they go with the device when it is replaced.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass

from pocketserver.accounts.service import (
    MAX_DEVICE_ID_LENGTH,
    MAX_DISPLAY_NAME_LENGTH,
    AccountService,
)
from pocketserver.e2e.keys import MAX_ONE_TIME_KEYS_PER_DEVICE, E2eKeys, Upload, parse_upload
from pocketserver.errors import (
    MatrixError,
    bad_json,
    forbidden,
    invalid_param,
    missing_param,
    not_found,
)
from pocketserver.storage import dehydrated as store
from pocketserver.storage import device_info, devices
from pocketserver.storage import e2e_keys as keys_store
from pocketserver.storage import to_device as inbox
from pocketserver.to_device.service import ToDeviceService

MAX_DEVICE_DATA_BYTES = 64 * 1024
"""The largest ``device_data`` (compact JSON, UTF-8). A ``org.matrix.msc3814.v2``
pickle with 50 one-time keys is about 2.5 KB."""
MAX_EVENTS_PER_BATCH = 100
"""Messages per ``/events`` response at most (as /sync's ``to_device``)."""
TOKEN_PREFIX = "d"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _encode(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Batch:
    """One page of the dehydrated device's to-device messages."""

    events: list[dict[str, object]]
    next_batch: str
    limited: bool
    """More messages may follow ``next_batch``."""


@dataclass(frozen=True, slots=True)
class _NewDevice:
    device_id: str
    display_name: str | None
    device_data: str
    upload: Upload


def parse_token(token: str | None) -> int:
    """The stream position in an ``/events`` token (``d<position>``); 0 for none.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` for a token this server did not make.
    """
    if token is None:
        return 0
    digits = token.removeprefix(TOKEN_PREFIX)
    if digits == token or not digits.isascii() or not digits.isdigit() or len(digits) > 18:
        raise invalid_param("next_batch is not a token from this server")
    return int(digits)


def _parse_put(body: Mapping[str, object], user_id: str) -> _NewDevice:
    """Validate a ``PUT /dehydrated_device`` body (MSC3814 "Dehydrating a device")."""
    device_id = body.get("device_id")
    if device_id is None:
        raise missing_param("device_id")
    if not isinstance(device_id, str):
        raise bad_json("device_id must be a string")
    if not 0 < len(device_id) <= MAX_DEVICE_ID_LENGTH:
        raise invalid_param(f"device_id must be 1 to {MAX_DEVICE_ID_LENGTH} characters")
    data = body.get("device_data")
    if data is None:
        raise missing_param("device_data")
    if not isinstance(data, dict) or not isinstance(data.get("algorithm"), str):
        raise bad_json("device_data must be an object with a string algorithm")
    encoded = _encode(data)
    if len(encoded.encode("utf-8")) > MAX_DEVICE_DATA_BYTES:
        raise MatrixError(
            413, "M_TOO_LARGE", f"device_data is larger than {MAX_DEVICE_DATA_BYTES} bytes"
        )
    name = body.get("initial_device_display_name")
    if name is not None and not isinstance(name, str):
        raise bad_json("initial_device_display_name must be a string")
    if name is not None and len(name) > MAX_DISPLAY_NAME_LENGTH:
        raise invalid_param("initial_device_display_name is too long")
    device_keys = body.get("device_keys")
    if device_keys is None:
        raise missing_param("device_keys")
    if isinstance(device_keys, dict) and device_keys.get("dehydrated", True) is not True:
        raise invalid_param("device_keys.dehydrated must be true for a dehydrated device")
    upload = parse_upload(body, user_id, device_id)
    return _NewDevice(device_id, name, encoded, upload)


class DehydratedDevices:
    """Store, hand out and delete each user's dehydrated device; page its messages."""

    def __init__(self, keys: E2eKeys, to_device: ToDeviceService, accounts: AccountService):
        self.db = keys.db
        self.keys = keys
        self.to_device = to_device
        self.accounts = accounts

    async def get(self, user_id: str) -> store.DehydratedDevice:
        """MSC3814 "Rehydrating a device": ``GET /dehydrated_device``.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` if the user has no dehydrated device.
        """
        found = await self.db.read(store.get, user_id)
        if found is None:
            raise not_found("no dehydrated device")
        return found

    async def put(self, user_id: str, body: Mapping[str, object]) -> str:
        """MSC3814 "Dehydrating a device": store a new dehydrated device with its keys,
        deleting the previous one (with its keys and messages) in the same transaction.

        Returns:
            The new device's ID.

        Raises:
            MatrixError: 400 ``M_MISSING_PARAM`` / ``M_BAD_JSON`` / ``M_INVALID_PARAM``
                / ``M_INVALID_SIGNATURE`` for a bad body, 400 ``M_INVALID_PARAM`` if the
                device ID belongs to another device of the user, 413 ``M_TOO_LARGE``
                for oversized ``device_data``, 400 ``M_LIMIT_EXCEEDED`` for too many
                one-time keys.
        """
        new = _parse_put(body, user_id)
        try:
            position, hashes = await self.db.write(_put_txn, user_id, new, _now_ms())
        except keys_store.KeyLimitError as e:
            raise MatrixError(400, "M_LIMIT_EXCEEDED", str(e)) from None
        except keys_store.KeyConflictError as e:  # cannot happen on a fresh device
            raise invalid_param(str(e)) from None
        self.keys.stream.committed(position)
        if hashes:
            self.accounts.forget_tokens(hashes)
        return new.device_id

    async def delete(self, user_id: str) -> str:
        """MSC3814 "Deleting a dehydrated device": ``DELETE /dehydrated_device``.

        Returns:
            The deleted device's ID.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` if the user has no dehydrated device.
        """
        deleted = await self.db.write(_delete_txn, user_id)
        if deleted is None:
            raise not_found("no dehydrated device")
        device_id, position, hashes = deleted
        self.keys.stream.committed(position)
        if hashes:
            self.accounts.forget_tokens(hashes)
        return device_id

    async def events(
        self, user_id: str, device_id: str, token: str | None, limit: int = MAX_EVENTS_PER_BATCH
    ) -> Batch:
        """MSC3814 "Rehydrating a device": the messages after ``token``, oldest first.

        Nothing is deleted. The last batch is followed by an empty one.

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` if ``device_id`` is not the user's
                dehydrated device, 400 ``M_INVALID_PARAM`` for a bad token or limit.
        """
        if limit < 1:
            raise invalid_param("limit must be a positive integer")
        limit = min(limit, MAX_EVENTS_PER_BATCH)
        after = parse_token(token)
        upto = self.to_device.position()
        found = await self.db.read(_events_txn, user_id, device_id, after, upto, limit + 1)
        if found is None:
            raise forbidden("that is not your dehydrated device")
        limited = len(found) > limit
        messages = found[:limit]
        last = messages[-1].stream_id if limited else max(after, upto)
        return Batch(
            [{"sender": m.sender, "type": m.type, "content": m.content} for m in messages],
            f"{TOKEN_PREFIX}{last}",
            limited,
        )


def _put_txn(
    conn: sqlite3.Connection, user_id: str, new: _NewDevice, now_ms: int
) -> tuple[int, list[bytes]]:
    old = store.get(conn, user_id)
    replacing = old is not None and old.device_id == new.device_id
    if not replacing and devices.device_exists(conn, user_id, new.device_id):
        raise invalid_param("that device ID belongs to another of your devices")
    hashes: list[bytes] = []
    if old is not None:
        # Its keys, signatures and inbox go by cascade and triggers (migrations 010, 011).
        hashes = device_info.delete_devices(conn, user_id, [old.device_id])
    devices.ensure_device(conn, user_id, new.device_id, new.display_name, now_ms)
    upload = new.upload
    if upload.device_keys is not None:
        keys_store.set_device_keys(conn, user_id, new.device_id, upload.device_keys)
    keys_store.add_one_time_keys(
        conn, user_id, new.device_id, upload.one_time_keys, MAX_ONE_TIME_KEYS_PER_DEVICE
    )
    keys_store.set_fallback_keys(conn, user_id, new.device_id, upload.fallback_keys)
    store.put(conn, user_id, new.device_id, new.device_data)
    return keys_store.record_change(conn, user_id, device_id=new.device_id), hashes


def _delete_txn(conn: sqlite3.Connection, user_id: str) -> tuple[str, int, list[bytes]] | None:
    old = store.get(conn, user_id)
    if old is None:
        return None
    hashes = device_info.delete_devices(conn, user_id, [old.device_id])
    return old.device_id, keys_store.stream_position(conn), hashes


def _events_txn(
    conn: sqlite3.Connection, user_id: str, device_id: str, after: int, upto: int, limit: int
) -> list[inbox.ToDeviceMessage] | None:
    if not store.is_dehydrated(conn, user_id, device_id):
        return None
    return inbox.pending(conn, user_id, device_id, after, upto, limit).messages
