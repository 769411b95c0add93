"""Room versions 1-12 and the rule variants each one selects.

Spec: "Room Versions" (content/rooms/_index.md) and each version's page
(content/rooms/v1.md ... v12.md). Every flag below names the version that
introduced the behaviour, so a rule can ask ``version.knocking`` instead of
comparing version strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class EventIdFormat(Enum):
    """How an event's ID is formed (spec: "Event IDs" in each room version)."""

    V1 = 1
    """v1, v2: ``$opaque:server`` chosen by the origin and carried in the PDU."""
    V3 = 3
    """v3: ``$`` + unpadded standard base64 of the reference hash."""
    V4 = 4
    """v4+: ``$`` + unpadded URL-safe base64 of the reference hash."""


class StateResAlgorithm(Enum):
    V1 = 1
    """State resolution v1 (room v1)."""
    V2 = 2
    """State resolution v2 (rooms v2-v11)."""
    V2_1 = 21
    """State resolution v2.1 (room v12): conflicted subgraph, empty start state."""


class RedactionRules(Enum):
    V1 = 1
    """v1-v5: the original keep-list."""
    V6 = 6
    """v6, v7: ``m.room.aliases`` no longer keeps ``aliases``."""
    V8 = 8
    """v8: join rules keep ``allow``."""
    V9 = 9
    """v9, v10: member events keep ``join_authorised_via_users_server``."""
    V11 = 11
    """v11, v12: MSC2176/MSC3821/MSC3989 rules (``redacts`` in content, etc.)."""


@dataclass(frozen=True, slots=True)
class RoomVersion:
    """The behaviour one room version selects.

    Attributes:
        identifier: The version string, e.g. ``"10"``.
        event_id_format: How event IDs are formed and whether the PDU carries one.
        state_res: The state resolution algorithm.
        redaction: The redaction algorithm variant.
        enforce_key_validity: v5+: signing keys must be valid at the event's
            ``origin_server_ts``.
        special_case_aliases_auth: v1-v5: ``m.room.aliases`` has its own auth rule
            and is checked against the sender's domain.
        strict_canonical_json: v6+: integers outside [-(2**53)+1, (2**53)-1] and
            floats are rejected.
        limit_notifications_power_levels: v6+: ``notifications`` in power levels
            is subject to the power-level change rules.
        knocking: v7+: ``knock`` membership and join rule.
        restricted_join_rule: v8+: ``restricted`` join rule with
            ``join_authorised_via_users_server``.
        knock_restricted_join_rule: v10+: ``knock_restricted`` join rule.
        integer_only_power_levels: v10+: power level values must be integers
            (not strings).
        implicit_room_creator: v11+: the creator is the create event's sender,
            ``content.creator`` is no longer required or used.
        redacts_in_content: v11+: ``redacts`` lives in the content of
            ``m.room.redaction`` events.
        hydra: v12 (MSC4289/MSC4291/MSC4297): room ID is the hash of the create
            event, the create event is not listed in ``auth_events``, creators
            (sender + ``additional_creators``) have infinite power.
    """

    identifier: str
    event_id_format: EventIdFormat
    state_res: StateResAlgorithm
    redaction: RedactionRules
    enforce_key_validity: bool
    special_case_aliases_auth: bool
    strict_canonical_json: bool
    limit_notifications_power_levels: bool
    knocking: bool
    restricted_join_rule: bool
    knock_restricted_join_rule: bool
    integer_only_power_levels: bool
    implicit_room_creator: bool
    redacts_in_content: bool
    hydra: bool

    @property
    def event_ids_in_pdu(self) -> bool:
        """True for v1/v2, where the PDU carries ``event_id`` and edges are pairs."""
        return self.event_id_format is EventIdFormat.V1


def _v(
    ident: str,
    *,
    fmt: EventIdFormat,
    state_res: StateResAlgorithm,
    redaction: RedactionRules,
    n: int,
) -> RoomVersion:
    return RoomVersion(
        identifier=ident,
        event_id_format=fmt,
        state_res=state_res,
        redaction=redaction,
        enforce_key_validity=n >= 5,
        special_case_aliases_auth=n <= 5,
        strict_canonical_json=n >= 6,
        limit_notifications_power_levels=n >= 6,
        knocking=n >= 7,
        restricted_join_rule=n >= 8,
        knock_restricted_join_rule=n >= 10,
        integer_only_power_levels=n >= 10,
        implicit_room_creator=n >= 11,
        redacts_in_content=n >= 11,
        hydra=n >= 12,
    )


_E, _S, _R = EventIdFormat, StateResAlgorithm, RedactionRules

KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {
    v.identifier: v
    for v in (
        _v("1", fmt=_E.V1, state_res=_S.V1, redaction=_R.V1, n=1),
        _v("2", fmt=_E.V1, state_res=_S.V2, redaction=_R.V1, n=2),
        _v("3", fmt=_E.V3, state_res=_S.V2, redaction=_R.V1, n=3),
        _v("4", fmt=_E.V4, state_res=_S.V2, redaction=_R.V1, n=4),
        _v("5", fmt=_E.V4, state_res=_S.V2, redaction=_R.V1, n=5),
        _v("6", fmt=_E.V4, state_res=_S.V2, redaction=_R.V6, n=6),
        _v("7", fmt=_E.V4, state_res=_S.V2, redaction=_R.V6, n=7),
        _v("8", fmt=_E.V4, state_res=_S.V2, redaction=_R.V8, n=8),
        _v("9", fmt=_E.V4, state_res=_S.V2, redaction=_R.V9, n=9),
        _v("10", fmt=_E.V4, state_res=_S.V2, redaction=_R.V9, n=10),
        _v("11", fmt=_E.V4, state_res=_S.V2, redaction=_R.V11, n=11),
        _v("12", fmt=_E.V4, state_res=_S.V2_1, redaction=_R.V11, n=12),
    )
}

DEFAULT_ROOM_VERSION = "12"
"""The version new rooms get unless the config's ``default_room_version`` says otherwise."""


class UnsupportedRoomVersion(ValueError):
    """The room version is not one this server knows (``M_UNSUPPORTED_ROOM_VERSION``)."""


def get_room_version(identifier: str) -> RoomVersion:
    """Return the known room version ``identifier``.

    Raises:
        UnsupportedRoomVersion: the version is unknown.
    """
    try:
        return KNOWN_ROOM_VERSIONS[identifier]
    except (KeyError, TypeError):
        raise UnsupportedRoomVersion(f"unknown room version {identifier!r}") from None
