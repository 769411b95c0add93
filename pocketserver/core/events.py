"""PDU format per room version, event IDs and v12 room IDs.

Spec: the "Event format" and "Event IDs" sections of each room version
(content/rooms/v1.md ... v12.md; fragments v1-event-ids.md, v4-event-ids.md,
v4/v6/v11/v12-event-format.md, whose schemas are
data/api/server-server/definitions/pdu_v1.yaml ... pdu_v12.yaml and
components/*.yaml); client-server-api "Size limits"; appendices.md
"Canonical JSON" with fragments v1-canonical-json.md / v6-canonical-json.md;
server-server-api.md "Checks performed on receipt of a PDU" (step 1: the event
must be valid for its room version's format, otherwise it is dropped).
"""

from __future__ import annotations

from collections.abc import Mapping

from pocketserver.core import identifiers
from pocketserver.core.crypto import compute_reference_hash, encode_canonical_json
from pocketserver.core.room_versions import EventIdFormat, RoomVersion, get_room_version

__all__ = [
    "MAX_DEPTH",
    "MAX_DEPTH_V6",
    "MAX_PDU_BYTES",
    "MAX_SAFE_INTEGER",
    "STRIPPED_STATE_TYPES",
    "EventFormatError",
    "auth_event_ids",
    "check_canonical_json",
    "compute_event_id",
    "compute_room_id_v12",
    "joined_user",
    "prev_event_ids",
    "validate_pdu",
]

MAX_PDU_BYTES = 65536
"""client-server-api "Size limits": the whole event in federation format, canonical JSON."""
MAX_KEY_BYTES = 255
"""client-server-api "Size limits": ``sender``, ``room_id``, ``state_key``, ``type``,
``event_id``."""
MAX_SAFE_INTEGER = 2**53 - 1
"""appendices.md "Canonical JSON": integers lie in ``[-(2**53)+1, (2**53)-1]``."""
MAX_DEPTH = 2**63 - 1
"""pdu_v1.yaml / pdu_v3.yaml / pdu_v4.yaml ``depth``: at most the int64 maximum."""
MAX_DEPTH_V6 = MAX_SAFE_INTEGER
"""components/depth_v6.yaml: v6+ limit ``depth`` to 2**53 - 1."""
MAX_PREV_EVENTS = 20
"""PDU schemas ``prev_events``: "Must contain less than or equal to 20 events"."""
MAX_AUTH_EVENTS = 10
"""PDU schemas ``auth_events``: "Must contain less than or equal to 10 events"."""

STRIPPED_STATE_TYPES = (
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
)
"""The state shown with an invite or a knock (client-server-api "Stripped state": the
spec's SHOULD list, as Synapse's default ``room_prejoin_state``)."""

_CREATE = "m.room.create"

# Room versions in which Synapse measured key lengths in code points, not bytes
# (Synapse ``event_auth.LENIENT_EVENT_BYTE_LIMITS_ROOM_VERSIONS``).
_LENIENT_BYTE_LIMIT_VERSIONS = frozenset(str(n) for n in range(1, 11))


class EventFormatError(ValueError):
    """A PDU does not match its room version's event format (drop it).

    Attributes:
        persist_as_rejected: True when Synapse would have accepted the event in
            the past and now stores it as *rejected* rather than dropping it
            (byte-length limits in v1-v10 on keys whose code-point length is
            within the limit; Synapse ``event_auth._check_size_limits``). Callers
            may follow Synapse here so that rooms with such events don't break.
    """

    def __init__(self, message: str, *, persist_as_rejected: bool = False) -> None:
        super().__init__(message)
        self.persist_as_rejected = persist_as_rejected


# --- event IDs -----------------------------------------------------------------------


def _urlsafe(b64: str) -> str:
    return b64.replace("+", "-").replace("/", "_")


def joined_user(pdu: Mapping[str, object]) -> str | None:
    """The user an ``m.room.member`` event with ``membership: join`` is about (its
    ``state_key``), or None for any other event (client-server API "m.room.member")."""
    content = pdu.get("content")
    user = pdu.get("state_key")
    if (
        pdu.get("type") != "m.room.member"
        or not isinstance(content, Mapping)
        or content.get("membership") != "join"
        or not isinstance(user, str)
    ):
        return None
    return user


def compute_event_id(pdu: Mapping[str, object], room_version: str) -> str:
    """Return the ID of an event.

    Spec: v1/v2: the ``event_id`` carried in the PDU (fragments/v1-event-ids.md);
    v3: ``$`` + unpadded standard base64 of the reference hash (rooms/v3.md
    "Event IDs"); v4+: the same in URL-safe base64 (fragments/v4-event-ids.md).

    Args:
        pdu: The event in its room version's PDU format.
        room_version: The room version.

    Returns:
        The event ID.

    Raises:
        EventFormatError: v1/v2 PDU without a string ``event_id``, or a PDU
            that cannot be encoded as canonical JSON.
        UnsupportedRoomVersion: Unknown room version.
    """
    fmt = get_room_version(room_version).event_id_format
    if fmt is EventIdFormat.V1:
        event_id = pdu.get("event_id")
        if not isinstance(event_id, str):
            raise EventFormatError("v1/v2 PDU has no string event_id")
        return event_id
    ref = _reference_hash(pdu, room_version)
    return "$" + (ref if fmt is EventIdFormat.V3 else _urlsafe(ref))


def _reference_hash(pdu: Mapping[str, object], room_version: str) -> str:
    try:
        return compute_reference_hash(pdu, room_version)
    except (TypeError, ValueError, RecursionError) as exc:
        raise EventFormatError(f"event is not canonical JSON: {exc}") from None


def compute_room_id_v12(create_pdu: Mapping[str, object]) -> str:
    """Return the room ID that a v12 ``m.room.create`` event defines.

    Spec: appendices.md "Room IDs" ("room IDs are simply the event ID of the
    ``m.room.create`` event using ``!`` as the sigil instead of ``$``") and
    rooms/v12.md auth rule 1.2 / 2: ``!`` + URL-safe unpadded base64 of the
    create event's reference hash (v4 event ID format, v11 redaction rules).

    Args:
        create_pdu: The ``m.room.create`` event (without ``room_id``).

    Returns:
        The room ID, e.g. ``"!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ"``.

    Raises:
        EventFormatError: The event is not an ``m.room.create`` event or
            cannot be encoded as canonical JSON.
    """
    if create_pdu.get("type") != _CREATE:
        raise EventFormatError("room IDs are computed from m.room.create events only")
    return "!" + compute_event_id(create_pdu, "12")[1:]


def _edge_ids(pdu: Mapping[str, object], key: str, version: RoomVersion) -> list[str]:
    edges = pdu.get(key)
    if not isinstance(edges, list):
        raise EventFormatError(f"{key} must be an array")
    ids: list[str] = []
    for edge in edges:
        if version.event_ids_in_pdu:
            # pdu_v1.yaml: each entry is [event_id, {"sha256": ...}].
            if not (isinstance(edge, list) and len(edge) == 2 and isinstance(edge[1], Mapping)):
                raise EventFormatError(f"{key} entries must be [event_id, hashes] pairs")
            edge = edge[0]
        if not identifiers.is_valid_event_id(edge, version.identifier):
            raise EventFormatError(f"{key} holds an invalid event ID {edge!r}")
        assert isinstance(edge, str)
        ids.append(edge)
    return ids


def prev_event_ids(pdu: Mapping[str, object], room_version: str) -> list[str]:
    """Return the IDs in ``prev_events`` whatever the room version's shape.

    Args:
        pdu: The event.
        room_version: Its room version (v1/v2: pairs; v3+: IDs).

    Returns:
        The event IDs, in order.

    Raises:
        EventFormatError: ``prev_events`` is missing or malformed.
        UnsupportedRoomVersion: Unknown room version.
    """
    return _edge_ids(pdu, "prev_events", get_room_version(room_version))


def auth_event_ids(pdu: Mapping[str, object], room_version: str) -> list[str]:
    """Return the IDs in ``auth_events`` whatever the room version's shape.

    Args:
        pdu: The event.
        room_version: Its room version (v1/v2: pairs; v3+: IDs).

    Returns:
        The event IDs, in order.

    Raises:
        EventFormatError: ``auth_events`` is missing or malformed.
        UnsupportedRoomVersion: Unknown room version.
    """
    return _edge_ids(pdu, "auth_events", get_room_version(room_version))


# --- validation ------------------------------------------------------------------------


def _check_strict_json(pdu: Mapping[str, object]) -> None:
    """v6+ (fragments/v6-canonical-json.md): no floats, integers within +-(2**53 - 1).

    Iterative, so deeply nested content cannot exhaust the stack.
    """
    stack: list[object] = [pdu]
    while stack:
        value = stack.pop()
        if isinstance(value, Mapping):
            if not all(isinstance(k, str) for k in value):
                raise EventFormatError("object keys must be strings")
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, float):
            raise EventFormatError("floats are not allowed in canonical JSON")
        elif (
            isinstance(value, int)
            and not isinstance(value, bool)
            and not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER
        ):
            raise EventFormatError(f"integer {value} is out of the canonical JSON range")


def check_canonical_json(pdu: Mapping[str, object], room_version: str) -> None:
    """The JSON-value part of :func:`validate_pdu` alone, for an event whose other fields
    are checked later or elsewhere: in room versions 6 and later (v6-canonical-json.md)
    no floats and integers within +-(2**53 - 1); nothing is checked before v6.

    Raises:
        EventFormatError: A value the room version's canonical JSON does not allow.
        UnsupportedRoomVersion: Unknown room version.
    """
    if get_room_version(room_version).strict_canonical_json:
        _check_strict_json(pdu)


def _check_types(pdu: Mapping[str, object], version: RoomVersion) -> None:
    """Required fields and their types (components/pdu_base.yaml and pdu_v*.yaml)."""
    for key, kind, name in (
        ("sender", str, "a string"),
        ("type", str, "a string"),
        ("content", Mapping, "an object"),
        ("hashes", Mapping, "an object"),
        ("signatures", Mapping, "an object"),
    ):
        if not isinstance(pdu.get(key), kind):
            raise EventFormatError(f"{key} must be {name}")
    for key in ("origin_server_ts", "depth"):
        value = pdu.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise EventFormatError(f"{key} must be an integer")
    hashes = pdu["hashes"]
    assert isinstance(hashes, Mapping)
    if not isinstance(hashes.get("sha256"), str):
        raise EventFormatError("hashes.sha256 must be a string")  # event_hash.yaml
    signatures = pdu["signatures"]
    assert isinstance(signatures, Mapping)
    for sigs in signatures.values():
        if not isinstance(sigs, Mapping) or not all(isinstance(s, str) for s in sigs.values()):
            raise EventFormatError("signatures must map server names to {key ID: string}")
    if "state_key" in pdu and not isinstance(pdu["state_key"], str):
        raise EventFormatError("state_key must be a string")
    if "unsigned" in pdu and not isinstance(pdu["unsigned"], Mapping):
        raise EventFormatError("unsigned must be an object")
    # pdu_v1/v3/v4/v6.yaml define a top-level string ``redacts``; v11+ moved it to content.
    if not version.redacts_in_content and "redacts" in pdu and not isinstance(pdu["redacts"], str):
        raise EventFormatError("redacts must be a string")
    if version.event_ids_in_pdu and not isinstance(pdu.get("event_id"), str):
        raise EventFormatError("event_id must be a string in room versions 1 and 2")


def _check_key_sizes(pdu: Mapping[str, object], version: RoomVersion) -> None:
    """client-server-api "Size limits": these keys are at most 255 *bytes*.

    Synapse measured code points before v11 and now stores v1-v10 events that
    only break the byte limit as rejected rather than dropping them; the
    error carries ``persist_as_rejected`` for that case.
    """
    for key in ("sender", "room_id", "state_key", "type", "event_id"):
        value = pdu.get(key)
        if not isinstance(value, str):
            continue
        if len(value) > MAX_KEY_BYTES:
            raise EventFormatError(f"{key} is longer than {MAX_KEY_BYTES} bytes")
        if len(value.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
            raise EventFormatError(
                f"{key} is longer than {MAX_KEY_BYTES} bytes",
                persist_as_rejected=version.identifier in _LENIENT_BYTE_LIMIT_VERSIONS,
            )


def _check_ids(pdu: Mapping[str, object], version: RoomVersion) -> None:
    """Identifier grammar of ``sender``, ``room_id`` and (v1/v2) ``event_id``."""
    sender = pdu["sender"]
    assert isinstance(sender, str)
    if not identifiers.is_valid_user_id(sender, historical=True):
        raise EventFormatError(f"sender {sender!r} is not a valid user ID")
    # The create event is the state event (m.room.create, ""); like Synapse, an
    # m.room.create *without* that state key is an ordinary event and needs a room_id.
    is_v12_create = version.hydra and pdu["type"] == _CREATE and pdu.get("state_key") == ""
    if is_v12_create:
        # rooms/v12.md rule 1.2 and components/room_id_v12.yaml: "Omitted from
        # m.room.create events".
        if "room_id" in pdu:
            raise EventFormatError("v12 m.room.create events must not have a room_id")
    else:
        room_id = pdu.get("room_id")
        if not isinstance(room_id, str):
            raise EventFormatError("room_id must be a string")
        if not identifiers.is_valid_room_id(room_id, version.identifier):
            raise EventFormatError(f"room_id {room_id!r} is not valid in this room version")
    event_id = pdu.get("event_id")
    if version.event_ids_in_pdu and not (
        isinstance(event_id, str) and identifiers.is_valid_event_id(event_id, version.identifier)
    ):
        raise EventFormatError(f"event_id {event_id!r} is not a valid v1/v2 event ID")


def _check_edges(pdu: Mapping[str, object], version: RoomVersion, enforce_limits: bool) -> None:
    """``prev_events``/``auth_events`` shape (pdu_v1.yaml pairs, v3+ ID lists) and counts."""
    prev = _edge_ids(pdu, "prev_events", version)
    auth = _edge_ids(pdu, "auth_events", version)
    if enforce_limits and len(prev) > MAX_PREV_EVENTS:
        raise EventFormatError(f"more than {MAX_PREV_EVENTS} prev_events")
    if enforce_limits and len(auth) > MAX_AUTH_EVENTS:
        raise EventFormatError(f"more than {MAX_AUTH_EVENTS} auth_events")
    if version.hydra and pdu["type"] != _CREATE:
        # rooms/v12.md: "The m.room.create event MUST NOT be selected for
        # auth_events"; its event ID is the room ID with sigil '$'.
        room_id = pdu.get("room_id")
        if isinstance(room_id, str) and "$" + room_id[1:] in auth:
            raise EventFormatError("v12 events must not list m.room.create in auth_events")


def validate_pdu(
    pdu: Mapping[str, object], room_version: str, *, enforce_edge_limits: bool = True
) -> None:
    """Check that a PDU matches its room version's event format.

    Spec: server-server-api.md "Checks performed on receipt of a PDU" step 1
    ("Is a valid event, otherwise it is dropped"); the version's "Event format"
    (pdu_v1/v3/v4/v6/v11/v12.yaml); client-server-api "Size limits";
    v6-canonical-json.md (v6+ enforce canonical JSON: no floats, integers in
    range; v1-v5 do not, per v1-canonical-json.md).

    Checks: it is an object of at most 65536 bytes of canonical JSON; required
    fields ``sender``, ``origin_server_ts``, ``type``, ``content``, ``depth``,
    ``hashes`` (with ``sha256``), ``signatures``, ``prev_events``,
    ``auth_events``, ``room_id`` (not on v12 create events, which must not
    have one) and, in v1/v2, ``event_id``, each of its schema type; the
    255-byte limits; identifier grammar of ``sender``, ``room_id`` and edges;
    edge shape per version and counts (<= 20 prev, <= 10 auth); ``depth`` in
    ``[0, 2**63 - 1]`` (v6+: ``2**53 - 1``); v12 events other than the create
    event must not list the create event (``$`` + room ID) in ``auth_events``.

    It does not check signatures, hashes or auth rules.

    Args:
        pdu: The event as received.
        room_version: Its room version.
        enforce_edge_limits: Apply the 20/10 edge count limits. Synapse skips
            them for backfilled events (matrix-org/synapse#3118) because
            historic rooms hold such events; pass False there.

    Raises:
        EventFormatError: The PDU is not valid for the room version.
        UnsupportedRoomVersion: Unknown room version.
    """
    version = get_room_version(room_version)
    if not isinstance(pdu, Mapping):
        raise EventFormatError("a PDU must be a JSON object")
    try:
        size = len(encode_canonical_json(pdu))
    except (TypeError, ValueError, RecursionError) as exc:
        raise EventFormatError(f"event is not JSON: {exc}") from None
    if size > MAX_PDU_BYTES:
        raise EventFormatError(f"event is {size} bytes of canonical JSON (> {MAX_PDU_BYTES})")
    if version.strict_canonical_json:
        _check_strict_json(pdu)
    _check_types(pdu, version)
    _check_key_sizes(pdu, version)
    _check_ids(pdu, version)
    depth = pdu["depth"]
    assert isinstance(depth, int)
    max_depth = MAX_DEPTH_V6 if version.strict_canonical_json else MAX_DEPTH
    if not 0 <= depth <= max_depth:
        raise EventFormatError(f"depth {depth} is outside [0, {max_depth}]")
    _check_edges(pdu, version, enforce_edge_limits)
