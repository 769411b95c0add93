"""Which servers must have signed a PDU, and checking those signatures.

Spec: server-server-api.md "Validating hashes and signatures on received events"
and "Checks performed on receipt of a PDU" (step 2). Signatures are made over the
redacted form of the event, so they survive redaction.
"""

from __future__ import annotations

from collections.abc import Mapping

from nacl.signing import VerifyKey

from pocketserver.core.crypto import SignatureError, verify_signed_json
from pocketserver.core.identifiers import get_domain
from pocketserver.core.redaction import redact
from pocketserver.core.room_versions import get_room_version


def required_signers(pdu: Mapping[str, object], room_version: str) -> set[str]:
    """The servers whose signatures a PDU must carry.

    - the sender's server, always;
    - v1/v2: the server of the event ID (it chose the ID);
    - v8+: for a join through a restricted room, the server of
      ``content.join_authorised_via_users_server``.

    Raises:
        SignatureError: a needed ID is missing or malformed, so nothing can be checked.
    """
    version = get_room_version(room_version)
    try:
        servers = {get_domain(str(pdu["sender"]))}
        if version.event_ids_in_pdu:
            servers.add(get_domain(str(pdu["event_id"])))
        content = pdu.get("content")
        if (
            version.restricted_join_rule
            and pdu.get("type") == "m.room.member"
            and isinstance(content, Mapping)
            and content.get("membership") == "join"
            and isinstance(content.get("join_authorised_via_users_server"), str)
        ):
            servers.add(get_domain(str(content["join_authorised_via_users_server"])))
    except (KeyError, ValueError) as e:
        raise SignatureError(f"cannot tell who must sign this event: {e}") from None
    return servers


def verify_event_signatures(
    pdu: Mapping[str, object],
    room_version: str,
    keys: Mapping[str, Mapping[str, VerifyKey]],
) -> None:
    """Check that every required server signed the redacted PDU with a key it owns.

    Args:
        pdu: The event as received.
        room_version: Its room version.
        keys: For each server, its verify keys by key ID, already checked by the
            caller to be valid at the event's ``origin_server_ts`` where the room
            version enforces key validity (v5+).

    Raises:
        SignatureError: a required signature is missing or wrong.
    """
    redacted = redact(dict(pdu), room_version)
    for server in sorted(required_signers(pdu, room_version)):
        server_keys = keys.get(server)
        if not server_keys:
            raise SignatureError(f"no verify keys known for {server}")
        verify_signed_json(redacted, server, server_keys)
