"""TLS listeners: the certificate is served, and a replaced certificate is served
without a restart (periodic check), while a broken replacement keeps the old one."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio
import trustme
from hypercorn.trio import serve as hypercorn_serve

from pocketserver.net.tls import ListenerTls
from pocketserver.server import _HypercornConfig, _server_ssl_context
from tests.federation.tls_rig import TinyServer, json_handler, write_cert

ADDRESS = "127.0.0.7"


def served_certificate(port: int) -> bytes:
    """The DER certificate a new TLS connection gets (not verified: compared by value)."""
    pem = ssl.get_server_certificate((ADDRESS, port), timeout=5)
    return ssl.PEM_cert_to_DER_cert(pem)


def der_of(cert_path: Path) -> bytes:
    pem = cert_path.read_text()
    first = pem[: pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
    return ssl.PEM_cert_to_DER_cert(first)


async def wait_for_certificate(port: int, expected: bytes) -> None:
    for _ in range(200):
        if await trio.to_thread.run_sync(served_certificate, port) == expected:
            return
        await trio.sleep(0.05)
    raise AssertionError("the new certificate was not served within 10 s")


async def test_a_replaced_certificate_is_served_without_a_restart(tmp_path: Path) -> None:
    ca = trustme.CA()
    first = write_cert(ca, tmp_path / "live", ADDRESS)
    first_der = der_of(first[0])
    tls = ListenerTls(first[0], first[1], _server_ssl_context, interval_s=0.1)

    async def answer(scope: dict[str, object], body: bytes) -> object:
        return await json_handler({"/": (200, {})}, scope, body)  # type: ignore[arg-type]

    hc = _HypercornConfig()
    hc.bind = [f"{ADDRESS}:0"]
    hc.accesslog = None
    hc.errorlog = None
    hc.certfile, hc.keyfile = str(first[0]), str(first[1])
    hc.tls_context = tls.context
    async with trio.open_nursery() as nursery:
        await nursery.start(tls.run)
        bound = await nursery.start(hypercorn_serve, TinyServer(answer), hc)
        port = int(bound[0].rsplit(":", 1)[1])
        assert bound[0].startswith("https://")
        assert await trio.to_thread.run_sync(served_certificate, port) == first_der

        # Renewal: new files written in place (a new key too), as certbot does.
        second = write_cert(trustme.CA(), tmp_path / "next", ADDRESS)
        first[0].write_bytes(second[0].read_bytes())
        first[1].write_bytes(second[1].read_bytes())
        await wait_for_certificate(port, der_of(second[0]))
        assert tls.reloads == 1

        # A half-done renewal (the new certificate, the old key) is not taken: the
        # previous certificate stays served until the pair matches again.
        third = write_cert(trustme.CA(), tmp_path / "third", ADDRESS)
        first[0].write_bytes(third[0].read_bytes())
        await trio.sleep(0.5)
        assert await trio.to_thread.run_sync(served_certificate, port) == der_of(second[0])
        assert tls.reloads == 1
        first[1].write_bytes(third[1].read_bytes())
        await wait_for_certificate(port, der_of(third[0]))
        assert tls.reloads == 2
        nursery.cancel_scope.cancel()


async def test_check_soon_looks_at_once(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = write_cert(ca, tmp_path / "live", "example.test")
    tls = ListenerTls(cert, key, _server_ssl_context, interval_s=3600)
    async with trio.open_nursery() as nursery:
        await nursery.start(tls.run)
        other = write_cert(ca, tmp_path / "next", "example.test")
        cert.write_bytes(other[0].read_bytes())
        key.write_bytes(other[1].read_bytes())
        tls.check_soon()
        for _ in range(500):
            if tls.reloads:
                break
            await trio.sleep(0.01)
        assert tls.reloads == 1
        nursery.cancel_scope.cancel()


def test_a_pair_that_does_not_load_is_refused_at_start(tmp_path: Path) -> None:
    cert, _ = write_cert(trustme.CA(), tmp_path / "a", "example.test")
    _, other_key = write_cert(trustme.CA(), tmp_path / "b", "example.test")
    with pytest.raises(ssl.SSLError):
        ListenerTls(cert, other_key, _server_ssl_context)
