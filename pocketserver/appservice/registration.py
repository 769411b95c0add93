"""Application service registrations: parsing and namespace matching (pure).

Application service API, "Registration": a registration names the service (``id``),
where the homeserver reaches it (``url``, or null for a service that only talks to the
homeserver), the two tokens (``as_token`` authenticates the service to the homeserver,
``hs_token`` the homeserver to the service), the service's own user
(``sender_localpart``) and the ``namespaces`` of users, aliases and rooms it is
interested in, each a regular expression that may be ``exclusive``.

Regular expressions match from the start of the ID, as Synapse's ``re.match`` (the
spec's examples such as ``@_irc_.*`` are written so); a registration that wants a whole
ID matched ends its regex with ``$`` or ``:example.org``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

MAX_REGEX_LENGTH = 1000


class RegistrationError(ValueError):
    """A registration is not valid; the message says which key and why."""


@dataclass(frozen=True, slots=True)
class Namespace:
    regex: re.Pattern[str]
    exclusive: bool

    def matches(self, value: str) -> bool:
        return self.regex.match(value) is not None


@dataclass(frozen=True, slots=True)
class AppService:
    """One application service, as its registration file describes it."""

    id: str
    url: str | None
    as_token: str
    hs_token: str
    sender: str
    """The service's own user ID (``@sender_localpart:server_name``)."""
    users: tuple[Namespace, ...] = ()
    aliases: tuple[Namespace, ...] = ()
    rooms: tuple[Namespace, ...] = ()
    rate_limited: bool = True
    protocols: tuple[str, ...] = ()
    receive_ephemeral: bool = False
    source: str = ""
    """Where the registration came from (a file path), for messages."""

    def is_interested_in_user(self, user_id: str) -> bool:
        """The user is the service's sender or in its user namespaces."""
        return user_id == self.sender or any(ns.matches(user_id) for ns in self.users)

    def claims_user_exclusively(self, user_id: str) -> bool:
        return user_id == self.sender or any(
            ns.exclusive and ns.matches(user_id) for ns in self.users
        )

    def is_interested_in_alias(self, alias: str) -> bool:
        return any(ns.matches(alias) for ns in self.aliases)

    def claims_alias_exclusively(self, alias: str) -> bool:
        return any(ns.exclusive and ns.matches(alias) for ns in self.aliases)

    def is_interested_in_room_id(self, room_id: str) -> bool:
        return any(ns.matches(room_id) for ns in self.rooms)

    def is_interested_in_event(
        self, pdu: Mapping[str, object], room_aliases: Iterable[str], members: Iterable[str]
    ) -> bool:
        """Whether an event goes to this service (application service API, "Pushing
        events"): its sender, or the user a membership event is about, is in the user
        namespaces; the room is in the room namespaces; one of the room's aliases is
        in the alias namespaces; or one of the room's joined members is the service's
        or in its user namespaces (Synapse's ``is_interested_in_event``).
        """
        sender = pdu.get("sender")
        if isinstance(sender, str) and self.is_interested_in_user(sender):
            return True
        state_key = pdu.get("state_key")
        if (
            pdu.get("type") == "m.room.member"
            and isinstance(state_key, str)
            and self.is_interested_in_user(state_key)
        ):
            return True
        room_id = pdu.get("room_id")
        if isinstance(room_id, str) and self.is_interested_in_room_id(room_id):
            return True
        if any(self.is_interested_in_alias(a) for a in room_aliases):
            return True
        return any(self.is_interested_in_user(m) for m in members)


def _str(data: Mapping[str, object], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise RegistrationError(f"{where}: {key} must be a non-empty string")
    return value


def _namespaces(raw: object, kind: str, where: str) -> tuple[Namespace, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise RegistrationError(f"{where}: namespaces.{kind} must be a list")
    found = []
    for i, entry in enumerate(raw):
        at = f"{where}: namespaces.{kind}[{i}]"
        if not isinstance(entry, Mapping):
            raise RegistrationError(f"{at} must be a mapping with regex and exclusive")
        regex = entry.get("regex")
        if not isinstance(regex, str) or not regex or len(regex) > MAX_REGEX_LENGTH:
            raise RegistrationError(f"{at}.regex must be a non-empty string")
        exclusive = entry.get("exclusive")
        if not isinstance(exclusive, bool):
            # As Synapse: exclusive must be said, true or false.
            raise RegistrationError(f"{at}.exclusive must be true or false")
        try:
            compiled = re.compile(regex)
        except re.error as e:
            raise RegistrationError(f"{at}.regex is not a valid regular expression: {e}") from None
        found.append(Namespace(compiled, exclusive))
    return tuple(found)


def parse_registration(data: object, server_name: str, source: str = "") -> AppService:
    """Validate one registration document (parsed YAML).

    Raises:
        RegistrationError: a key is missing or has the wrong type or value.
    """
    where = source or "registration"
    if not isinstance(data, Mapping):
        raise RegistrationError(f"{where}: expected a mapping")
    service_id = _str(data, "id", where)
    if "url" not in data:
        raise RegistrationError(f"{where}: url is required (null for no pushes)")
    url = data.get("url")
    if url is not None and (
        not isinstance(url, str) or not url.startswith(("http://", "https://"))
    ):
        raise RegistrationError(f"{where}: url must be an http(s) URL or null")
    sender_localpart = _str(data, "sender_localpart", where)
    sender = f"@{sender_localpart}:{server_name}"
    namespaces = data.get("namespaces", {})
    if not isinstance(namespaces, Mapping):
        raise RegistrationError(f"{where}: namespaces must be a mapping")
    rate_limited = data.get("rate_limited", True)
    if not isinstance(rate_limited, bool):
        raise RegistrationError(f"{where}: rate_limited must be true or false")
    receive_ephemeral = data.get(
        "receive_ephemeral", data.get("de.sorunome.msc2409.push_ephemeral", False)
    )
    if not isinstance(receive_ephemeral, bool):
        raise RegistrationError(f"{where}: receive_ephemeral must be true or false")
    protocols = data.get("protocols") or []
    if not isinstance(protocols, list) or not all(isinstance(p, str) and p for p in protocols):
        raise RegistrationError(f"{where}: protocols must be a list of strings")
    return AppService(
        id=service_id,
        url=url.rstrip("/") if isinstance(url, str) else None,
        as_token=_str(data, "as_token", where),
        hs_token=_str(data, "hs_token", where),
        sender=sender,
        users=_namespaces(namespaces.get("users"), "users", where),
        aliases=_namespaces(namespaces.get("aliases"), "aliases", where),
        rooms=_namespaces(namespaces.get("rooms"), "rooms", where),
        rate_limited=rate_limited,
        protocols=tuple(protocols),
        receive_ephemeral=receive_ephemeral,
        source=source,
    )


def check_registrations(services: Sequence[AppService]) -> None:
    """Refuse a set of registrations that could not be told apart: two with the same
    ``id``, the same ``as_token`` or the same sender, or an ``as_token`` equal to some
    ``hs_token`` (it would let one side pass for the other).

    Raises:
        RegistrationError: naming both files.
    """
    seen: dict[tuple[str, str], AppService] = {}
    hs_tokens = {s.hs_token: s for s in services}
    for service in services:
        for what, value in (
            ("id", service.id),
            ("as_token", service.as_token),
            ("sender_localpart", service.sender),
        ):
            other = seen.get((what, value))
            if other is not None:
                raise RegistrationError(
                    f"{service.source or service.id}: the same {what} as {other.source or other.id}"
                )
            seen[(what, value)] = service
        if service.as_token in hs_tokens:
            other = hs_tokens[service.as_token]
            raise RegistrationError(
                f"{service.source or service.id}: as_token equals the hs_token of "
                f"{other.source or other.id}"
            )
