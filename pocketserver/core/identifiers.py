"""Identifier grammar: server names, user IDs, room IDs, event IDs, room aliases.

Spec: appendices.md "Identifier Grammar" and its subsections "Server Name",
"Common Identifier Format", "User Identifiers" (with "Historical User IDs"),
"Room IDs", "Room Aliases", "Event IDs"; room-version specific ID formats in
content/rooms/fragments/v1-event-ids.md, rooms/v3.md "Event IDs",
fragments/v4-event-ids.md and fragments/v12-event-format.md.

All predicates return ``False`` (never raise) for any input that is not a
valid identifier, including non-``str`` values.
"""

from __future__ import annotations

import ipaddress
import re

from pocketserver.core.room_versions import EventIdFormat, get_room_version

__all__ = [
    "MAX_ID_BYTES",
    "get_domain",
    "is_valid_event_id",
    "is_valid_localpart",
    "is_valid_room_alias",
    "is_valid_room_id",
    "is_valid_server_name",
    "is_valid_user_id",
    "parse_server_name",
]

MAX_ID_BYTES = 255
"""Byte limit of user IDs, room IDs, room aliases and event IDs, sigil and domain
included (appendices.md "User Identifiers", "Room IDs", "Room Aliases", "Event IDs")."""

# appendices.md "Server Name": dns-name = 1*255dns-char, dns-char = DIGIT / ALPHA / "-" / ".";
# the prose asks for "a series of labels separated by `.`", so labels are non-empty
# (Synapse's VALID_HOST_REGEX agrees).
_DNS_NAME_RE = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*", re.ASCII)
_MAX_DNS_NAME = 255
# IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT
_IPV4_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}", re.ASCII)
# IPv6address = 2*45IPv6char, IPv6char = DIGIT / A-F / a-f / ":" / "."
_IPV6_CHARS_RE = re.compile(r"[0-9A-Fa-f:.]{2,45}", re.ASCII)
# port = 1*5DIGIT
_PORT_RE = re.compile(r"[0-9]{1,5}", re.ASCII)

# appendices.md "User Identifiers": user_id_char = DIGIT / a-z / "-" / "." / "=" / "_" / "/" / "+"
_STRICT_LOCALPART_RE = re.compile(r"[a-z0-9._=/+-]+", re.ASCII)

# Unpadded base64 of a SHA-256 digest (32 bytes -> 43 characters).
_HASH_STD_RE = re.compile(r"[A-Za-z0-9+/]{43}", re.ASCII)
_HASH_URLSAFE_RE = re.compile(r"[A-Za-z0-9_-]{43}", re.ASCII)


def _host_is_valid(host: str) -> bool:
    if host.startswith("["):
        inner = host[1:-1] if host.endswith("]") else ""
        if not _IPV6_CHARS_RE.fullmatch(inner):
            return False
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            return False
        return True
    if len(host) > _MAX_DNS_NAME or not _DNS_NAME_RE.fullmatch(host):
        return False
    if _IPV4_RE.fullmatch(host):
        # "IPv4 literals must be a sequence of four decimal numbers in the range 0 to 255".
        return all(int(part) <= 255 for part in host.split("."))
    return True


def parse_server_name(s: str) -> tuple[str, int | None]:
    """Split a server name into host and optional port, validating it.

    Spec: appendices.md "Server Name" (``server_name = hostname [ ":" port ]``).

    Args:
        s: The server name, e.g. ``"matrix.org:8448"`` or ``"[::1]"``.

    Returns:
        ``(host, port)``; IPv6 hosts keep their brackets (as Synapse's
        ``parse_server_name`` does); ``port`` is ``None`` when absent.

    Raises:
        ValueError: ``s`` is not a valid server name (including a port above 65535).
    """
    if not isinstance(s, str) or not s:
        raise ValueError("server name must be a non-empty string")
    if s.startswith("["):
        end = s.find("]")
        host, rest = (s[: end + 1], s[end + 1 :]) if end != -1 else (s, "")
        if rest and not rest.startswith(":"):
            raise ValueError(f"invalid server name {s!r}")
        port_str: str | None = rest[1:] if rest else None
    else:
        host, sep, port_part = s.partition(":")
        port_str = port_part if sep else None
    if not _host_is_valid(host):
        raise ValueError(f"invalid server name host {host!r}")
    if port_str is None:
        return host, None
    if not _PORT_RE.fullmatch(port_str) or int(port_str) > 65535:
        raise ValueError(f"invalid server name port {port_str!r}")
    return host, int(port_str)


def is_valid_server_name(s: str) -> bool:
    """Whether ``s`` is a valid server name (appendices.md "Server Name").

    Args:
        s: The candidate server name.

    Returns:
        True if it parses with :func:`parse_server_name`.
    """
    try:
        parse_server_name(s)
    except ValueError:
        return False
    return True


def _is_opaque_localpart(s: str) -> bool:
    """Any non-surrogate code points except ``:`` and NUL (appendices.md "Historical
    User IDs", "Room IDs", "Room Aliases")."""
    return ":" not in s and "\x00" not in s and not any(0xD800 <= ord(c) <= 0xDFFF for c in s)


def is_valid_localpart(s: str, *, strict: bool = True) -> bool:
    """Whether ``s`` is a valid user ID localpart.

    Spec: appendices.md "User Identifiers" (strict grammar, MUST for new
    users: non-empty, only ``a-z 0-9 . _ = - / +``) and "Historical User IDs"
    (servers MUST accept any non-surrogate code points except ``:`` and NUL,
    including control characters and the empty string).

    Args:
        s: The localpart (without ``@`` and domain).
        strict: Apply the grammar for new users; otherwise the historical one.

    Returns:
        True if valid under the chosen grammar.
    """
    if not isinstance(s, str):
        return False
    if strict:
        return _STRICT_LOCALPART_RE.fullmatch(s) is not None
    return _is_opaque_localpart(s)


def _within_limit(s: str) -> bool:
    try:
        return len(s.encode("utf-8")) <= MAX_ID_BYTES
    except UnicodeEncodeError:  # lone surrogates
        return False


def _split(s: object, sigil: str) -> tuple[str, str] | None:
    """Split ``&localpart:domain`` into its parts if the sigil, length and domain are valid."""
    if not isinstance(s, str) or not s.startswith(sigil) or not _within_limit(s):
        return None
    localpart, sep, domain = s[1:].partition(":")
    if not sep or not is_valid_server_name(domain):
        return None
    return localpart, domain


def is_valid_user_id(s: str, *, historical: bool = True) -> bool:
    """Whether ``s`` is a valid user ID ``@localpart:domain``.

    Spec: appendices.md "User Identifiers": at most 255 bytes, the domain a
    valid server name; the localpart per :func:`is_valid_localpart`.

    Args:
        s: The candidate user ID.
        historical: Accept historical localparts (what servers must accept
            from federation and in existing rooms). Pass ``False`` for IDs of
            new users, which must use the strict grammar.

    Returns:
        True if valid.
    """
    parts = _split(s, "@")
    return parts is not None and is_valid_localpart(parts[0], strict=not historical)


def _is_hash_id(s: str, sigil: str, fmt: EventIdFormat) -> bool:
    pattern = _HASH_STD_RE if fmt is EventIdFormat.V3 else _HASH_URLSAFE_RE
    return s.startswith(sigil) and pattern.fullmatch(s[1:]) is not None


def _is_domain_id(s: object, sigil: str) -> bool:
    parts = _split(s, sigil)
    return parts is not None and parts[0] != "" and _is_opaque_localpart(parts[0])


def is_valid_room_id(s: str, room_version: str | None = None) -> bool:
    """Whether ``s`` is a valid room ID.

    Spec: appendices.md "Room IDs": ``!opaque_id:domain`` (localpart any
    non-surrogate code points except ``:`` and NUL, at most 255 bytes in all)
    for v1-v11; for v12 (fragments/v12-event-format.md) the room ID is the
    create event's ID with ``!`` as sigil: ``!`` + 43 characters of URL-safe
    unpadded base64, no domain.

    Args:
        s: The candidate room ID.
        room_version: If given, only that version's format is accepted; if
            ``None``, either format is.

    Returns:
        True if valid. An unknown ``room_version`` gives False.
    """
    if not isinstance(s, str):
        return False
    if room_version is None:
        return _is_hash_id(s, "!", EventIdFormat.V4) or _is_domain_id(s, "!")
    try:
        version = get_room_version(room_version)
    except ValueError:
        return False
    if version.hydra:
        return _is_hash_id(s, "!", EventIdFormat.V4)
    return _is_domain_id(s, "!")


def is_valid_event_id(s: str, room_version: str | None = None) -> bool:
    """Whether ``s`` is a valid event ID.

    Spec: appendices.md "Event IDs" (at most 255 bytes) and the version's
    format: v1/v2 ``$opaque_id:domain`` (fragments/v1-event-ids.md); v3 ``$`` +
    unpadded standard base64 of the reference hash (rooms/v3.md "Event IDs");
    v4+ URL-safe (fragments/v4-event-ids.md).

    Args:
        s: The candidate event ID.
        room_version: If given, only that version's format is accepted; if
            ``None``, any of the three formats is.

    Returns:
        True if valid. An unknown ``room_version`` gives False.
    """
    if not isinstance(s, str):
        return False
    if room_version is None:
        return (
            _is_hash_id(s, "$", EventIdFormat.V3)
            or _is_hash_id(s, "$", EventIdFormat.V4)
            or _is_domain_id(s, "$")
        )
    try:
        fmt = get_room_version(room_version).event_id_format
    except ValueError:
        return False
    if fmt is EventIdFormat.V1:
        return _is_domain_id(s, "$")
    return _is_hash_id(s, "$", fmt)


def is_valid_room_alias(s: str) -> bool:
    """Whether ``s`` is a valid room alias ``#localpart:domain``.

    Spec: appendices.md "Room Aliases": localpart any non-surrogate code points
    except ``:`` and NUL (non-empty here), domain a valid server name, at most
    255 bytes in all.

    Args:
        s: The candidate alias.

    Returns:
        True if valid.
    """
    return _is_domain_id(s, "#")


def get_domain(identifier: str) -> str:
    """Return the server part of ``&localpart:domain`` (everything after the first ``:``).

    Spec: appendices.md "Common Identifier Format". The domain is not
    validated here; use the ``is_valid_*`` predicates for that.

    Args:
        identifier: A user ID, room ID, room alias or v1/v2 event ID.

    Returns:
        The domain, e.g. ``"example.org:8448"``.

    Raises:
        ValueError: ``identifier`` has no ``:`` (e.g. a v12 room ID or a v3+
            event ID) or an empty domain.
    """
    if not isinstance(identifier, str):
        raise ValueError("identifier must be a string")
    _, sep, domain = identifier.partition(":")
    if not sep or not domain:
        raise ValueError(f"identifier {identifier!r} has no domain")
    return domain
