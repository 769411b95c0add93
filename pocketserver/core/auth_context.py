"""Shared pieces of the event authorisation rules: the error, the checked view of an
event and of the room state it is authorised against.

The rules themselves live in :mod:`pocketserver.core.auth_rules` (entry point),
:mod:`~pocketserver.core.auth_events` (create event and ``auth_events`` shape),
:mod:`~pocketserver.core.auth_membership`, :mod:`~pocketserver.core.auth_power`
and :mod:`~pocketserver.core.auth_thirdparty`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pocketserver.core import power_levels as pl
from pocketserver.core.room_versions import RoomVersion

__all__ = ["AuthContext", "AuthError", "StateMap", "domain_of", "is_valid_user_id"]

Pdu = Mapping[str, object]
StateMap = Mapping[tuple[str, str], Pdu]

CREATE_KEY = ("m.room.create", "")
POWER_KEY = ("m.room.power_levels", "")
JOIN_RULES_KEY = ("m.room.join_rules", "")


class AuthError(Exception):
    """The event is not allowed by the authorisation rules.

    Attributes:
        rule: A stable name of the rule that rejected the event, e.g.
            ``"member.join.banned"``; the message says why and cites the spec.
    """

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule


def domain_of(identifier: str) -> str:
    """Return the server part of a ``sigil localpart:domain`` identifier.

    Like Synapse's ``get_domain_from_id``: everything after the first ``:``.

    Args:
        identifier: A user, room (pre-v12) or event (v1/v2) ID.

    Returns:
        The domain.

    Raises:
        AuthError: There is no ``:`` in the identifier.
    """
    _, colon, domain = identifier.partition(":")
    if not colon:
        raise AuthError("format", f"{identifier!r} has no domain")
    return domain


_HOST = re.compile(r"\A[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*\Z")
_PORT = re.compile(r"\A[0-9]{1,5}\Z")


def _is_valid_server_name(name: str) -> bool:
    """appendices.md "Server Name": hostname / IPv4 / ``[IPv6]``, optional ``:port``."""
    host, port = name, ""
    if not name.endswith("]"):
        host, colon, port = name.rpartition(":")
        if not colon:
            host, port = name, ""
        elif not _PORT.match(port):
            return False
    if host.startswith("[") and host.endswith("]"):
        if "%" in host:  # ipaddress accepts zone IDs; server names cannot carry them
            return False
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    return bool(_HOST.match(host))


def is_valid_user_id(user_id: object) -> bool:
    """Return whether ``user_id`` is a user ID as Synapse's ``UserID.is_valid`` sees it.

    appendices.md "User Identifiers": ``@localpart:server_name``, at most 255 bytes.
    Historical (non-compliant) localparts are accepted, as everywhere in federation.

    Args:
        user_id: The candidate.

    Returns:
        True if valid.
    """
    if not isinstance(user_id, str) or not user_id.startswith("@"):
        return False
    if len(user_id.encode("utf-8", "surrogatepass")) > 255:
        return False
    _, colon, server = user_id[1:].partition(":")
    return bool(colon) and _is_valid_server_name(server)


def as_str(value: object) -> str | None:
    """Narrow a JSON value to a string.

    Args:
        value: Any JSON value.

    Returns:
        ``value`` if it is a string, else None.
    """
    return value if isinstance(value, str) else None


def as_map(value: object) -> Mapping[str, object]:
    """Narrow a JSON value to an object.

    Args:
        value: Any JSON value.

    Returns:
        ``value`` if it is a JSON object, else an empty one.
    """
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True, slots=True)
class AuthContext:
    """An event whose basic shape has been checked, and the state it is checked against.

    Attributes:
        version: The room version.
        event: The PDU being authorised.
        type: Its ``type``.
        sender: Its ``sender`` (contains a ``:``).
        state_key: Its ``state_key`` or None for a non-state event.
        content: Its ``content``.
        state: The auth events / state, keyed by (type, state_key).
        create: The room's ``m.room.create`` PDU.
    """

    version: RoomVersion
    event: Pdu
    type: str
    sender: str
    state_key: str | None
    content: Mapping[str, object]
    state: StateMap
    create: Pdu

    def membership(self, user_id: str) -> str | None:
        """Return the user's current membership (None if no member event)."""
        member = self.state.get(("m.room.member", user_id))
        if member is None:
            return None
        return as_str(as_map(member.get("content")).get("membership"))

    def power_levels(self) -> Mapping[str, object] | None:
        """Return the current power levels content, or None without that event.

        Raises:
            AuthError: The power levels event's content is not an object.
        """
        event = self.state.get(POWER_KEY)
        if event is None:
            return None
        content = event.get("content")
        if not isinstance(content, Mapping):
            raise AuthError("power_levels.invalid", "current power levels are not an object")
        return content

    def user_level(self, user_id: str) -> int | float:
        """Return the user's power level (v12 creators: ``math.inf``).

        Raises:
            AuthError: The current power levels hold an invalid value for the user.
        """
        try:
            return pl.get_user_power_level(
                user_id, self.power_levels(), self.create, room_version=self.version
            )
        except pl.InvalidPowerLevel as exc:
            raise AuthError("power_levels.invalid", str(exc)) from None

    def named_level(self, name: str) -> int:
        """Return ``ban``/``kick``/``invite``/``redact`` with its schema default.

        Raises:
            AuthError: The current power levels hold an invalid value for it.
        """
        try:
            return pl.get_named_level(
                self.power_levels(),
                name,
                pl.DEFAULT_NAMED_LEVELS[name],
                integer_only=self.version.integer_only_power_levels,
            )
        except pl.InvalidPowerLevel as exc:
            raise AuthError("power_levels.invalid", str(exc)) from None

    def send_level(self) -> int:
        """Return the *required power level* for this event.

        Raises:
            AuthError: The current power levels hold an invalid value for it.
        """
        try:
            return pl.get_event_send_level(
                self.type,
                self.state_key,
                self.power_levels(),
                integer_only=self.version.integer_only_power_levels,
            )
        except pl.InvalidPowerLevel as exc:
            raise AuthError("power_levels.invalid", str(exc)) from None

    def join_rule(self) -> str | None:
        """Return the current join rule; ``invite`` when none is set (as Synapse)."""
        event = self.state.get(JOIN_RULES_KEY)
        if event is None:
            return "invite"
        rule = as_map(event.get("content")).get("join_rule", "invite")
        return as_str(rule)

    def creators(self) -> frozenset[str]:
        """Return the room creators (see :func:`power_levels.get_room_creators`)."""
        return pl.get_room_creators(self.create, self.version)
