"""Building a new local PDU: edges in the room version's shape, IDs, hashes, signature."""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping, Sequence

from nacl.signing import SigningKey

from pocketserver.core.crypto import add_hashes_and_signatures, compute_reference_hash
from pocketserver.core.events import compute_event_id, compute_room_id_v12
from pocketserver.core.room_versions import get_room_version

MAX_PREV_EVENTS = 10
MAX_DEPTH = 2**53 - 1

_ID_ALPHABET = string.ascii_letters


def random_string(n: int) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(n))


def new_room_id(server_name: str) -> str:
    """A room ID for room versions 1-11 (``!opaque:server``)."""
    return f"!{random_string(18)}:{server_name}"


def edges(
    room_version: str, event_ids: Sequence[str], pdus: Mapping[str, Mapping[str, object]]
) -> list[object]:
    """``prev_events``/``auth_events`` in the version's shape: v1/v2 ``[id, {sha256}]``
    pairs (the reference hash of each named event), v3+ plain IDs."""
    version = get_room_version(room_version)
    if not version.event_ids_in_pdu:
        return list(event_ids)
    return [
        [eid, {"sha256": compute_reference_hash(dict(pdus[eid]), room_version)}]
        for eid in event_ids
    ]


def finish_pdu(
    pdu: dict[str, object], room_version: str, server_name: str, signing_key: SigningKey
) -> tuple[str, dict[str, object]]:
    """Add the v1/v2 event ID, hashes and signature; return (event_id, pdu)."""
    version = get_room_version(room_version)
    if version.event_ids_in_pdu:
        pdu["event_id"] = f"${random_string(18)}:{server_name}"
    signed = add_hashes_and_signatures(pdu, room_version, server_name, signing_key)
    return compute_event_id(signed, room_version), signed


def create_event_room_id(
    create_pdu: Mapping[str, object], room_version: str, server_name: str
) -> str:
    """The room ID for a new room's create event: v12 derives it from the event."""
    if get_room_version(room_version).hydra:
        return compute_room_id_v12(dict(create_pdu))
    return new_room_id(server_name)


def create_event_id_for_room(room_id: str) -> str:
    """v12: the create event's ID is the room ID's hash with ``$`` (rooms/v12.md)."""
    return "$" + room_id[1:]
