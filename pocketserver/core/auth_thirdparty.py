"""Invites by third-party identifier: the auth sub-rules of ``membership`` ``invite``
when ``content.third_party_invite`` is present.

Spec: ``content/rooms/fragments/v1-auth-rules.md`` rule 5.3.1 (v1-v5: 5.3.1;
v6/v7: 4.3.1; v8-v11: 4.4.1; v12: 5.4.1), identical in every room version.
"""

from __future__ import annotations

from collections.abc import Mapping

import nacl.exceptions
import nacl.signing

from pocketserver.core.auth_context import AuthContext, AuthError, as_map
from pocketserver.core.crypto import decode_base64, encode_canonical_json

__all__ = ["check_third_party_invite", "third_party_public_keys"]


def third_party_public_keys(invite_content: Mapping[str, object]) -> list[str]:
    """Return the public keys of an ``m.room.third_party_invite`` event.

    Rule x.1.7: "A single public key in the ``public_key`` property" and "A list of
    public keys in the ``public_keys`` property" (objects with ``public_key``).

    Args:
        invite_content: The invite event's content.

    Returns:
        The base64-encoded keys found (malformed entries are skipped).
    """
    keys: list[str] = []
    single = invite_content.get("public_key")
    if isinstance(single, str):
        keys.append(single)
    many = invite_content.get("public_keys")
    if isinstance(many, list):
        for entry in many:
            key = as_map(entry).get("public_key")
            if isinstance(key, str):
                keys.append(key)
    return keys


def _signature_matches(signed: Mapping[str, object], public_keys: list[str]) -> bool:
    """Rule x.1.7: does *any* ed25519 signature in ``signed`` verify under *any* key?

    Synapse stops trying a public key at the first signature that fails; the spec
    says "any signature", which we follow (only differs for a ``signed`` block
    carrying a bad signature before a good one).
    """
    try:
        message = encode_canonical_json(
            {k: v for k, v in signed.items() if k not in ("signatures", "unsigned")}
        )
    except (TypeError, ValueError):
        return False
    signatures = [
        sig
        for block in as_map(signed.get("signatures")).values()
        for key_id, sig in as_map(block).items()
        if isinstance(key_id, str) and key_id.startswith("ed25519:") and isinstance(sig, str)
    ]
    for public_key in public_keys:
        try:
            verify_key = nacl.signing.VerifyKey(decode_base64(public_key))
        except (ValueError, TypeError, nacl.exceptions.CryptoError):
            continue
        for sig in signatures:
            try:
                verify_key.verify(message, decode_base64(sig))
            except (ValueError, TypeError, nacl.exceptions.CryptoError):
                continue
            return True
    return False


def check_third_party_invite(ctx: AuthContext, target: str) -> None:
    """Rule x.1 for an invite with ``content.third_party_invite``; returning = allow.

    1. target banned -> reject; 2. no ``signed`` -> reject; 3. ``signed`` lacks
    ``mxid`` or ``token`` -> reject; 4. ``mxid`` is not the state key -> reject;
    5. no ``m.room.third_party_invite`` with ``token`` as state key -> reject;
    6. its sender is not this sender -> reject; 7. a signature of ``signed``
    verifies under one of its public keys -> allow; 8. otherwise reject.

    Args:
        ctx: The event and state.
        target: The invited user (the state key).

    Raises:
        AuthError: The invite is rejected.
    """
    if ctx.membership(target) == "ban":
        raise AuthError("member.invite.3pid", "the target is banned (x.1.1)")
    signed = as_map(ctx.content.get("third_party_invite")).get("signed")
    if not isinstance(signed, Mapping):
        raise AuthError("member.invite.3pid", "third_party_invite has no signed (x.1.2)")
    if "mxid" not in signed or "token" not in signed:
        raise AuthError("member.invite.3pid", "signed lacks mxid or token (x.1.3)")
    if signed["mxid"] != target:
        raise AuthError("member.invite.3pid", "signed.mxid is not the state_key (x.1.4)")
    token = signed["token"]
    invite = ctx.state.get(("m.room.third_party_invite", token)) if isinstance(token, str) else None
    if invite is None:
        raise AuthError("member.invite.3pid", "no m.room.third_party_invite for token (x.1.5)")
    if invite.get("sender") != ctx.sender:
        raise AuthError("member.invite.3pid", "sender did not send the 3pid invite (x.1.6)")
    if not _signature_matches(signed, third_party_public_keys(as_map(invite.get("content")))):
        raise AuthError("member.invite.3pid", "no signature matches a public key (x.1.8)")
