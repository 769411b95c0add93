"""The outbound federation client against real HTTPS servers on loopback (trustme CA)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from pocketserver.config.model import DEFAULT_IP_RANGE_BLACKLIST
from pocketserver.federation.client import (
    FederationBlocked,
    FederationClient,
    FederationHttpError,
    FederationResponseTooLarge,
    FederationTimeout,
    FederationTlsError,
    FederationUnreachable,
    encode_query,
    federation_ssl_context,
)
from pocketserver.net.addresses import outbound_policy
from tests.federation.tls_rig import (
    LOOPBACK_ONLY,
    TinyServer,
    fixed_resolver,
    json_handler,
    no_srv,
    start_tiny_server,
    write_cert,
)

SERVER_IP = "127.0.0.2"
WELL_KNOWN_IP = "127.0.0.3"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


class Signer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, object]] = []

    def __call__(self, method: str, destination: str, uri: str, content: object) -> str:
        self.calls.append((method, destination, uri, content))
        return f'X-Matrix origin="us.test",destination="{destination}",key="ed25519:a",sig="s"'


def make_client(
    ca_file: Path | None, signer: Signer | None = None, **kwargs: Any
) -> FederationClient:
    kwargs.setdefault("policy", LOOPBACK_ONLY)
    kwargs.setdefault("srv_lookup", no_srv)
    return FederationClient(
        signer,
        ssl_context=federation_ssl_context(True, [ca_file] if ca_file else []),
        **kwargs,
    )


async def test_by_ip_literal_signed_with_host_header_and_query(
    ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    cert = write_cert(ca, tmp_path / "srv", SERVER_IP)
    app = TinyServer(
        partial_json(
            {
                "/_matrix/federation/v1/version": (200, {"server": {}}),
                "/_matrix/federation/v1/send/t/1": (200, {}),
            }
        )
    )
    signer = Signer()
    async with trio.open_nursery() as nursery:
        port = await start_tiny_server(nursery, app, SERVER_IP, cert)
        client = make_client(ca_file, signer)
        dest = f"{SERVER_IP}:{port}"
        got = await client.get_json(
            dest, "/_matrix/federation/v1/version", query={"a": "1 2", "b": ["x", "y/z"]}
        )
        assert got == {"server": {}}
        await client.put_json(dest, "/_matrix/federation/v1/send/t%2F1", {"pdus": []})
        assert client.statistics().open_connections == 1  # reused
        await client.aclose()
        nursery.cancel_scope.cancel()
    first, second = app.seen.requests
    assert first["headers"]["host"] == dest
    uri = "/_matrix/federation/v1/version?a=1%202&b=x&b=y%2Fz"
    assert first["raw_path"] + "?" + first["query"] == uri
    assert signer.calls[0] == ("GET", dest, uri, None)
    assert first["headers"]["authorization"] == signer("GET", dest, uri, None)
    assert second["method"] == "PUT"
    assert second["raw_path"] == "/_matrix/federation/v1/send/t%2F1"
    assert json.loads(second["body"]) == {"pdus": []}
    assert signer.calls[1] == ("PUT", dest, "/_matrix/federation/v1/send/t%2F1", {"pdus": []})
    assert len(app.seen.client_ports) == 1  # one connection for both requests


def partial_json(answers: dict[str, tuple[int, object]]) -> Any:
    async def handler(scope: dict[str, Any], body: bytes) -> Any:
        return await json_handler(answers, scope, body)

    return handler


async def test_by_name_through_a_well_known_checks_the_delegated_name(
    ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    """origin.test's well-known delegates to fed.test:PORT (step 3.2): the connection goes
    to fed.test's address, with Host fed.test:PORT and a certificate for fed.test."""
    fed_cert = write_cert(ca, tmp_path / "fed", "fed.test")
    wk_cert = write_cert(ca, tmp_path / "wk", "origin.test")
    app = TinyServer(partial_json({"/_matrix/key/v2/server": (200, {"server_name": "x"})}))
    async with trio.open_nursery() as nursery:
        port = await start_tiny_server(nursery, app, SERVER_IP, fed_cert)
        wk = TinyServer(
            partial_json({"/.well-known/matrix/server": (200, {"m.server": f"fed.test:{port}"})})
        )
        wk_port = await start_tiny_server(nursery, wk, WELL_KNOWN_IP, wk_cert)
        names = fixed_resolver({"origin.test": [WELL_KNOWN_IP], "fed.test": [SERVER_IP]})
        client = make_client(ca_file, address_resolver=names, well_known_port=wk_port)
        got = await client.get_json("origin.test", "/_matrix/key/v2/server")
        assert got == {"server_name": "x"}
        resolved = await client.resolver.resolve("origin.test")
        assert resolved.step == "well-known-port"
        await client.aclose()
        nursery.cancel_scope.cancel()
    assert app.seen.requests[0]["headers"]["host"] == f"fed.test:{port}"
    assert wk.seen.requests[0]["headers"]["host"] == f"origin.test:{wk_port}"


async def test_a_certificate_for_another_name_is_a_tls_error(
    ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    cert = write_cert(ca, tmp_path / "srv", "someone-else.test")
    app = TinyServer(partial_json({"/x": (200, {})}))
    async with trio.open_nursery() as nursery:
        port = await start_tiny_server(nursery, app, SERVER_IP, cert)
        client = make_client(ca_file)
        with pytest.raises(FederationTlsError):
            await client.get_json(f"{SERVER_IP}:{port}", "/x")
        # Not trusted at all (the system's CAs, not the test CA): a TLS error too...
        untrusted = make_client(None)
        with pytest.raises(FederationTlsError):
            await untrusted.get_json(f"{SERVER_IP}:{port}", "/x")
        # ...unless federation_verify_certificates is false.
        lax = FederationClient(
            None, policy=LOOPBACK_ONLY, ssl_context=federation_ssl_context(False), srv_lookup=no_srv
        )
        assert await lax.get_json(f"{SERVER_IP}:{port}", "/x") == {}
        for c in (client, untrusted, lax):
            await c.aclose()
        nursery.cancel_scope.cancel()
    assert len(app.seen.requests) == 1


async def test_blocked_ranges_are_refused_before_connecting(
    ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    accepted: list[object] = []

    async def count(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, count, 0, host="127.0.0.4"))
        port = listeners[0].socket.getsockname()[1]
        names = fixed_resolver(
            {"blocked.test": ["127.0.0.4"], "mixed.test": ["8.8.8.8", "127.0.0.4"]}
        )
        # The default ip_range_blacklist (loopback and private ranges are blocked).
        client = make_client(
            ca_file,
            policy=outbound_policy(DEFAULT_IP_RANGE_BLACKLIST, ()),
            address_resolver=names,
        )
        for dest in (f"127.0.0.4:{port}", f"blocked.test:{port}", "blocked.test"):
            with pytest.raises(FederationBlocked):
                await client.get_json(dest, "/x")
        # One blocked address among a name's addresses refuses the name.
        with pytest.raises(FederationBlocked):
            await client.get_json(f"mixed.test:{port}", "/x")
        await client.aclose()
        nursery.cancel_scope.cancel()
    assert accepted == []


async def test_domain_whitelist_refuses_others_without_any_lookup(ca_file: Path) -> None:
    asked: list[str] = []

    async def names(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.2"]

    client = make_client(
        ca_file, address_resolver=names, domain_whitelist=frozenset({"friend.test"})
    )
    with pytest.raises(FederationBlocked, match="whitelist"):
        await client.get_json("stranger.test:8448", "/x")
    assert asked == []
    await client.aclose()


async def test_http_errors_carry_the_matrix_error(
    ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    cert = write_cert(ca, tmp_path / "srv", SERVER_IP)
    app = TinyServer(
        partial_json({"/forbidden": (403, {"errcode": "M_FORBIDDEN", "error": "not you"})})
    )
    async with trio.open_nursery() as nursery:
        port = await start_tiny_server(nursery, app, SERVER_IP, cert)
        client = make_client(ca_file)
        with pytest.raises(FederationHttpError) as info:
            await client.post_json(f"{SERVER_IP}:{port}", "/forbidden", {"a": 1})
        assert (info.value.status, info.value.errcode, info.value.error) == (
            403,
            "M_FORBIDDEN",
            "not you",
        )
        with pytest.raises(FederationHttpError) as info:
            await client.get_json(f"{SERVER_IP}:{port}", "/missing")
        assert (info.value.status, info.value.errcode) == (404, "M_UNRECOGNIZED")
        await client.aclose()
        nursery.cancel_scope.cancel()


async def test_nothing_listening_is_unreachable(ca_file: Path) -> None:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.5", 0))
    port = sock.getsockname()[1]
    sock.close()  # a port nothing listens on
    client = make_client(ca_file)
    with pytest.raises(FederationUnreachable) as info:
        await client.get_json(f"127.0.0.5:{port}", "/x")
    assert not isinstance(info.value, FederationTlsError)
    await client.aclose()


# A read stopped at the size cap leaves httpcore's innermost body generator
# unexhausted (httpcore closes the connection but not that generator): trio warns when
# it is collected. Harmless (ResourceWarning is silent outside tests); ignored here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_streaming_size_cap_and_timeout(
    ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    cert = write_cert(ca, tmp_path / "srv", SERVER_IP)
    big = b"x" * 300_000

    async def handler(scope: dict[str, Any], body: bytes) -> Any:
        if scope["path"] == "/slow":
            await trio.sleep(5)
        headers = {"content-type": "application/octet-stream"}
        if scope["path"] == "/sized":
            headers["content-length"] = str(len(big))
        return 200, headers, big

    app = TinyServer(handler)
    async with trio.open_nursery() as nursery:
        port = await start_tiny_server(nursery, app, SERVER_IP, cert)
        client = make_client(ca_file)
        dest = f"{SERVER_IP}:{port}"
        received = 0
        chunks = 0
        async with client.stream("GET", dest, "/big", max_size=len(big)) as response:
            assert response.status == 200
            async for chunk in response.aiter_bytes():
                received += len(chunk)
                chunks += 1
        assert received == len(big)
        assert chunks > 1  # read as it arrives, not in one piece
        with pytest.raises(FederationResponseTooLarge):  # chunked: stops at the cap
            await client.get_json(dest, "/big", max_size=100_000)
        with pytest.raises(FederationResponseTooLarge, match="answer of 300000 bytes"):
            await client.get_json(dest, "/sized", max_size=100_000)
        with pytest.raises(FederationTimeout):
            await client.get_json(dest, "/slow", timeout_s=0.5)
        await client.aclose()
        nursery.cancel_scope.cancel()


async def test_the_connection_cap_holds_for_concurrent_requests(
    ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    cert = write_cert(ca, tmp_path / "srv", SERVER_IP)
    busy = 0
    most = 0

    async def handler(scope: dict[str, Any], body: bytes) -> Any:
        nonlocal busy, most
        busy += 1
        most = max(most, busy)
        await trio.sleep(0.05)
        busy -= 1
        return 200, {"content-type": "application/json"}, b"{}"

    app = TinyServer(handler)
    async with trio.open_nursery() as nursery:
        port = await start_tiny_server(nursery, app, SERVER_IP, cert)
        client = make_client(ca_file, max_connections=2)
        async with trio.open_nursery() as requests:
            for _ in range(6):
                requests.start_soon(client.get_json, f"{SERVER_IP}:{port}", "/x")
        assert client.statistics().open_connections <= 2
        await client.aclose()
        nursery.cancel_scope.cancel()
    assert len(app.seen.requests) == 6
    assert most == 2
    assert len(app.seen.client_ports) == 2


def test_query_encoding() -> None:
    assert encode_query(None) == ""
    assert encode_query({"v": ["1", "2"], "x": "a b&c"}) == "?v=1&v=2&x=a%20b%26c"
    assert encode_query([("k", "ü")]) == "?k=%C3%BC"


async def test_well_known_redirects_are_followed_and_loops_end(
    ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    wk_cert = write_cert(ca, tmp_path / "wk", "origin.test", "loop.test", "plain.test")
    port_box: list[int] = []

    async def handler(scope: dict[str, Any], body: bytes) -> Any:
        host = dict(scope["headers"])[b"host"].decode().split(":")[0]
        base = f"https://{host}:{port_box[0]}"
        if host == "loop.test":
            return 302, {"location": f"{base}/.well-known/matrix/server"}, b""
        if host == "plain.test":  # a redirect to plain http is not followed
            return 301, {"location": f"http://{host}:{port_box[0]}/moved"}, b""
        if scope["path"] == "/.well-known/matrix/server":
            return 307, {"location": "/moved"}, b""
        return 200, {"content-type": "application/json"}, b'{"m.server": "fed.test:1234"}'

    wk = TinyServer(handler)
    async with trio.open_nursery() as nursery:
        port_box.append(await start_tiny_server(nursery, wk, WELL_KNOWN_IP, wk_cert))
        names = fixed_resolver(
            {h: [WELL_KNOWN_IP] for h in ("origin.test", "loop.test", "plain.test")}
        )
        client = make_client(ca_file, address_resolver=names, well_known_port=port_box[0])
        resolved = await client.resolver.resolve("origin.test")
        assert (resolved.step, resolved.host_header) == ("well-known-port", "fed.test:1234")
        assert [r["path"] for r in wk.seen.requests] == ["/.well-known/matrix/server", "/moved"]
        assert (await client.resolver.resolve("loop.test")).step == "default"
        assert (await client.resolver.resolve("plain.test")).step == "default"
        await client.aclose()
        nursery.cancel_scope.cancel()
    loop_hits = [r for r in wk.seen.requests if r["headers"]["host"].startswith("loop.test")]
    assert len(loop_hits) == 6  # the first request and 5 redirects, then it gives up
