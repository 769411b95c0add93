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

__all__ = [
    "check_third_party_invite",
    "signing_public_keys",
    "third_party_key_entries",
    "third_party_public_keys",
]


def third_party_key_entries(
    invite_content: Mapping[str, object],
) -> list[tuple[str, str | None]]:
    """Return the public keys of an ``m.room.third_party_invite`` event with the URL
    at which each one's validity can be checked.

    Rule x.1.7: "A single public key in the ``public_key`` property" and "A list of
    public keys in the ``public_keys`` property" (objects with ``public_key`` and
    ``key_validity_url``; ``m.room.third_party_invite`` schema). The single key's URL
    is the top-level ``key_validity_url``.

    Args:
        invite_content: The invite event's content.

    Returns:
        ``(public key, key_validity_url or None)`` pairs, the single key first
        (malformed entries are skipped, a missing or non-string URL is None).
    """
    entries: list[tuple[str, str | None]] = []
    single = invite_content.get("public_key")
    if isinstance(single, str):
        url = invite_content.get("key_validity_url")
        entries.append((single, url if isinstance(url, str) else None))
    many = invite_content.get("public_keys")
    if isinstance(many, list):
        for entry in many:
            fields = as_map(entry)
            key = fields.get("public_key")
            url = fields.get("key_validity_url")
            if isinstance(key, str):
                entries.append((key, url if isinstance(url, str) else None))
    return entries


def third_party_public_keys(invite_content: Mapping[str, object]) -> list[str]:
    """Return the public keys of an ``m.room.third_party_invite`` event (rule x.1.7).

    Args:
        invite_content: The invite event's content.

    Returns:
        The base64-encoded keys found (malformed entries are skipped).
    """
    return [key for key, _ in third_party_key_entries(invite_content)]


def _verify_key(public_key: str) -> nacl.signing.VerifyKey | None:
    try:
        return nacl.signing.VerifyKey(decode_base64(public_key))
    except (ValueError, TypeError, nacl.exceptions.CryptoError):
        return None


def _signed_message(signed: Mapping[str, object]) -> tuple[bytes, list[str]] | None:
    """The canonical bytes ``signed`` was signed over, and its ed25519 signatures."""
    try:
        message = encode_canonical_json(
            {k: v for k, v in signed.items() if k not in ("signatures", "unsigned")}
        )
    except (TypeError, ValueError):
        return None
    signatures = [
        sig
        for block in as_map(signed.get("signatures")).values()
        for key_id, sig in as_map(block).items()
        if isinstance(key_id, str) and key_id.startswith("ed25519:") and isinstance(sig, str)
    ]
    return message, signatures


def _signs(verify_key: nacl.signing.VerifyKey, message: bytes, signatures: list[str]) -> bool:
    for sig in signatures:
        try:
            verify_key.verify(message, decode_base64(sig))
        except (ValueError, TypeError, nacl.exceptions.CryptoError):
            continue
        return True
    return False


def signing_public_keys(
    signed: Mapping[str, object], invite_content: Mapping[str, object]
) -> list[tuple[str, str | None]]:
    """Return the keys of a third-party invite under which ``signed`` verifies.

    The server that accepts a third-party invite must then check that such a key is
    still valid at its ``key_validity_url`` (client-server-api "Third-party
    invites", "Server behaviour"); the auth rule itself (x.1.7) only needs one.

    Args:
        signed: The ``signed`` object of ``content.third_party_invite``.
        invite_content: The ``m.room.third_party_invite`` event's content.

    Returns:
        The ``(public key, key_validity_url or None)`` entries (as
        :func:`third_party_key_entries`, without repeats) with a signature in ``signed``.
    """
    found = _signed_message(signed)
    if found is None:
        return []
    message, signatures = found
    result: list[tuple[str, str | None]] = []
    for public_key, url in third_party_key_entries(invite_content):
        verify_key = _verify_key(public_key)
        entry = (public_key, url)
        if (
            entry not in result
            and verify_key is not None
            and _signs(verify_key, message, signatures)
        ):
            result.append(entry)
    return result


def _signature_matches(signed: Mapping[str, object], public_keys: list[str]) -> bool:
    """Rule x.1.7: does *any* ed25519 signature in ``signed`` verify under *any* key?

    Synapse stops trying a public key at the first signature that fails; the spec
    says "any signature", which we follow (only differs for a ``signed`` block
    carrying a bad signature before a good one).
    """
    found = _signed_message(signed)
    if found is None:
        return False
    message, signatures = found
    for public_key in public_keys:
        verify_key = _verify_key(public_key)
        if verify_key is not None and _signs(verify_key, message, signatures):
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
