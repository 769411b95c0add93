"""Validating end-to-end encryption keys: device keys, one-time keys, cross-signing keys.

Spec: client-server-api modules/end_to_end_encryption.md ("Key algorithms", "Device
keys", "Uploading keys", "Cross-signing") and keys.yaml / cross_signing.yaml. Pure:
values in, values out; failures raise :class:`KeyRejected` with the spec's errcode.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import nacl.signing

from pocketserver.core.crypto import SignatureError, decode_base64, verify_signed_json

ED25519 = "ed25519"
USAGES = ("master", "self_signing", "user_signing")
MAX_KEY_ID_LENGTH = 255
MAX_KEY_OBJECT_BYTES = 8192


class KeyRejected(Exception):
    """A key or signature is not acceptable: ``errcode`` and a message for the client."""

    def __init__(self, errcode: str, error: str) -> None:
        super().__init__(error)
        self.errcode = errcode
        self.error = error


def _invalid(error: str) -> KeyRejected:
    return KeyRejected("M_INVALID_PARAM", error)


def verify_key(public_key: str) -> nacl.signing.VerifyKey:
    """The ed25519 verify key for an unpadded base64 public key.

    Raises:
        KeyRejected: ``M_INVALID_PARAM`` if it is not a 32-byte base64 key.
    """
    try:
        raw = decode_base64(public_key)
    except ValueError:
        raise _invalid("ed25519 key is not base64") from None
    if len(raw) != 32:
        raise _invalid("ed25519 key must be 32 bytes")
    return nacl.signing.VerifyKey(raw)


def check_signature(obj: Mapping[str, object], user_id: str, key_id: str, public_key: str) -> None:
    """Check that ``obj`` carries a valid signature by ``user_id`` with ``key_id``.

    Spec: appendices.md "Checking for a Signature".

    Raises:
        KeyRejected: ``M_INVALID_SIGNATURE`` if the signature is missing or wrong.
    """
    sigs = obj.get("signatures")
    mine = sigs.get(user_id) if isinstance(sigs, Mapping) else None
    if not isinstance(mine, Mapping) or key_id not in mine:
        raise KeyRejected("M_INVALID_SIGNATURE", f"missing signature by {user_id} {key_id}")
    only = {**obj, "signatures": {user_id: {key_id: mine[key_id]}}}
    try:
        verify_signed_json(only, user_id, {key_id: verify_key(public_key)})
    except SignatureError as e:
        raise KeyRejected("M_INVALID_SIGNATURE", str(e)) from None


def _str_map(value: object, what: str, errcode: str = "M_INVALID_PARAM") -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise KeyRejected(errcode, f"{what} must be an object of strings")
    return value


def _signatures(value: object, errcode: str = "M_INVALID_PARAM") -> None:
    if value is None:
        return
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, dict) for k, v in value.items()
    ):
        raise KeyRejected(errcode, "signatures must map user IDs to objects")
    for per_user in value.values():
        _str_map(per_user, "signatures", errcode)


def check_device_keys(keys: object, user_id: str, device_id: str) -> dict[str, object]:
    """Validate uploaded ``device_keys`` for the requester's device.

    Spec: definitions/device_keys.yaml: ``user_id``, ``device_id``, ``algorithms``,
    ``keys`` and ``signatures`` are required. Only the shape is checked, as Synapse
    does (its errcode ``M_BAD_JSON`` too, which SyTest 41end-to-end-keys expects): the
    keys and the self-signature are the uploading device's own claims, which the spec
    has the *receiving* clients verify (end_to_end_encryption.md "Verification of the
    sending user for incoming events"). A server check would protect nobody, since
    whoever uploads holds the device's private key anyway.

    Returns:
        The object to store (``unsigned`` removed).

    Raises:
        KeyRejected: ``M_BAD_JSON`` for a bad shape or someone else's user or device.
    """
    if not isinstance(keys, dict):
        raise KeyRejected("M_BAD_JSON", "device_keys must be an object")
    if keys.get("user_id") != user_id or keys.get("device_id") != device_id:
        raise KeyRejected(
            "M_BAD_JSON", "device_keys must be for the requester's own user and device"
        )
    algorithms = keys.get("algorithms")
    if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
        raise KeyRejected("M_BAD_JSON", "algorithms must be a list of strings")
    _str_map(keys.get("keys"), "keys", "M_BAD_JSON")
    if not isinstance(keys.get("signatures"), dict):
        raise KeyRejected("M_BAD_JSON", "device_keys must have signatures")
    _signatures(keys["signatures"], "M_BAD_JSON")
    return {k: v for k, v in keys.items() if k != "unsigned"}


@dataclass(frozen=True, slots=True)
class OneTimeKey:
    algorithm: str
    key_id: str
    key: object
    """A string, or a ``KeyObject`` (``signed_curve25519``)."""


def check_one_time_keys(keys: object, what: str = "one_time_keys") -> list[OneTimeKey]:
    """Validate a ``one_time_keys`` or ``fallback_keys`` map of ``<algorithm>:<key_id>``.

    Spec: definitions/one_time_keys.yaml, "Key algorithms" (``KeyObject``). Signatures
    are not checked here: clients check them when they claim a key.

    Raises:
        KeyRejected: ``M_INVALID_PARAM`` for a bad name or key.
    """
    if keys is None:
        return []
    if not isinstance(keys, dict):
        raise _invalid(f"{what} must be an object")
    out = []
    for name, key in keys.items():
        algorithm, sep, key_id = name.partition(":")
        if not sep or not algorithm or not key_id or len(name) > MAX_KEY_ID_LENGTH:
            raise _invalid(f"{what}: key names must be <algorithm>:<key_id>")
        if isinstance(key, dict):
            if not isinstance(key.get("key"), str):
                raise _invalid(f"{what}: {name} has no key")
            _signatures(key.get("signatures"))
            if "fallback" in key and not isinstance(key["fallback"], bool):
                raise _invalid(f"{what}: fallback must be true or false")
        elif not isinstance(key, str):
            raise _invalid(f"{what}: {name} must be a string or an object")
        out.append(OneTimeKey(algorithm, key_id, key))
    return out


def check_cross_signing_key(key: object, user_id: str, usage: str) -> str:
    """Validate a cross-signing key's shape; return its public key.

    Spec: definitions/cross_signing_key.yaml: ``user_id``, ``usage`` (including this
    usage), ``keys`` with exactly one ``ed25519:<public key>`` whose value is that key.

    Raises:
        KeyRejected: ``M_INVALID_PARAM``.
    """
    if not isinstance(key, dict):
        raise _invalid(f"{usage} key must be an object")
    if key.get("user_id") != user_id:
        raise _invalid(f"{usage} key must be for the requester's own user")
    usages = key.get("usage")
    if not isinstance(usages, list) or usage not in usages:
        raise _invalid(f"{usage} key must have usage {usage}")
    key_map = _str_map(key.get("keys"), "keys")
    if len(key_map) != 1:
        raise _invalid(f"{usage} key must have exactly one key")
    ((key_id, public_key),) = key_map.items()
    if key_id != f"{ED25519}:{public_key}":
        raise _invalid(f"{usage} key ID must be ed25519:<public key>")
    verify_key(public_key)
    _signatures(key.get("signatures"))
    return public_key


def without_signatures(obj: Mapping[str, object]) -> dict[str, object]:
    """The signed part of an object: what a signature covers."""
    return {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}


def new_signatures(
    obj: Mapping[str, object], signer: str, stored: Mapping[str, object]
) -> dict[str, str]:
    """Signatures by ``signer`` on ``obj`` that ``stored`` does not already carry."""
    sigs = obj.get("signatures")
    mine = sigs.get(signer) if isinstance(sigs, Mapping) else None
    old_sigs = stored.get("signatures")
    old = old_sigs.get(signer) if isinstance(old_sigs, Mapping) else None
    if not isinstance(mine, Mapping):
        return {}
    return {
        k: v
        for k, v in mine.items()
        if isinstance(k, str)
        and isinstance(v, str)
        and not (isinstance(old, Mapping) and old.get(k) == v)
    }
