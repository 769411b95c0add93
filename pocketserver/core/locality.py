"""Whose is an identifier: this server's, or another server's?

Spec: appendices.md "Server Name", "Common Identifier Format" (``&localpart:domain``:
the domain is everything after the *first* colon, since no localpart may hold one,
so ``@a:[::1]:8448`` belongs to ``[::1]:8448``), "User Identifiers", "Room Aliases",
"Room IDs" (v12 room IDs, fragments/v12-event-format.md, carry no domain at all).

Synapse compares the domain with its ``hostname`` exactly (``HomeServer.is_mine``,
``is_mine_server_name``): so does this, after checking the grammar, so an invalid
identifier is never "mine".
"""

from __future__ import annotations

from dataclasses import dataclass

from pocketserver.core.identifiers import MAX_ID_BYTES, is_valid_server_name

__all__ = ["Locality", "server_of"]

_SIGILS = frozenset("@#!$")
"""User IDs, room aliases, room IDs and v1/v2 event IDs carry a domain."""


def server_of(identifier: str) -> str | None:
    """The server name an identifier belongs to, or ``None`` if it names none.

    Args:
        identifier: A user ID, room alias, room ID, v1/v2 event ID (``&localpart:domain``),
            or a bare server name (``example.org``, ``[::1]:8448``).

    Returns:
        The domain (a valid server name), or ``None`` for anything without one: an
        identifier whose domain is not a valid server name, a v12 room ID or v3+ event
        ID (no ``:``), a non-string, an identifier over 255 bytes.
    """
    if not isinstance(identifier, str) or not identifier:
        return None
    if identifier[0] in _SIGILS:
        try:
            too_long = len(identifier.encode("utf-8")) > MAX_ID_BYTES
        except UnicodeEncodeError:  # lone surrogates
            return None
        _, sep, domain = identifier[1:].partition(":")
        if too_long or not sep:
            return None
    else:
        domain = identifier
    return domain if is_valid_server_name(domain) else None


@dataclass(frozen=True, slots=True)
class Locality:
    """This server's name, and the one answer to "is this ours?"."""

    server_name: str

    def is_mine(self, identifier: str) -> bool:
        """Whether ``identifier`` (a user ID, room alias, room ID with a domain, v1/v2
        event ID or a server name) belongs to this server.

        A room ID's domain only names the server where the room was created, not the
        servers in it; a v12 room ID has none and is never "mine" by its name.
        """
        return server_of(identifier) == self.server_name

    def is_remote(self, identifier: str) -> bool:
        """Whether ``identifier`` names a valid domain that is not this server's."""
        server = server_of(identifier)
        return server is not None and server != self.server_name
