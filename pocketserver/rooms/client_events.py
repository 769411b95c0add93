"""Events as clients see them (client-server API "Room Event Format", ClientEvent).

Federation-only keys (hashes, signatures, auth and prev events, depth, origin) are
dropped; ``unsigned`` carries the age, the redaction that applied, and the
transaction ID for the sender's own device.
"""

from __future__ import annotations

from collections.abc import Mapping

from pocketserver.core.redaction import redaction_target
from pocketserver.rooms.reading import ReadEvent

_CLIENT_KEYS = ("type", "content", "sender", "origin_server_ts", "state_key")


def client_event(
    event: ReadEvent,
    now_ms: int,
    *,
    include_room_id: bool = True,
    transaction_id: str | None = None,
) -> dict[str, object]:
    """The ClientEvent (or, without ``room_id``, ClientEventWithoutRoomID) form."""
    pdu = event.pdu
    out: dict[str, object] = {k: pdu[k] for k in _CLIENT_KEYS if k in pdu}
    out.setdefault("content", {})
    out["event_id"] = event.event_id
    if include_room_id:
        out["room_id"] = event.room_id
    redacts = redaction_target(pdu)
    if redacts is not None:
        # v11 moved it into content; keep the top-level copy older clients read.
        out["redacts"] = redacts
    unsigned: dict[str, object] = {}
    ts = pdu.get("origin_server_ts")
    if isinstance(ts, int):
        unsigned["age"] = max(0, now_ms - ts)
    if event.redacted_because is not None:
        because = event.redacted_because
        why: dict[str, object] = {k: because[k] for k in _CLIENT_KEYS if k in because}
        why["event_id"] = event.redacted_because_id
        why["room_id"] = event.room_id
        if (target := redaction_target(because)) is not None:
            why["redacts"] = target  # the redaction as a ClientEvent, as Synapse sends it
        unsigned["redacted_because"] = why
        # Not in the spec's ClientEvent, but Synapse has always sent the redaction's ID
        # beside it and clients (and SyTest 39redactions.pl) read it.
        unsigned["redacted_by"] = event.redacted_because_id
    if transaction_id is not None:
        unsigned["transaction_id"] = transaction_id
    out["unsigned"] = unsigned
    return out


def federation_event(
    event: ReadEvent, now_ms: int, *, transaction_id: str | None = None
) -> dict[str, object]:
    """The event as servers exchange it (a filter's ``event_format: federation``): the
    PDU (redacted if a redaction applies) with its ``event_id``, and ``unsigned`` as in
    :func:`client_event` (as Synapse's raw format)."""
    out: dict[str, object] = dict(event.pdu)
    out["event_id"] = event.event_id
    out["room_id"] = event.room_id
    unsigned = client_event(event, now_ms, transaction_id=transaction_id)["unsigned"]
    pdu_unsigned = event.pdu.get("unsigned")
    if isinstance(pdu_unsigned, Mapping) and isinstance(unsigned, dict):
        unsigned = {**pdu_unsigned, **unsigned}
    out["unsigned"] = unsigned
    return out


def stripped_state(pdu: Mapping[str, object]) -> dict[str, object]:
    """The StrippedStateEvent form (invite and knock state)."""
    return {
        "type": pdu.get("type"),
        "state_key": pdu.get("state_key"),
        "content": pdu.get("content", {}),
        "sender": pdu.get("sender"),
    }
