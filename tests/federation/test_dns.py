"""dns_srv_lookup (dnspython under trio) against a tiny DNS server on loopback; the
system's resolver (whatever /etc/resolv.conf names) is never asked."""

from __future__ import annotations

from collections.abc import Iterator

import dns.asyncresolver
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest
import trio

from pocketserver.federation import resolver as resolver_module
from pocketserver.federation.resolver import DiscoveryError, SrvRecord, dns_srv_lookup

ADDRESS = "127.0.0.10"

ZONE = {
    "_matrix-fed._tcp.example.org.": [
        "10 5 8448 matrix.example.org.",
        "20 0 443 backup.example.net.",
    ],
}


async def fake_dns(sock: trio.socket.SocketType, queries: list[str]) -> None:
    while True:
        data, peer = await sock.recvfrom(4096)
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text()
        queries.append(name)
        response = dns.message.make_response(query)
        if name == "servfail.example.":
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name in ZONE and question.rdtype == dns.rdatatype.SRV:
            for text in ZONE[name]:
                response.answer.append(
                    dns.rrset.from_text(name, 300, "IN", "SRV", text)  # type: ignore[attr-defined]
                )
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        await sock.sendto(response.to_wire(), peer)


@pytest.fixture
def loopback_resolver() -> Iterator[dns.asyncresolver.Resolver]:
    """Points the module's resolver at the fake server (restored afterwards)."""
    saved = resolver_module._RESOLVER
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [ADDRESS]
    resolver.cache = dns.resolver.LRUCache(max_size=16)
    resolver.lifetime = 3.0
    resolver_module._RESOLVER = resolver
    yield resolver
    resolver_module._RESOLVER = saved


async def test_srv_records_come_from_dns_and_are_cached(
    loopback_resolver: dns.asyncresolver.Resolver,
) -> None:
    queries: list[str] = []
    sock = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
    await sock.bind((ADDRESS, 0))
    loopback_resolver.port = sock.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fake_dns, sock, queries)
        records = await dns_srv_lookup("_matrix-fed._tcp.example.org")
        assert sorted(records, key=lambda r: r.priority) == [
            SrvRecord(10, 5, 8448, "matrix.example.org"),
            SrvRecord(20, 0, 443, "backup.example.net"),
        ]
        again = await dns_srv_lookup("_matrix-fed._tcp.example.org")
        assert again == records
        assert queries.count("_matrix-fed._tcp.example.org.") == 1  # TTL cache
        assert await dns_srv_lookup("_matrix._tcp.nothing.example") == []
        with pytest.raises(DiscoveryError):
            await dns_srv_lookup("servfail.example")
        nursery.cancel_scope.cancel()
    sock.close()
