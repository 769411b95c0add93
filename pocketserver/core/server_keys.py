"""Other servers' signing keys: reading a Server Keys object and the validity rules.

Spec: server-server-api.md "Retrieving server keys" ("Publishing Keys", "Querying
Keys Through Another Server"), data/api/server-server/definitions/keys.yaml, and room
version 5's "Signing key validity period" (rooms/fragments/v5-signing-requirements.md).
Pure: values in, values out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pocketserver.core.crypto import (
    ED25519,
    NamedVerifyKey,
    SignatureError,
    decode_base64,
    decode_verify_key_base64,
    is_valid_key_version,
    verify_signed_json,
)
from pocketserver.core.identifiers import is_valid_server_name

KEY_VALIDITY_CAP_MS = 7 * 24 * 3600 * 1000
"""keys.yaml ``valid_until_ts``: "Servers MUST use the lesser of this field and 7 days
into the future when determining if a key is valid"."""

MAX_KEYS_PER_RESPONSE = 64
"""A server publishing more keys than this in one answer is refused (memory bound)."""

# Server signing keys known to be compromised: never used, whoever presents them.
# The same list as Synapse's BANNED_SERVER_SIGNING_KEYS (synapse/crypto/keyring.py),
# carried as data: the public keys, base64 as Synapse writes them.
#   ELEMENTSEC-2025-1670
_COMPROMISED_BASE64 = ("l/O9hxMVKB6Lg+3Hqf0FQQZhVESQcMzbPN1Cz2nM3og=",)
COMPROMISED_VERIFY_KEYS: frozenset[bytes] = frozenset(decode_base64(k) for k in _COMPROMISED_BASE64)


class KeyResponseError(ValueError):
    """A Server Keys object is malformed, for another server, or not self-signed."""


@dataclass(frozen=True, slots=True)
class ServerKey:
    """One verify key of a server and until when it may be used."""

    key_id: str
    key: bytes
    """The 32-byte ed25519 public key."""
    valid_until_ts: int
    """``verify_keys``: the published ``valid_until_ts``, capped at 7 days after we
    learnt it; ``old_verify_keys``: its ``expired_ts``."""

    def verify_key(self) -> NamedVerifyKey:
        return named_verify_key(self.key_id, self.key)

    def usable_at(self, ts: int) -> bool:
        """Whether the key may sign something made at ``ts`` (0: any time)."""
        return self.valid_until_ts >= ts


def named_verify_key(key_id: str, raw: bytes) -> NamedVerifyKey:
    """A verify key object for ``key_id`` (``ed25519:...``) and its 32 bytes."""
    key = NamedVerifyKey(raw)
    key.alg, _, key.version = key_id.partition(":")
    return key


def is_compromised(key: bytes) -> bool:
    """Whether ``key`` is one of :data:`COMPROMISED_VERIFY_KEYS`."""
    return bytes(key) in COMPROMISED_VERIFY_KEYS


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise KeyResponseError(f"{what} must be an integer")
    return value


def _keys(section: object, what: str, with_expiry: bool) -> dict[str, tuple[bytes, int | None]]:
    if section is None and with_expiry:
        return {}
    if not isinstance(section, Mapping):
        raise KeyResponseError(f"{what} must be an object")
    out: dict[str, tuple[bytes, int | None]] = {}
    for kid, data in section.items():
        alg, _, version = str(kid).partition(":")
        if alg != ED25519:
            continue  # "Unknown algorithms" are skipped (appendices "Signing JSON")
        if not is_valid_key_version(version) or not isinstance(data, Mapping):
            raise KeyResponseError(f"{what}: bad key {kid!r}")
        try:
            raw = bytes(decode_verify_key_base64(alg, version, str(data.get("key"))))
        except ValueError as e:
            raise KeyResponseError(f"{what}: key {kid!r}: {e}") from None
        expiry = _int(data.get("expired_ts"), f"{kid} expired_ts") if with_expiry else None
        out[str(kid)] = (raw, expiry)
    return out


def parse_key_response(
    response: object, fetched_ts: int, expected_server: str | None = None
) -> tuple[str, list[ServerKey]]:
    """Read a Server Keys object (``GET /_matrix/key/v2/server`` or one entry of a
    notary's ``server_keys``) and check that the server signed it itself.

    Spec: keys.yaml; appendices "Checking for a Signature". Every signature of the
    server by a key it lists in ``verify_keys`` must be valid, and there must be one.
    Compromised keys (:data:`COMPROMISED_VERIFY_KEYS`) are left out and cannot vouch
    for the answer.

    Args:
        response: The decoded JSON.
        fetched_ts: When we received it (POSIX ms), the start of the 7-day cap.
        expected_server: The server we asked about, if known.

    Returns:
        The server name and its keys (current keys first, then old ones).

    Raises:
        KeyResponseError: malformed, another server's, too many keys, or not
            validly signed by the server.
    """
    if not isinstance(response, Mapping):
        raise KeyResponseError("server keys must be a JSON object")
    server = response.get("server_name")
    if not isinstance(server, str) or not is_valid_server_name(server):
        raise KeyResponseError("server keys have no valid server_name")
    if expected_server is not None and server != expected_server:
        raise KeyResponseError(f"asked for the keys of {expected_server}, got {server}")
    valid_until = _int(response.get("valid_until_ts"), "valid_until_ts")
    current = _keys(response.get("verify_keys"), "verify_keys", with_expiry=False)
    old = _keys(response.get("old_verify_keys"), "old_verify_keys", with_expiry=True)
    if len(current) + len(old) > MAX_KEYS_PER_RESPONSE:
        raise KeyResponseError(f"more than {MAX_KEYS_PER_RESPONSE} keys")
    current = {kid: v for kid, v in current.items() if not is_compromised(v[0])}
    old = {kid: v for kid, v in old.items() if kid not in current and not is_compromised(v[0])}
    signers = {kid: named_verify_key(kid, raw) for kid, (raw, _) in current.items()}
    try:
        verify_signed_json(response, server, signers)
    except SignatureError as e:
        raise KeyResponseError(f"server keys of {server}: {e}") from None
    capped = min(valid_until, fetched_ts + KEY_VALIDITY_CAP_MS)
    keys = [ServerKey(kid, raw, capped) for kid, (raw, _) in current.items()]
    keys += [ServerKey(kid, raw, int(exp or 0)) for kid, (raw, exp) in old.items()]
    return server, keys


def signing_key_ids(obj: Mapping[str, object], server: str) -> list[str]:
    """The ed25519 key IDs ``server`` signed ``obj`` with (in the object's order)."""
    sigs = obj.get("signatures")
    ours = sigs.get(server) if isinstance(sigs, Mapping) else None
    if not isinstance(ours, Mapping):
        return []
    return [k for k in ours if isinstance(k, str) and k.startswith(ED25519 + ":")]
