"""Building signed keys the way a client does, for the tests."""

from __future__ import annotations

import nacl.signing

from pocketserver.core.crypto import encode_base64, encode_canonical_json


def public(key: nacl.signing.SigningKey) -> str:
    return encode_base64(bytes(key.verify_key))


def sign(obj: dict[str, object], user_id: str, key_id: str, key: nacl.signing.SigningKey) -> dict:
    body = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    signature = encode_base64(key.sign(encode_canonical_json(body)).signature)
    sigs = dict(obj.get("signatures") or {})  # type: ignore[call-overload]
    sigs[user_id] = {**sigs.get(user_id, {}), key_id: signature}
    return {**obj, "signatures": sigs}


def device_keys(user_id: str, device_id: str, key: nacl.signing.SigningKey) -> dict:
    obj = {
        "user_id": user_id,
        "device_id": device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            f"curve25519:{device_id}": encode_base64(bytes(32)),
            f"ed25519:{device_id}": public(key),
        },
    }
    return sign(obj, user_id, f"ed25519:{device_id}", key)


def signed_otk(
    user_id: str, device_id: str, key: nacl.signing.SigningKey, n: int, fallback: bool = False
) -> dict:
    obj: dict[str, object] = {"key": encode_base64(n.to_bytes(32, "big"))}
    if fallback:
        obj["fallback"] = True
    return sign(obj, user_id, f"ed25519:{device_id}", key)


def cross_signing_key(
    user_id: str, usage: str, key: nacl.signing.SigningKey, master: nacl.signing.SigningKey | None
) -> dict:
    obj: dict[str, object] = {
        "user_id": user_id,
        "usage": [usage],
        "keys": {f"ed25519:{public(key)}": public(key)},
    }
    if master is not None:
        obj = sign(obj, user_id, f"ed25519:{public(master)}", master)
    return obj
