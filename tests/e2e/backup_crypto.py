"""The client side of the key backup algorithm ``m.megolm_backup.v1.curve25519-aes-sha2``,
written from the spec for the tests (client-server API, end-to-end encryption module,
"Server-side key backups"), plus the user-facing form of the backup decryption key
(appendices, "Cryptographic key representation") and the signature check of a backup's
``auth_data`` (appendices, "Signing JSON").

Encrypting one session (spec steps 2-5): an ephemeral curve25519 key does ECDH with the
backup's public key; HKDF-SHA-256 (salt: 32 zero bytes, info: empty) of the shared secret
gives 80 bytes: AES-256 key, HMAC key, IV; the JSON is encrypted with AES-256-CBC and
PKCS#7 padding; the ``mac`` is the first 8 bytes of HMAC-SHA-256 of the *empty string*
under the HMAC key (the spec's warning: libolm's bug, which every implementation keeps).
So the MAC proves the right key, not the integrity of the ciphertext.

X25519 comes from PyNaCl (a server dependency), AES-CBC and HKDF from ``cryptography``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from typing import Any

import canonicaljson
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
MEGOLM = "m.megolm.v1.aes-sha2"
KEY_HEADER = b"\x8b\x01"
BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


class BackupDecryptionError(ValueError):
    """A backed-up session that this key cannot decrypt (MAC mismatch, bad padding)."""


def b64encode(data: bytes) -> str:
    """Unpadded standard base64, as Matrix writes keys and ciphertexts."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


# --- keys ------------------------------------------------------------------------------


def generate_private_key() -> bytes:
    """A fresh backup decryption key: 32 random bytes (a curve25519 private key)."""
    return secrets.token_bytes(32)


def public_key(private_key: bytes) -> str:
    """The backup's ``auth_data.public_key`` for a private key (unpadded base64)."""
    return b64encode(crypto_scalarmult_base(private_key))


def encode_recovery_key(private_key: bytes) -> str:
    """The key as shown to a user: header, key, parity byte; base58; a space every 4."""
    data = KEY_HEADER + private_key
    parity = 0
    for byte in data:
        parity ^= byte
    data += bytes([parity])
    number = int.from_bytes(data, "big")
    digits = ""
    while number:
        number, rest = divmod(number, 58)
        digits = BASE58[rest] + digits
    digits = BASE58[0] * (len(data) - len(data.lstrip(b"\0"))) + digits
    return " ".join(digits[i : i + 4] for i in range(0, len(digits), 4))


def decode_recovery_key(text: str) -> bytes:
    """The private key from what a user typed (whitespace ignored).

    Raises:
        ValueError: not base58, wrong header, wrong length or wrong parity.
    """
    digits = "".join(text.split())
    if not digits or any(char not in BASE58 for char in digits):
        raise ValueError("not a backup decryption key")
    number = 0
    for char in digits:
        number = number * 58 + BASE58.index(char)
    zeros = len(digits) - len(digits.lstrip(BASE58[0]))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    data = b"\0" * zeros + body
    parity = 0
    for byte in data:
        parity ^= byte
    if len(data) != len(KEY_HEADER) + 33 or not data.startswith(KEY_HEADER) or parity:
        raise ValueError("not a backup decryption key")
    return data[len(KEY_HEADER) : -1]


# --- session_data ----------------------------------------------------------------------


def _derive(shared_secret: bytes) -> tuple[bytes, bytes, bytes]:
    """Spec step 3: AES key, MAC key and IV from the ECDH shared secret."""
    okm = HKDF(algorithm=hashes.SHA256(), length=80, salt=bytes(32), info=b"").derive(shared_secret)
    return okm[:32], okm[32:64], okm[64:]


def _mac(mac_key: bytes) -> bytes:
    """Spec step 5: HMAC-SHA-256 of the empty string, first 8 bytes."""
    return hmac.new(mac_key, b"", hashlib.sha256).digest()[:8]


def encrypt(backup_public_key: str, plaintext: bytes) -> dict[str, str]:
    """Encrypt bytes for a backup; return the ``session_data`` object.

    Args:
        backup_public_key: ``auth_data.public_key`` (unpadded base64).
        plaintext: the stringified ``BackedUpSessionData``.

    Returns:
        ``{"ephemeral", "ciphertext", "mac"}``, each unpadded base64.
    """
    ephemeral = secrets.token_bytes(32)
    shared = crypto_scalarmult(ephemeral, b64decode(backup_public_key))
    aes_key, mac_key, iv = _derive(shared)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    return {
        "ephemeral": b64encode(crypto_scalarmult_base(ephemeral)),
        "ciphertext": b64encode(ciphertext),
        "mac": b64encode(_mac(mac_key)),
    }


def decrypt(private_key: bytes, session_data: Mapping[str, Any]) -> bytes:
    """Decrypt a ``session_data`` object with the backup's private key.

    Raises:
        BackupDecryptionError: the MAC does not match (a wrong key) or the padding is bad.
    """
    shared = crypto_scalarmult(private_key, b64decode(session_data["ephemeral"]))
    aes_key, mac_key, iv = _derive(shared)
    if not hmac.compare_digest(_mac(mac_key), b64decode(session_data["mac"])):
        raise BackupDecryptionError("MAC mismatch: not this backup's key")
    decryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(b64decode(session_data["ciphertext"])) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError as e:
        raise BackupDecryptionError(f"bad padding: {e}") from None


def encrypt_session(backup_public_key: str, session: Mapping[str, Any]) -> dict[str, str]:
    """Encrypt one ``BackedUpSessionData`` object (spec steps 1-5)."""
    return encrypt(backup_public_key, json.dumps(session).encode("utf-8"))


def decrypt_session(private_key: bytes, session_data: Mapping[str, Any]) -> dict[str, Any]:
    """Decrypt one ``session_data`` back to its ``BackedUpSessionData`` object."""
    session = json.loads(decrypt(private_key, session_data))
    if not isinstance(session, dict):
        raise BackupDecryptionError("session data is not a JSON object")
    return session


# --- auth_data -------------------------------------------------------------------------


def signing_bytes(obj: Mapping[str, Any]) -> bytes:
    """What a JSON signature covers: canonical JSON without ``signatures``/``unsigned``."""
    rest = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    return bytes(canonicaljson.encode_canonical_json(rest))


def verify_signature(obj: Mapping[str, Any], user_id: str, device_id: str, ed25519: str) -> bool:
    """Whether ``obj`` carries a valid signature by the device key ``ed25519``."""
    try:
        signature = obj["signatures"][user_id][f"ed25519:{device_id}"]
        VerifyKey(b64decode(ed25519)).verify(signing_bytes(obj), b64decode(signature))
    except (KeyError, TypeError, ValueError, BadSignatureError):
        return False
    return True
