"""Which IP addresses the server may connect to on a user's behalf, and name resolution.

A host name is resolved here (through a :data:`Resolver` that tests replace) and
EVERY address it resolves to is checked against a blacklist of IP ranges (unless in
the whitelist): one blocked address refuses the host, as Synapse does. The caller
then connects to an address that was checked (see :mod:`pocketserver.net.transport`),
so a second DNS answer cannot move the connection elsewhere (DNS rebinding).

This module imports neither httpx nor httpcore: it is cheap to import.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable

import trio

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> IP addresses``; the default asks the system resolver."""

ALWAYS_BLOCKED = ("0.0.0.0", "::")
"""Blocked for outbound requests whatever the lists say: connecting to them reaches this host."""


class AddressBlocked(Exception):
    """The host is, or resolves to, an address the policy does not allow."""


class HostUnresolvable(Exception):
    """The host name could not be resolved, or has no address."""


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class AddressPolicy:
    """The blacklist and whitelist of IP ranges (``netaddr.IPSet``); ``never`` is
    blocked even when whitelisted."""

    def __init__(
        self, blacklist: Iterable[str], whitelist: Iterable[str], never: Iterable[str] = ()
    ) -> None:
        import netaddr

        self._black = netaddr.IPSet(list(blacklist))
        self._white = netaddr.IPSet(list(whitelist))
        self._never = netaddr.IPSet(list(never))

    def allowed(self, address: str) -> bool:
        import netaddr

        try:
            ip = netaddr.IPAddress(address.split("%", 1)[0])
        except (netaddr.AddrFormatError, ValueError, TypeError):
            return False  # not an address we understand: never connect to it
        if ip.version == 6 and ip.is_ipv4_mapped():
            ip = ip.ipv4()
        if ip in self._never:
            return False
        if ip in self._white:
            return True
        return ip not in self._black


def outbound_policy(blacklist: Iterable[str], whitelist: Iterable[str]) -> AddressPolicy:
    """The policy of ``ip_range_blacklist``/``ip_range_whitelist``, plus :data:`ALWAYS_BLOCKED`."""
    return AddressPolicy(blacklist, whitelist, never=ALWAYS_BLOCKED)


def literal_address(host: str) -> str | None:
    """``host`` as a normalised IP address if it is one (``[::1]`` or ``::1``), else None."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


async def resolve_checked(
    host: str, port: int, policy: AddressPolicy, resolver: Resolver
) -> list[str]:
    """The addresses of ``host``, every one of them allowed by ``policy``.

    Raises:
        HostUnresolvable: the name does not resolve (or to nothing).
        AddressBlocked: the host is, or one of its addresses is, not allowed.
    """
    literal = literal_address(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = await resolver(host, port)
        except OSError as e:
            raise HostUnresolvable(f"cannot resolve {host}: {e}") from None
    if not addresses:
        raise HostUnresolvable(f"{host} has no address")
    for address in addresses:
        if not policy.allowed(address):
            raise AddressBlocked(f"{host} resolves to an address that is not allowed")
    return addresses
