"""Policy servers (spec v1.18): which room uses one, which events need its signature,
and checking that signature.

Spec: server-server-api.md "Policy Servers" ("Determining if a Policy Server is enabled
in a room", "Validating Policy Server signatures", "Asking for a Policy Server signature
on an event"), client-server-api "Policy Servers" (the ``m.room.policy`` state event).
Interop details follow Synapse 1.163 (``synapse/handlers/room_policy.py``): the key ID
is always ``ed25519:policy_server``; the signature is made over the redacted event, as
server signatures are; a room whose ``via`` is this server uses no policy server (this
server is not one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nacl.signing import VerifyKey

from pocketserver.core.crypto import (
    SignatureError,
    decode_base64,
    decode_verify_key_base64,
    verify_signed_json,
)
from pocketserver.core.identifiers import is_valid_server_name
from pocketserver.core.redaction import redact

POLICY_EVENT_TYPE = "m.room.policy"
POLICY_KEY_ID = "ed25519:policy_server"
"""server-server-api.md "Validating Policy Server signatures": the key ID of the
``ed25519`` key in ``m.room.policy`` is *always* ``ed25519:policy_server``."""


@dataclass(frozen=True)
class PolicyServer:
    """A room's policy server: its name (``via``) and the key it signs events with."""

    server_name: str
    verify_key: VerifyKey


def policy_from_content(content: object, own_server_name: str) -> PolicyServer | None:
    """The policy server an ``m.room.policy`` state event (empty state key) names, or
    None when the content is not valid (then the room uses no policy server).

    Valid (server-server-api.md "Determining if a Policy Server is enabled in a room"):
    a string ``via`` and an object ``public_keys`` with a string ``ed25519``. Also
    refused, as Synapse does: a ``via`` that is not a server name, a key that is not a
    32-byte ed25519 key, and this server itself (Synapse: "Synapse itself can't be a
    policy server (currently)"; nor can pocketserver). Whether ``via`` has a joined
    user in the room is the caller's other condition (:func:`via_is_joined`).
    """
    if not isinstance(content, Mapping):
        return None
    via = content.get("via")
    keys = content.get("public_keys")
    if not isinstance(via, str) or not isinstance(keys, Mapping):
        return None
    ed25519 = keys.get("ed25519")
    if not isinstance(ed25519, str) or not is_valid_server_name(via) or via == own_server_name:
        return None
    try:
        verify_key = decode_verify_key_base64("ed25519", "policy_server", ed25519)
    except ValueError:
        return None
    return PolicyServer(via, verify_key)


def via_is_joined(server_name: str, members: Mapping[str, object]) -> bool:
    """Whether ``server_name`` has at least one joined user among ``members`` (user ID
    -> its ``m.room.member`` content in the current state): the second condition of
    "Determining if a Policy Server is enabled in a room"."""
    for user_id, content in members.items():
        if user_id.partition(":")[2] != server_name or not isinstance(content, Mapping):
            continue
        if content.get("membership") == "join":
            return True
    return False


def is_exempt(pdu: Mapping[str, object]) -> bool:
    """Whether an event never carries a policy signature: only the ``m.room.policy``
    state event with an empty state key (room_policy.yaml: "MUST NOT be called for
    events which have a type of ``m.room.policy`` and an empty string ``state_key``").
    Every other event needs one, membership and power levels included."""
    return pdu.get("type") == POLICY_EVENT_TYPE and pdu.get("state_key") == ""


def has_valid_signature(pdu: Mapping[str, object], room_version: str, policy: PolicyServer) -> bool:
    """Whether the policy server signed the redacted event with the key of the room's
    ``m.room.policy`` (not its published server key): "Validating Policy Server
    signatures"."""
    try:
        redacted = redact(dict(pdu), room_version)
        verify_signed_json(redacted, policy.server_name, {POLICY_KEY_ID: policy.verify_key})
    except (SignatureError, ValueError, TypeError, KeyError):
        return False
    return True


def needs_signature(
    pdu: Mapping[str, object], room_version: str, policy: PolicyServer | None
) -> bool:
    """Whether an event lacks the policy signature the room asks for (so it is not
    recommended for inclusion: soft-failed when received, refused when sent)."""
    if policy is None or is_exempt(pdu):
        return False
    return not has_valid_signature(pdu, room_version, policy)


def add_policy_signature(
    pdu: Mapping[str, object], policy: PolicyServer, answer: object
) -> dict[str, object]:
    """The event with the signature from a ``POST /_matrix/policy/v1/sign`` answer
    (``{server_name: {"ed25519:policy_server": sig}}``) added. Other signatures,
    including ones the policy server's own name already had, are kept (room_policy.yaml:
    "Those existing signatures ... should be retained"; Synapse adds them one by one).

    Raises:
        ValueError: the answer has no signature of the policy server under its key ID.
    """
    theirs = answer.get(policy.server_name) if isinstance(answer, Mapping) else None
    sig = theirs.get(POLICY_KEY_ID) if isinstance(theirs, Mapping) else None
    if not isinstance(sig, str):
        raise ValueError("the policy server's answer has no signature")
    decode_base64(sig)  # raises ValueError when not base64
    signatures: dict[str, object] = {}
    old = pdu.get("signatures")
    if isinstance(old, Mapping):
        signatures = {k: dict(v) if isinstance(v, Mapping) else v for k, v in old.items()}
    mine = signatures.get(policy.server_name)
    mine = dict(mine) if isinstance(mine, Mapping) else {}
    mine[POLICY_KEY_ID] = sig
    signatures[policy.server_name] = mine
    return {**pdu, "signatures": signatures}
