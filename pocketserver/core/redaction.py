"""The redaction algorithm of each room version (federation form).

Spec: the "Redactions" section of each room version page, built from
``content/rooms/fragments/v1-redactions.md`` (v1-v5), ``v6-redactions.md``
(v6, v7), the inline "Redactions" section of ``content/rooms/v8.md`` (v8),
``v9-redactions.md`` (v9, v10) and ``v11-redactions.md`` (v11, v12).

:func:`redact` returns the *federation* form used for hashing and signing
(server-server-api.md "Signing Events"): every top-level key not on the
version's keep-list is dropped, **including** ``unsigned``. Servers that show a
redacted event to clients add their own ``unsigned`` (e.g.
``redacted_because``) on top of this; that is not the job of this module.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from pocketserver.core.power_levels import (
    InvalidPowerLevel,
    get_named_level,
    get_user_power_level,
)
from pocketserver.core.room_versions import RedactionRules, get_room_version

__all__ = ["redact", "redact_content", "redaction_applies"]

# Top-level keys kept by v1-v10 (v1-redactions.md, v6-redactions.md, v8.md,
# v9-redactions.md all share this list).
_TOP_LEVEL_V1: frozenset[str] = frozenset(
    {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "prev_state",
        "auth_events",
        "origin",
        "origin_server_ts",
        "membership",
    }
)

# v11-redactions.md: ``prev_state``, ``origin`` and ``membership`` are no longer kept.
_TOP_LEVEL_V11: frozenset[str] = _TOP_LEVEL_V1 - {"prev_state", "origin", "membership"}

_PL_KEYS_V1 = (
    "ban",
    "events",
    "events_default",
    "kick",
    "redact",
    "state_default",
    "users",
    "users_default",
)

# Content keys kept per event type, per redaction rule set. ``None`` means
# "all keys" (v11 ``m.room.create``). ``m.room.member``'s
# ``third_party_invite.signed`` (v11) is handled separately.
_ContentRules = Mapping[str, tuple[str, ...] | None]

_CONTENT_V1: _ContentRules = {
    "m.room.member": ("membership",),
    "m.room.create": ("creator",),
    "m.room.join_rules": ("join_rule",),
    "m.room.power_levels": _PL_KEYS_V1,
    "m.room.aliases": ("aliases",),
    "m.room.history_visibility": ("history_visibility",),
}

# v6-redactions.md: ``m.room.aliases`` no longer keeps ``aliases``.
_CONTENT_V6: _ContentRules = {k: v for k, v in _CONTENT_V1.items() if k != "m.room.aliases"}

# rooms/v8.md "Redactions": ``m.room.join_rules`` also keeps ``allow``.
_CONTENT_V8: _ContentRules = {**_CONTENT_V6, "m.room.join_rules": ("join_rule", "allow")}

# v9-redactions.md: ``m.room.member`` also keeps ``join_authorised_via_users_server``.
_CONTENT_V9: _ContentRules = {
    **_CONTENT_V8,
    "m.room.member": ("membership", "join_authorised_via_users_server"),
}

# v11-redactions.md: create keeps everything, power levels keep ``invite``,
# redaction events keep ``redacts``.
_CONTENT_V11: _ContentRules = {
    **_CONTENT_V9,
    "m.room.create": None,
    "m.room.power_levels": (*_PL_KEYS_V1, "invite"),
    "m.room.redaction": ("redacts",),
}

_CONTENT_RULES: Mapping[RedactionRules, _ContentRules] = {
    RedactionRules.V1: _CONTENT_V1,
    RedactionRules.V6: _CONTENT_V6,
    RedactionRules.V8: _CONTENT_V8,
    RedactionRules.V9: _CONTENT_V9,
    RedactionRules.V11: _CONTENT_V11,
}


def redact_content(event_type: object, content: object, rules: RedactionRules) -> dict[str, object]:
    """Return the content an event keeps after redaction.

    Spec: the content part of each version's "Redactions" section (see module
    docstring for the fragment of each rule set).

    Args:
        event_type: The event's ``type`` (anything that is not a known type
            keeps no content).
        content: The event's ``content``; a non-object keeps nothing.
        rules: The version's redaction rule set.

    Returns:
        A new dict (deep-copied values) holding only the protected keys.
    """
    if not isinstance(content, Mapping):
        return {}
    keep = _CONTENT_RULES[rules].get(event_type, ()) if isinstance(event_type, str) else ()
    if keep is None:
        return {k: copy.deepcopy(v) for k, v in content.items()}
    out: dict[str, object] = {k: copy.deepcopy(content[k]) for k in keep if k in content}
    if rules is RedactionRules.V11 and event_type == "m.room.member":
        # v11-redactions.md: "it allows the `signed` key of the
        # `third_party_invite` key": an object ``third_party_invite`` is kept
        # with ``signed`` as its only key (so ``{}`` if it had none), the way
        # ``content`` itself is kept. This matches Synapse's redaction, which
        # matters because the reference hash (event ID) depends on it.
        tpi = content.get("third_party_invite")
        if isinstance(tpi, Mapping):
            out["third_party_invite"] = (
                {"signed": copy.deepcopy(tpi["signed"])} if "signed" in tpi else {}
            )
    return out


def redact(pdu: Mapping[str, object], room_version: str) -> dict[str, object]:
    """Redact a PDU following its room version's redaction algorithm.

    Spec: the "Redactions" section of ``content/rooms/v<N>.md`` (fragments
    listed in the module docstring).

    This is the federation form: ``unsigned`` is not on any keep-list, so it is
    dropped. The input is never mutated.

    Args:
        pdu: The event, in the PDU format of its room version.
        room_version: The room version identifier.

    Returns:
        A new dict holding only the keys the version protects.

    Raises:
        UnsupportedRoomVersion: ``room_version`` is unknown.
    """
    version = get_room_version(room_version)
    rules = version.redaction
    top = _TOP_LEVEL_V11 if rules is RedactionRules.V11 else _TOP_LEVEL_V1
    if version.hydra and pdu.get("type") == "m.room.create":
        # Deviation, following Synapse for interop: v12 uses v11-redactions.md,
        # which keeps ``room_id``, but Synapse (1.163 ``redact_event_dict``,
        # MSC4291 rooms) drops ``room_id`` from any m.room.create event. Valid v12
        # create events have no room_id, so only malformed (rejected) events are
        # affected -- and their event IDs then agree with Synapse's.
        top = top - {"room_id"}
    out: dict[str, object] = {
        k: copy.deepcopy(v) for k, v in pdu.items() if k in top and k != "content"
    }
    out["content"] = redact_content(pdu.get("type"), pdu.get("content"), rules)
    return out


def redaction_applies(
    redaction: Mapping[str, object],
    target: Mapping[str, object],
    room_version: str,
    power_levels_content: Mapping[str, object] | None,
    create_event: Mapping[str, object],
) -> bool:
    """Whether an accepted redaction event should be applied to ``target`` when read.

    Spec: rooms/fragments/v3-handling-redactions.md (room v3+): applied if the
    redaction's sender has at least the *redact level* (in the power levels at the
    redaction), or its sender's domain is that of the target's sender. In v1/v2 the
    auth rules already required this of every accepted redaction (rule 11). A
    redaction never applies across rooms, and ``m.room.create`` is never redacted
    in a way that matters here (its content is kept whole by every algorithm).

    Args:
        redaction: The ``m.room.redaction`` PDU (accepted by the auth rules).
        target: The PDU it names.
        room_version: The room's version.
        power_levels_content: ``content`` of the power levels in force at the
            redaction (None if the room has none).
        create_event: The room's create PDU.

    Returns:
        True if the redaction should be applied.
    """
    version = get_room_version(room_version)
    if redaction.get("room_id") != target.get("room_id"):
        return False
    sender, target_sender = redaction.get("sender"), target.get("sender")
    if not isinstance(sender, str) or not isinstance(target_sender, str):
        return False
    if version.event_ids_in_pdu:
        return True
    if sender.partition(":")[2] == target_sender.partition(":")[2]:
        return True
    try:
        level = get_user_power_level(
            sender, power_levels_content, create_event, room_version=room_version
        )
        redact_level = get_named_level(
            power_levels_content, "redact", 50, integer_only=version.integer_only_power_levels
        )
    except (InvalidPowerLevel, ValueError):
        return False
    return level >= redact_level


def redaction_target(pdu: Mapping[str, object]) -> str | None:
    """The event a redaction names, or None for other events: ``content.redacts``
    since room v11, top-level ``redacts`` before (either is read, as clients and
    Synapse read both)."""
    if pdu.get("type") != "m.room.redaction":
        return None
    top = pdu.get("redacts")
    if isinstance(top, str):
        return top
    content = pdu.get("content")
    inner = content.get("redacts") if isinstance(content, Mapping) else None
    return inner if isinstance(inner, str) else None
