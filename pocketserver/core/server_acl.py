"""Server access control lists: may a server take part in a room?

Spec: client-server-api "Server Access Control Lists (ACLs) for rooms" and the
``m.room.server_acl`` event schema; server-server-api.md "Server Access Control Lists
(ACLs)" lists where the check applies (the membership endpoints, ``/state``,
``/state_ids``, ``/backfill``, ``/event_auth``, ``/get_missing_events``, each PDU of a
transaction, and room-scoped EDUs such as typing and receipts).

The rules, in order:

1. No ``m.room.server_acl`` event in the room state: allow.
2. The server name's host is an IP literal (v4, or v6 in brackets) and
   ``allow_ip_literals`` is ``false``: deny. Anything but the boolean ``false`` means
   true ("Defaults to true if missing or otherwise not a boolean").
3. The host matches a ``deny`` glob: deny.
4. The host matches an ``allow`` glob: allow.
5. Otherwise deny (``allow`` defaults to the empty list).

The port is never considered (``evil.com:1234`` matches ``evil.com``); globs
(appendices.md "Glob-style matching") compare case-insensitively. Entries of ``allow``
or ``deny`` that are not strings are skipped, and a list that is not a list counts as
empty, as Synapse does (its ACL evaluator filters out non-string entries), so a
malformed event never makes the check raise.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from pocketserver.core.push_glob import glob_matches

__all__ = ["ServerAcl", "server_acl_from_content", "server_host"]


def server_host(server_name: str) -> str:
    """The host part of a server name without any port; IPv6 keeps its brackets.

    Lenient on purpose: it is applied to names taken from requests and events, and a
    name that does not parse is compared as a whole (it will match no sane glob).
    """
    if server_name.startswith("["):
        end = server_name.find("]")
        return server_name[: end + 1] if end != -1 else server_name
    return server_name.partition(":")[0]


def _is_ip_literal(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        return True
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def _globs(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str))


@dataclass(frozen=True, slots=True)
class ServerAcl:
    """The parsed content of an ``m.room.server_acl`` event."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    allow_ip_literals: bool = True

    def allows(self, server_name: str) -> bool:
        """Whether ``server_name`` may take part in the room (rules 2-5 above)."""
        host = server_host(server_name)
        if not self.allow_ip_literals and _is_ip_literal(host):
            return False
        if any(glob_matches(pattern, host) for pattern in self.deny):
            return False
        return any(glob_matches(pattern, host) for pattern in self.allow)


def server_acl_from_content(content: Mapping[str, object] | None) -> ServerAcl | None:
    """Parse an ``m.room.server_acl`` event's content; ``None`` (no ACL event in the
    room's state) allows everyone (rule 1), so callers write
    ``acl is None or acl.allows(origin)``."""
    if content is None:
        return None
    return ServerAcl(
        allow=_globs(content.get("allow")),
        deny=_globs(content.get("deny")),
        allow_ip_literals=content.get("allow_ip_literals") is not False,
    )
