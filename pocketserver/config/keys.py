"""``old_signing_keys`` and ``trusted_key_servers`` (Synapse's key names and shapes),
read by ``loader.parse_config``."""

from __future__ import annotations

from collections.abc import Mapping

from pocketserver.config.model import OldSigningKey, TrustedKeyServer
from pocketserver.core.crypto import decode_verify_key_base64, encode_verify_key_base64
from pocketserver.core.identifiers import is_valid_server_name
from pocketserver.core.server_keys import is_compromised


def _verify_key(key_id: object, value: object) -> str:
    """The key as unpadded base64, checked; ValueError names what is wrong."""
    alg, _, version = str(key_id).partition(":")
    if not isinstance(value, str):
        raise ValueError(f"{key_id}: expected the public key as base64")
    try:
        key = decode_verify_key_base64(alg, version, value)
    except ValueError as e:
        raise ValueError(f"{key_id}: {e}") from None
    if is_compromised(bytes(key)):
        raise ValueError(f"{key_id}: this key is publicly known to be compromised")
    return encode_verify_key_base64(key)


def parse_old_signing_keys(value: object) -> tuple[OldSigningKey, ...]:
    """``{"ed25519:id": {"key": base64, "expired_ts": ms}, ...}``."""
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ValueError('expected a mapping such as {"ed25519:id": {key: ..., expired_ts: ...}}')
    out = []
    for key_id, entry in value.items():
        if not isinstance(entry, Mapping):
            raise ValueError(f"{key_id}: expected a mapping with key and expired_ts")
        expired = entry.get("expired_ts")
        if isinstance(expired, bool) or not isinstance(expired, int) or expired < 0:
            raise ValueError(f"{key_id}: expired_ts must be a timestamp in milliseconds")
        out.append(OldSigningKey(str(key_id), _verify_key(key_id, entry.get("key")), expired))
    return tuple(out)


def parse_trusted_key_servers(value: object) -> tuple[TrustedKeyServer, ...]:
    """``[{"server_name": ..., "verify_keys": {"ed25519:id": base64}}, ...]``."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError("expected a list of {server_name: ..., verify_keys: ...}")
    out = []
    for i, entry in enumerate(value):
        if not isinstance(entry, Mapping):
            raise ValueError(f"entry {i}: expected a mapping with server_name")
        name = entry.get("server_name")
        if not isinstance(name, str) or not is_valid_server_name(name):
            raise ValueError(f"entry {i}: server_name must be a server name")
        keys = entry.get("verify_keys")
        if keys is not None and not isinstance(keys, Mapping):
            raise ValueError(f"entry {i} ({name}): verify_keys must be a mapping")
        verify_keys = tuple((str(k), _verify_key(k, v)) for k, v in (keys or {}).items())
        out.append(TrustedKeyServer(name, verify_keys))
    return tuple(out)
