"""Canonical JSON, unpadded base64, ed25519 keys, JSON signatures and event hashes.

Spec: appendices.md "Unpadded Base64", "Signing JSON" (and its "Canonical
JSON", "Signing Details", "Checking for a Signature" subsections);
server-server-api.md "Signing Events", "Calculating the reference hash for an
event", "Calculating the content hash for an event", "Publishing Keys".

Keys are pynacl :class:`~nacl.signing.SigningKey` / :class:`~nacl.signing.VerifyKey`
objects carrying signedjson-style ``alg`` and ``version`` attributes; the key ID
is ``f"{alg}:{version}"``. The keys this module creates are instances of the
subclasses :class:`NamedSigningKey` / :class:`NamedVerifyKey`, but every function
also accepts plain pynacl keys to which those attributes were added (as
signedjson does).

Everything here is pure and deterministic except :func:`generate_signing_key`,
which draws a random seed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping

import canonicaljson
import nacl.exceptions
import nacl.signing
import nacl.utils

from pocketserver.core.redaction import redact

__all__ = [
    "CONTENT_HASH_EXCLUDED_KEYS",
    "ED25519",
    "NamedSigningKey",
    "NamedVerifyKey",
    "SignatureError",
    "add_hashes_and_signatures",
    "check_content_hash",
    "compute_content_hash",
    "compute_reference_hash",
    "decode_base64",
    "decode_signing_key_base64",
    "decode_verify_key_base64",
    "encode_base64",
    "encode_canonical_json",
    "encode_verify_key_base64",
    "generate_signing_key",
    "get_verify_key",
    "is_valid_key_version",
    "key_id",
    "make_server_keys_response",
    "read_signing_keys",
    "sign_json",
    "verify_signed_json",
    "write_signing_keys",
]

ED25519 = "ed25519"
"""The only signing algorithm in the spec (appendices.md "Signing Details")."""

_KEY_VERSION_RE = re.compile(r"[a-zA-Z0-9_]+")
_B64_ALPHABET_RE = re.compile(r"[A-Za-z0-9+/]*")
_SEED_BYTES = 32


class SignatureError(Exception):
    """A JSON object's signature is missing, unverifiable or wrong."""


class NamedSigningKey(nacl.signing.SigningKey):
    """An ed25519 signing key with signedjson-style ``alg`` and ``version``."""

    alg: str
    version: str


class NamedVerifyKey(nacl.signing.VerifyKey):
    """An ed25519 verify key with signedjson-style ``alg`` and ``version``."""

    alg: str
    version: str


# --- canonical JSON and base64 -------------------------------------------------


def encode_canonical_json(obj: object) -> bytes:
    """Encode ``obj`` as Canonical JSON (appendices.md "Canonical JSON").

    Args:
        obj: A JSON-compatible value.

    Returns:
        The UTF-8 bytes: shortest form, keys sorted by code point.

    Raises:
        TypeError: ``obj`` holds a value JSON cannot represent.
        ValueError: ``obj`` holds a NaN/infinite float or a circular reference.
    """
    out = canonicaljson.encode_canonical_json(obj)
    assert isinstance(out, bytes)
    return out


def encode_base64(data: bytes, urlsafe: bool = False) -> str:
    """Encode bytes as unpadded base64 (appendices.md "Unpadded Base64").

    Args:
        data: The bytes to encode.
        urlsafe: Use the URL-safe alphabet (``-``/``_``; appendices.md
            "URL-safe unpadded Base64").

    Returns:
        The encoding without ``=`` padding.
    """
    encoded = base64.urlsafe_b64encode(data) if urlsafe else base64.b64encode(data)
    return encoded.rstrip(b"=").decode("ascii")


def decode_base64(s: str) -> bytes:
    """Decode unpadded or padded base64 in either alphabet.

    Spec: appendices.md "Unpadded Base64": decoders "SHOULD accept input with
    or without padding characters".

    Args:
        s: The encoded text.

    Returns:
        The decoded bytes.

    Raises:
        ValueError: ``s`` is not base64 (bad characters or length).
    """
    if not isinstance(s, str):
        raise ValueError("base64 input must be a string")
    body = s.rstrip("=").replace("-", "+").replace("_", "/")
    if len(s) - len(body) > 2 or not _B64_ALPHABET_RE.fullmatch(body):
        raise ValueError("invalid base64")
    if len(body) % 4 == 1:
        raise ValueError("invalid base64 length")
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except binascii.Error as exc:  # pragma: no cover - guarded above
        raise ValueError(f"invalid base64: {exc}") from None


# --- keys ------------------------------------------------------------------------


def is_valid_key_version(version: str) -> bool:
    """Whether ``version`` fits the key version grammar ``[a-zA-Z0-9_]+``.

    Spec: server-server-api ``keys_server.yaml`` (``verify_keys``): "The
    version must have characters matching the regular expression
    ``[a-zA-Z0-9_]``".

    Args:
        version: The part of a key ID after ``ed25519:``.

    Returns:
        True if non-empty and made only of ``[a-zA-Z0-9_]``.
    """
    return isinstance(version, str) and _KEY_VERSION_RE.fullmatch(version) is not None


def _check_alg_version(alg: str, version: str) -> None:
    if alg != ED25519:
        raise ValueError(f"unsupported signing key algorithm {alg!r}")
    if not is_valid_key_version(version):
        raise ValueError(f"invalid key version {version!r} (must match [a-zA-Z0-9_]+)")


def _named_signing_key(seed: bytes, version: str) -> NamedSigningKey:
    key = NamedSigningKey(seed)
    key.alg = ED25519
    key.version = version
    return key


def generate_signing_key(version: str) -> NamedSigningKey:
    """Generate a fresh ed25519 signing key from a random seed.

    Args:
        version: The key version (``[a-zA-Z0-9_]+``), e.g. ``"a_AbCd"``.

    Returns:
        The key, with ``alg == "ed25519"`` and the given ``version``.

    Raises:
        ValueError: ``version`` does not fit the key version grammar.
    """
    _check_alg_version(ED25519, version)
    return _named_signing_key(nacl.utils.random(_SEED_BYTES), version)


def decode_signing_key_base64(alg: str, version: str, key_base64: str) -> NamedSigningKey:
    """Build a signing key from its base64 seed (Synapse key file field).

    Args:
        alg: Must be ``"ed25519"``.
        version: The key version (``[a-zA-Z0-9_]+``).
        key_base64: The 32-byte seed, base64 (padded or not).

    Returns:
        The signing key.

    Raises:
        ValueError: Unknown algorithm, bad version, bad base64 or wrong length.
    """
    _check_alg_version(alg, version)
    seed = decode_base64(key_base64)
    if len(seed) != _SEED_BYTES:
        raise ValueError(f"ed25519 seed must be {_SEED_BYTES} bytes, got {len(seed)}")
    return _named_signing_key(seed, version)


def decode_verify_key_base64(alg: str, version: str, key_base64: str) -> NamedVerifyKey:
    """Build a verify key from a published base64 public key.

    Args:
        alg: Must be ``"ed25519"``.
        version: The key version (``[a-zA-Z0-9_]+``).
        key_base64: The 32-byte public key, base64 (padded or not).

    Returns:
        The verify key.

    Raises:
        ValueError: Unknown algorithm, bad version, bad base64 or wrong length.
    """
    _check_alg_version(alg, version)
    raw = decode_base64(key_base64)
    if len(raw) != _SEED_BYTES:
        raise ValueError(f"ed25519 public key must be {_SEED_BYTES} bytes, got {len(raw)}")
    key = NamedVerifyKey(raw)
    key.alg = alg
    key.version = version
    return key


def _alg_version(key: object) -> tuple[str, str]:
    alg = getattr(key, "alg", None)
    version = getattr(key, "version", None)
    if not isinstance(alg, str) or not isinstance(version, str):
        raise ValueError("key has no string 'alg'/'version' attributes")
    return alg, version


def key_id(key: nacl.signing.SigningKey | nacl.signing.VerifyKey) -> str:
    """Return the key ID ``f"{alg}:{version}"`` of a key.

    Args:
        key: A signing or verify key carrying ``alg`` and ``version``.

    Returns:
        The key ID, e.g. ``"ed25519:a_AbCd"``.

    Raises:
        ValueError: The key has no ``alg``/``version`` attributes.
    """
    alg, version = _alg_version(key)
    return f"{alg}:{version}"


def get_verify_key(signing_key: nacl.signing.SigningKey) -> NamedVerifyKey:
    """Return the public half of a signing key, carrying the same ``alg``/``version``.

    Raises:
        ValueError: The key has no ``alg``/``version`` attributes.
    """
    alg, version = _alg_version(signing_key)
    key = NamedVerifyKey(bytes(signing_key.verify_key))
    key.alg = alg
    key.version = version
    return key


def encode_verify_key_base64(key: nacl.signing.VerifyKey) -> str:
    """Return the unpadded standard base64 of a verify key's 32 bytes."""
    return encode_base64(bytes(key))


def read_signing_keys(text: str) -> list[NamedSigningKey]:
    """Parse Synapse's signing key file: ``<alg> <version> <base64 seed>`` per line.

    Blank lines are skipped.

    Args:
        text: The file's contents.

    Returns:
        The keys, in file order.

    Raises:
        ValueError: A line is malformed or holds an unusable key.
    """
    keys: list[NamedSigningKey] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise ValueError(f"signing key line {lineno}: expected '<alg> <version> <key>'")
        try:
            keys.append(decode_signing_key_base64(*parts))
        except ValueError as exc:
            raise ValueError(f"signing key line {lineno}: {exc}") from None
    return keys


def write_signing_keys(keys: Iterable[nacl.signing.SigningKey]) -> str:
    """Serialise signing keys in Synapse's key file format (one per line).

    Args:
        keys: Signing keys carrying ``alg`` and ``version``.

    Returns:
        The file text, each line ``<alg> <version> <unpadded base64 seed>\\n``.

    Raises:
        ValueError: A key has no ``alg``/``version`` attributes.
    """
    lines = []
    for key in keys:
        alg, version = _alg_version(key)
        lines.append(f"{alg} {version} {encode_base64(bytes(key))}\n")
    return "".join(lines)


# --- JSON signatures --------------------------------------------------------------


def sign_json(
    obj: Mapping[str, object], server_name: str, signing_key: nacl.signing.SigningKey
) -> dict[str, object]:
    """Sign a JSON object (appendices.md "Signing Details").

    ``signatures`` and ``unsigned`` are left out of the signed bytes; other
    entities' existing signatures are kept.

    Args:
        obj: The object to sign. It is **not** mutated.
        server_name: The signing entity (the key under ``signatures``).
        signing_key: The key, carrying ``alg`` and ``version``.

    Returns:
        A new dict: ``obj`` plus ``signatures[server_name][key_id]``.

    Raises:
        ValueError: The key lacks ``alg``/``version``, or ``obj`` is not JSON.
        TypeError: ``obj`` holds a value JSON cannot represent.
    """
    kid = key_id(signing_key)
    body = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    signature = signing_key.sign(encode_canonical_json(body)).signature
    old = obj.get("signatures")
    signatures: dict[str, object] = {}
    if isinstance(old, Mapping):
        for name, sigs in old.items():
            signatures[name] = dict(sigs) if isinstance(sigs, Mapping) else sigs
    ours = signatures.get(server_name)
    ours = ours if isinstance(ours, dict) else {}
    ours[kid] = encode_base64(signature)
    signatures[server_name] = ours
    out = dict(obj)
    out["signatures"] = signatures
    return out


def verify_signed_json(
    obj: Mapping[str, object],
    server_name: str,
    verify_keys: Mapping[str, nacl.signing.VerifyKey],
) -> None:
    """Check an entity's signatures on a JSON object.

    Spec: appendices.md "Checking for a Signature". Signatures under key IDs
    not in ``verify_keys`` (or of an unknown algorithm) are ignored; every
    signature by a known key must be valid, and there must be at least one
    (server-server-api.md "Validating hashes and signatures on received events").

    Args:
        obj: The signed object.
        server_name: The entity whose signature is required.
        verify_keys: Known keys of that entity, by key ID.

    Raises:
        SignatureError: No signatures from ``server_name``, none by a known key,
            undecodable or wrong signature, or an object that cannot be
            canonicalised. Nothing else is raised.
    """
    if not isinstance(obj, Mapping):
        raise SignatureError("signed JSON must be an object")
    sigs = obj.get("signatures")
    if not isinstance(sigs, Mapping):
        raise SignatureError("object has no signatures")
    ours = sigs.get(server_name)
    if not isinstance(ours, Mapping) or not ours:
        raise SignatureError(f"object not signed by {server_name}")
    known = [
        (kid, sig)
        for kid, sig in ours.items()
        if isinstance(kid, str)
        and kid.startswith(ED25519 + ":")
        and isinstance(verify_keys.get(kid), nacl.signing.VerifyKey)
    ]
    if not known:
        raise SignatureError(f"no signature from {server_name} by a known key")
    body = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    try:
        message = encode_canonical_json(body)
    except (TypeError, ValueError) as exc:
        raise SignatureError(f"object cannot be canonicalised: {exc}") from None
    for kid, sig in known:
        try:
            raw = decode_base64(sig) if isinstance(sig, str) else None
        except ValueError:
            raw = None
        if raw is None:
            raise SignatureError(f"signature {server_name} {kid} is not base64")
        try:
            verify_keys[kid].verify(message, raw)
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
            raise SignatureError(f"bad signature {server_name} {kid}: {exc}") from None


# --- event hashes and signatures --------------------------------------------------


CONTENT_HASH_EXCLUDED_KEYS = frozenset(
    {"unsigned", "signatures", "hashes", "age_ts", "outlier", "destinations"}
)
"""Top-level keys left out of an event's content hash.

Spec: server-server-api.md "Calculating the content hash for an event" names only
``unsigned``, ``signatures`` and ``hashes``. Synapse's ``compute_content_hash``
(synapse/crypto/event_signing.py) also drops the legacy keys ``age_ts``, ``outlier``
and ``destinations``, which old servers put on events and which old rooms still hold:
those events' hashes were computed without them. We drop them too, or we would
redact, on joining an old room, events that every other server accepts. No event
built under the current spec carries these keys, so for new events both rules agree.
"""


def _content_hash_digest(pdu: Mapping[str, object]) -> bytes:
    body = {k: v for k, v in pdu.items() if k not in CONTENT_HASH_EXCLUDED_KEYS}
    return hashlib.sha256(encode_canonical_json(body)).digest()


def compute_content_hash(pdu: Mapping[str, object]) -> str:
    """Compute an event's content hash.

    Spec: server-server-api.md "Calculating the content hash for an event":
    drop ``unsigned``, ``signatures`` and ``hashes`` (and, as Synapse, the legacy
    keys in :data:`CONTENT_HASH_EXCLUDED_KEYS`), canonical JSON, SHA-256.

    Args:
        pdu: The full (unredacted) event.

    Returns:
        The hash as unpadded standard base64 (the value of ``hashes.sha256``).
    """
    return encode_base64(_content_hash_digest(pdu))


def check_content_hash(pdu: Mapping[str, object]) -> bool:
    """Whether ``hashes.sha256`` of the event matches its content hash.

    Spec: server-server-api.md "Validating hashes and signatures on received
    events" (the hash is base64-decoded and compared).

    Args:
        pdu: The received event.

    Returns:
        False if the hash is missing, malformed or different.
    """
    hashes = pdu.get("hashes")
    claimed = hashes.get("sha256") if isinstance(hashes, Mapping) else None
    if not isinstance(claimed, str):
        return False
    try:
        return decode_base64(claimed) == _content_hash_digest(pdu)
    except (TypeError, ValueError):
        return False


def compute_reference_hash(pdu: Mapping[str, object], room_version: str) -> str:
    """Compute an event's reference hash.

    Spec: server-server-api.md "Calculating the reference hash for an event":
    redact per the room version, drop ``signatures`` and ``unsigned``,
    canonical JSON, SHA-256. (``age_ts`` and other extra keys are gone with
    the redaction.)

    Args:
        pdu: The event.
        room_version: Its room version.

    Returns:
        Unpadded *standard* base64 of the digest. The URL-safe form of v4+
        event IDs is applied by ``pocketserver.core.events.compute_event_id``.

    Raises:
        UnsupportedRoomVersion: Unknown room version.
    """
    redacted = redact(pdu, room_version)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    return encode_base64(hashlib.sha256(encode_canonical_json(redacted)).digest())


def add_hashes_and_signatures(
    pdu: Mapping[str, object],
    room_version: str,
    server_name: str,
    signing_key: nacl.signing.SigningKey,
) -> dict[str, object]:
    """Add the content hash and this server's signature to an outgoing event.

    Spec: server-server-api.md "Adding hashes and signatures to outgoing
    events": content hash into ``hashes.sha256``, then sign the *redacted*
    event and copy the signatures back.

    Args:
        pdu: The event to send. It is **not** mutated.
        room_version: Its room version (selects the redaction algorithm).
        server_name: This server's name.
        signing_key: This server's signing key.

    Returns:
        A new dict: the event with ``hashes`` and ``signatures`` set (other
        hash algorithms and other servers' signatures kept).

    Raises:
        UnsupportedRoomVersion: Unknown room version.
        ValueError: The key lacks ``alg``/``version``.
    """
    out = dict(pdu)
    old_hashes = pdu.get("hashes")
    hashes = dict(old_hashes) if isinstance(old_hashes, Mapping) else {}
    hashes["sha256"] = compute_content_hash(pdu)
    out["hashes"] = hashes
    signed = sign_json(redact(out, room_version), server_name, signing_key)
    out["signatures"] = signed["signatures"]
    return out


def make_server_keys_response(
    server_name: str,
    signing_key: nacl.signing.SigningKey,
    old_verify_keys: Mapping[str, tuple[nacl.signing.VerifyKey, int]] | None,
    valid_until_ts: int,
) -> dict[str, object]:
    """Build the signed body of ``GET /_matrix/key/v2/server``.

    Spec: server-server-api.md "Publishing Keys" (``keys_server.yaml``:
    ``server_name``, ``verify_keys``, ``old_verify_keys`` with
    ``expired_ts``, ``valid_until_ts``, ``signatures``).

    Args:
        server_name: This server's name.
        signing_key: The current signing key (published in ``verify_keys`` and
            used to sign the response).
        old_verify_keys: Retired keys by key ID, each with the POSIX ms time it
            expired.
        valid_until_ts: POSIX ms until which the key list may be cached.

    Returns:
        The signed response body.

    Raises:
        ValueError: The signing key lacks ``alg``/``version``.
    """
    verify_key = get_verify_key(signing_key)
    old = {
        kid: {"key": encode_verify_key_base64(vk), "expired_ts": expired_ts}
        for kid, (vk, expired_ts) in (old_verify_keys or {}).items()
    }
    body: dict[str, object] = {
        "server_name": server_name,
        "verify_keys": {key_id(verify_key): {"key": encode_verify_key_base64(verify_key)}},
        "old_verify_keys": old,
        "valid_until_ts": valid_until_ts,
    }
    return sign_json(body, server_name, signing_key)
