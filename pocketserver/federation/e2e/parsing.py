"""Checking what other servers send about their users' devices and keys.

Pure functions: an EDU or a ``/user/devices`` answer in, a checked value out, or None
when it must be ignored. A user ID must belong to the server that sent it; key objects
must not name another user (or device) than the one they are filed under. Signatures
are not checked: the receiving clients verify them (end_to_end_encryption.md "Key and
signature security"); a server cannot lie about another server's users past these
checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pocketserver.core import e2e_keys as rules
from pocketserver.core.e2e_keys import KeyRejected
from pocketserver.core.identifiers import is_valid_user_id
from pocketserver.storage.remote_devices import RemoteDevice

MAX_DEVICES_PER_USER = 1000
"""Past this a ``/user/devices`` snapshot is not stored (as Synapse: a bot making a
device per login must not fill the cache)."""
MAX_STREAM_ID_LENGTH = 255
MAX_DISPLAY_NAME_LENGTH = 1000


def user_of(origin: str, user_id: object) -> str | None:
    """``user_id`` if it is a user ID of ``origin``, else None."""
    if not isinstance(user_id, str) or not is_valid_user_id(user_id):
        return None
    return user_id if user_id.split(":", 1)[1] == origin else None


def stream_id(value: object) -> str | None:
    """Servers send stream IDs as integers (the spec) or strings (older Synapse)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and 0 < len(value) <= MAX_STREAM_ID_LENGTH:
        return value
    return None


def device_keys(user_id: str, device_id: str, keys: object) -> dict[str, object] | None:
    """The keys a server gives for one of its users' devices (``unsigned`` removed), or
    None when they are not an object or name another user or device.

    Only that is checked. The spec has ``keys`` be a ``DeviceKeys`` object
    (user_devices.yaml, m.device_list_update), but Synapse keeps whatever object the
    user's server sends and serves it in ``/keys/query`` (SyTest 40devicelists sends
    ``{"device_keys": {}}``): for interop we do too. Nobody is exposed by it: the
    user's own server is the authority on their devices, and clients check the shape
    and signatures of every device key before trusting it (end_to_end_encryption.md
    "Key and signature security")."""
    if not isinstance(keys, dict):
        return None
    for field, expected in (("user_id", user_id), ("device_id", device_id)):
        if field in keys and keys[field] != expected:
            return None
    return {k: v for k, v in keys.items() if k != "unsigned"}


def device(user_id: str, device_id: str, keys: object, name: object) -> RemoteDevice:
    """A device as its server describes it; keys that are not for it are dropped."""
    checked = None if keys is None else device_keys(user_id, device_id, keys)
    display_name = name if isinstance(name, str) and name else None
    if display_name is not None:
        display_name = display_name[:MAX_DISPLAY_NAME_LENGTH]
    return RemoteDevice(device_id, display_name, checked)


def cross_signing_key(
    user_id: str, usage: str, key: object
) -> tuple[str, dict[str, object]] | None:
    """(public key, key) for a master or self-signing key of ``user_id``, else None."""
    if key is None:
        return None
    try:
        public = rules.check_cross_signing_key(key, user_id, usage)
    except KeyRejected:
        return None
    assert isinstance(key, dict)
    return public, key


@dataclass(frozen=True, slots=True)
class DeviceUpdate:
    """One ``m.device_list_update`` (server-server-api.md "Device Management")."""

    user_id: str
    device_id: str
    stream_id: str
    prev_ids: tuple[str, ...]
    deleted: bool
    device: RemoteDevice


def device_list_update(origin: str, content: object) -> DeviceUpdate | None:
    """The update, or None when it is malformed or about a user of another server."""
    if not isinstance(content, Mapping):
        return None
    user_id = user_of(origin, content.get("user_id"))
    device_id = content.get("device_id")
    sid = stream_id(content.get("stream_id"))
    raw_prev = content.get("prev_id")
    if raw_prev is None:
        raw_prev = []
    if user_id is None or not isinstance(device_id, str) or not device_id or sid is None:
        return None
    if not isinstance(raw_prev, list):
        return None
    prev_ids = [stream_id(p) for p in raw_prev]
    if any(p is None for p in prev_ids):
        return None
    return DeviceUpdate(
        user_id,
        device_id,
        sid,
        tuple(p for p in prev_ids if p is not None),
        content.get("deleted") is True,
        device(user_id, device_id, content.get("keys"), content.get("device_display_name")),
    )


@dataclass(frozen=True, slots=True)
class DeviceList:
    """A ``/user/devices`` answer: the whole list and the stream ID it is at."""

    stream_id: str
    devices: list[RemoteDevice] | None
    """None: too many devices to keep (the list in the cache stays as it is)."""
    master: tuple[str, dict[str, object]] | None
    self_signing: tuple[str, dict[str, object]] | None


def user_devices_answer(user_id: str, answer: object) -> DeviceList | None:
    """Check a ``GET /user/devices/{userId}`` answer (user_devices.yaml)."""
    if not isinstance(answer, Mapping) or answer.get("user_id") != user_id:
        return None
    sid = stream_id(answer.get("stream_id"))
    listed = answer.get("devices")
    if sid is None or not isinstance(listed, list):
        return None
    devices: list[RemoteDevice] | None = []
    if len(listed) > MAX_DEVICES_PER_USER:
        devices = None
    else:
        assert devices is not None
        for entry in listed:
            if not isinstance(entry, Mapping):
                continue
            device_id = entry.get("device_id")
            if isinstance(device_id, str) and device_id:
                devices.append(
                    device(user_id, device_id, entry.get("keys"), entry.get("device_display_name"))
                )
    return DeviceList(
        sid,
        devices,
        cross_signing_key(user_id, "master", answer.get("master_key")),
        cross_signing_key(user_id, "self_signing", answer.get("self_signing_key")),
    )
