"""Signature checks of remote PDUs with the keyring, and the keys the writer needs.

server-server-api.md "Validating hashes and signatures on received events": every
server that must sign a PDU (core.event_signing.required_signers) must have signed its
redacted form, and from room version 5 only with a key valid at the event's
``origin_server_ts`` (rooms/v5.md). :meth:`Keyring.verify_events` decides that per
event (fetching keys once for many events); the writer then re-checks the signatures
with the keys handed here, so an event reaches the room only if both agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nacl.signing import VerifyKey

from pocketserver.core.crypto import SignatureError
from pocketserver.core.event_signing import required_signers
from pocketserver.federation.keyring import Keyring

Keys = dict[str, dict[str, VerifyKey]]


async def verify_and_collect(
    keyring: Keyring, events: Sequence[tuple[Mapping[str, object], str]]
) -> tuple[Keys, list[SignatureError | None]]:
    """Check each ``(pdu, room_version)``'s signatures; return the keys of every
    required signer (for the writer) and, per event, None or why it failed."""
    errors = await keyring.verify_events(events)
    servers: set[str] = set()
    for (pdu, room_version), error in zip(events, errors, strict=True):
        if error is None:
            servers.update(required_signers(pdu, room_version))
    keys: Keys = {}
    for server in sorted(servers):
        known = await keyring.known_keys(server)
        keys[server] = {kid: key.verify_key() for kid, key in known.items()}
    return keys, errors


async def keys_for_event(keyring: Keyring, pdu: Mapping[str, object], room_version: str) -> Keys:
    """The keys for one PDU; raises the signature error if it fails the keyring's check."""
    keys, errors = await verify_and_collect(keyring, [(pdu, room_version)])
    if errors[0] is not None:
        raise errors[0]
    return keys
