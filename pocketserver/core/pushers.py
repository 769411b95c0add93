"""Pushers: the ``POST /pushers/set`` body and the push gateway's ``/notify`` payload.

Spec: client-server API ``data/api/client-server/pusher.yaml`` (the body and its
limits), ``modules/push.md`` "Pushers"; push gateway API ``push_notifier.yaml``
(the notification, ``event_id_only`` format: only ``event_id``, ``room_id``,
``counts`` and ``devices`` are needed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

NOTIFY_PATH = "/_matrix/push/v1/notify"
MAX_PUSHKEY_BYTES = 512
MAX_APP_ID_CHARS = 64
MAX_TEXT_CHARS = 1024
"""Display names, profile tag, language: not limited by the spec, bounded here."""
EVENT_ID_ONLY = "event_id_only"
KIND_HTTP = "http"


@dataclass(frozen=True, slots=True)
class PusherKey:
    user_id: str
    app_id: str
    pushkey: str


@dataclass(frozen=True, slots=True)
class PusherSettings:
    """A valid ``pushers/set`` body with a non-null ``kind``."""

    app_id: str
    pushkey: str
    kind: str
    app_display_name: str
    device_display_name: str
    profile_tag: str | None
    lang: str
    data: dict[str, object]
    append: bool


@dataclass(frozen=True, slots=True)
class PusherRemoval:
    """A ``pushers/set`` body with ``kind: null``: delete the pusher."""

    app_id: str
    pushkey: str


class PusherError(ValueError):
    """A bad ``pushers/set`` body; ``errcode`` is what to answer (always with 400)."""

    def __init__(self, errcode: str, message: str) -> None:
        super().__init__(message)
        self.errcode = errcode


def _bad_json(message: str) -> PusherError:
    return PusherError("M_BAD_JSON", message)


def _invalid(message: str) -> PusherError:
    return PusherError("M_INVALID_PARAM", message)


def _string(body: Mapping[str, object], key: str, max_chars: int = MAX_TEXT_CHARS) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad_json(f"{key} must be a string")
    if len(value) > max_chars:
        raise _invalid(f"{key} is longer than {max_chars} characters")
    return value


def _required(body: Mapping[str, object], key: str, max_chars: int = MAX_TEXT_CHARS) -> str:
    value = _string(body, key, max_chars)
    if value is None:
        raise PusherError("M_MISSING_PARAM", f"Missing parameters: {key}")
    return value


def check_notify_url(url: object) -> str:
    """The ``data.url`` of an http pusher: an http(s) URL ending in the notify path.

    The spec says HTTPS; plain http is accepted for gateways on a local network
    (UnifiedPush distributors, test gateways).

    Raises:
        PusherError: ``M_MISSING_PARAM`` if absent, ``M_BAD_JSON`` if not a
            string, ``M_INVALID_PARAM`` if not such a URL.
    """
    if url is None:
        raise PusherError("M_MISSING_PARAM", "data.url is required for http pushers")
    if not isinstance(url, str):
        raise _bad_json("data.url must be a string")
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        raise _invalid("data.url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise _invalid("data.url must be an http(s) URL")
    if not parts.path.endswith(NOTIFY_PATH):
        raise _invalid(f"data.url must have the path {NOTIFY_PATH}")
    return url


def parse_set_body(body: Mapping[str, object]) -> PusherSettings | PusherRemoval:
    """Validate a ``POST /pushers/set`` body (pusher.yaml).

    Raises:
        PusherError: ``M_MISSING_PARAM`` for missing required fields (all named),
            ``M_BAD_JSON`` for wrong types, ``M_INVALID_PARAM`` for values out of
            their limits, an unsupported ``kind`` or a bad ``data.url``.
    """
    required = ["kind", "app_id", "pushkey"]
    missing = [k for k in required if k not in body or (k != "kind" and body[k] is None)]
    if "kind" in body and body["kind"] is not None:
        missing += [
            k
            for k in ("app_display_name", "device_display_name", "lang", "data")
            if body.get(k) is None
        ]
    if missing:
        raise PusherError("M_MISSING_PARAM", f"Missing parameters: {', '.join(missing)}")
    app_id = _required(body, "app_id", MAX_APP_ID_CHARS)
    pushkey = _required(body, "pushkey", MAX_PUSHKEY_BYTES)
    if len(pushkey.encode("utf-8")) > MAX_PUSHKEY_BYTES:
        raise _invalid(f"pushkey is longer than {MAX_PUSHKEY_BYTES} bytes")
    kind = body["kind"]
    if kind is None:
        return PusherRemoval(app_id, pushkey)
    if not isinstance(kind, str):
        raise _bad_json("kind must be a string or null")
    if kind != KIND_HTTP:
        raise _invalid(f"unsupported pusher kind {kind!r}: this server has only 'http' pushers")
    data = body["data"]
    if not isinstance(data, dict):
        raise _bad_json("data must be an object")
    check_notify_url(data.get("url"))
    fmt = data.get("format")
    if fmt is not None and not isinstance(fmt, str):
        raise _bad_json("data.format must be a string")
    append = body.get("append", False)
    if append is None:
        append = False
    if not isinstance(append, bool):
        raise _bad_json("append must be true or false")
    return PusherSettings(
        app_id=app_id,
        pushkey=pushkey,
        kind=kind,
        app_display_name=_required(body, "app_display_name"),
        device_display_name=_required(body, "device_display_name"),
        profile_tag=_string(body, "profile_tag"),
        lang=_required(body, "lang"),
        data=dict(data),
        append=append,
    )


# --- the push gateway's /notify body -------------------------------------------------------


def tweaks_of(actions: Sequence[object]) -> dict[str, object]:
    """The ``set_tweak`` actions as a dict (``highlight`` without a value is true)."""
    tweaks: dict[str, object] = {}
    for action in actions:
        if isinstance(action, Mapping) and isinstance(action.get("set_tweak"), str):
            name = str(action["set_tweak"])
            tweaks[name] = action.get("value", True) if name == "highlight" else action.get("value")
    return tweaks


def priority(event_type: str, tweaks: Mapping[str, object]) -> str:
    """``high`` for what should wake a phone now (a highlight, a sound, an encrypted
    event the server cannot judge); ``low`` for the rest (push_notifier.yaml ``prio``)."""
    if event_type == "m.room.encrypted" or tweaks.get("highlight") is True or "sound" in tweaks:
        return "high"
    return "low"


@dataclass(frozen=True, slots=True)
class RoomFacts:
    """What the full format tells about the room and the sender."""

    room_name: str | None = None
    room_alias: str | None = None
    sender_display_name: str | None = None


def _content_str(entry: Mapping[str, object] | None, key: str) -> str | None:
    content = entry.get("content") if entry is not None else None
    value = content.get(key) if isinstance(content, Mapping) else None
    return value if isinstance(value, str) and value else None


def stripped_room_facts(
    pdu: Mapping[str, object], stripped_state: Sequence[Mapping[str, object]]
) -> RoomFacts:
    """The room facts of an out-of-band membership (an invite or knock in a room this
    server does not hold): from the room's stripped state that came with it.

    The room's name is its ``m.room.name``, else its canonical alias (as for rooms we
    hold; Synapse's ``get_context_for_event`` reads the same stripped state but only
    the name); the sender's display name is their member event's in that state, else
    the membership event's own when they sent it about themselves (a knock), as
    Synapse.
    """
    sender = pdu.get("sender")
    found: dict[tuple[object, object], Mapping[str, object]] = {}
    for entry in stripped_state:
        found.setdefault((entry.get("type"), entry.get("state_key")), entry)
    alias = _content_str(found.get(("m.room.canonical_alias", "")), "alias")
    own = _content_str(pdu, "displayname") if pdu.get("state_key") == sender else None
    return RoomFacts(
        room_name=_content_str(found.get(("m.room.name", "")), "name") or alias,
        room_alias=alias,
        sender_display_name=_content_str(found.get(("m.room.member", sender)), "displayname")
        or own,
    )


def device_entry(
    app_id: str,
    pushkey: str,
    pushkey_ts_ms: int,
    data: Mapping[str, object],
    tweaks: Mapping[str, object],
) -> dict[str, object]:
    """One ``devices`` entry: the pusher's data without ``url``; ``pushkey_ts`` in seconds."""
    return {
        "app_id": app_id,
        "pushkey": pushkey,
        "pushkey_ts": pushkey_ts_ms // 1000,
        "data": {k: v for k, v in data.items() if k != "url"},
        "tweaks": dict(tweaks),
    }


def notification(
    *,
    user_id: str,
    pdu: Mapping[str, object],
    event_id: str,
    room_id: str,
    unread: int,
    device: dict[str, object],
    event_id_only: bool,
    room: RoomFacts,
) -> dict[str, object]:
    """The ``/notify`` request body for one event and one device.

    Counts of zero are omitted (push_notifier.yaml ``counts``); missed calls are not
    counted by this server.
    """
    tweaks = device.get("tweaks")
    event_type = pdu.get("type")
    event_type = event_type if isinstance(event_type, str) else ""
    note: dict[str, object] = {"event_id": event_id, "room_id": room_id}
    if not event_id_only:
        # ``id``: the event ID again under its pre-r0 name, which Synapse still sends
        # (marked "deprecated") and SyTest 61push expects; gateways ignore it.
        note["id"] = event_id
        note["type"] = event_type
        sender = pdu.get("sender")
        if isinstance(sender, str):
            note["sender"] = sender
        if room.sender_display_name is not None:
            note["sender_display_name"] = room.sender_display_name
        if room.room_name is not None:
            note["room_name"] = room.room_name
        if room.room_alias is not None:
            note["room_alias"] = room.room_alias
        if event_type == "m.room.member":
            note["user_is_target"] = pdu.get("state_key") == user_id
            content = pdu.get("content")
            membership = content.get("membership") if isinstance(content, Mapping) else None
            if isinstance(membership, str):
                note["membership"] = membership  # as Synapse (not in push_notifier.yaml)
        content = pdu.get("content")
        if isinstance(content, Mapping) and content:
            note["content"] = dict(content)
    note["prio"] = priority(event_type, tweaks if isinstance(tweaks, Mapping) else {})
    note["counts"] = {"unread": unread} if unread > 0 else {}
    note["devices"] = [device]
    return {"notification": note}


def badge_notification(unread: int, device: dict[str, object]) -> dict[str, object]:
    """The ``/notify`` body of a badge-only update (no event: push_notifier.yaml allows
    leaving out ``event_id`` "for notifications that only contain updated badge
    counts"), sent when the user's unread count drops.

    ``counts.unread`` is sent even when 0, against the spec's "counts whose value is
    zero should be omitted": a badge update is only useful with it (Sygnal sets the
    iOS badge from it and leaves it alone without it), and Synapse sends it so.
    """
    return {
        "notification": {
            "prio": "low",
            "counts": {"unread": unread},
            "devices": [{**device, "tweaks": {}}],
        }
    }
