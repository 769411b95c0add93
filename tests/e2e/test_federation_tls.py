"""The real server with ``tls: true`` on loopback, reached by the FederationClient through
a throw-away CA (``federation_custom_ca_list``'s way): by IP literal, by a name that a
well-known delegates, refused by the default ip_range_blacklist, and still reached after
its certificate was replaced and SIGHUP sent (no restart)."""

from __future__ import annotations

import signal
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trustme
import yaml

from pocketserver.config.model import DEFAULT_IP_RANGE_BLACKLIST
from pocketserver.federation.client import (
    FederationBlocked,
    FederationClient,
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
from tests.harness import RunningServer, make_config, running_server

ADDRESS = "127.0.0.8"
WELL_KNOWN_ADDRESS = "127.0.0.9"


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


class Rig:
    def __init__(self, server: RunningServer, ca: trustme.CA, folder: Path, port: int) -> None:
        self.server, self.ca, self.folder, self.port = server, ca, folder, port
        self.ca_file = folder / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert, key = write_cert(ca, folder / "tls", ADDRESS, "pocket.test")
    port = free_port(ADDRESS)
    config = make_config(folder, server_name="pocket.test")
    data = yaml.safe_load(config.read_text())
    data["listeners"] = [
        {
            "port": port,
            "bind_addresses": [ADDRESS],
            "type": "http",
            "tls": True,
            "resources": [{"names": ["client", "federation"]}],
        }
    ]
    data["tls_certificate_path"] = str(cert)
    data["tls_private_key_path"] = str(key)
    data["public_baseurl"] = f"https://pocket.test:{port}/"
    data["serve_server_wellknown"] = True
    config.write_text(yaml.safe_dump(data))
    with running_server(config) as server:
        yield Rig(server, ca, folder, port)
    assert "Traceback" not in server.log_text(), server.log_text()


def client_for(rig: Rig, **kwargs: Any) -> FederationClient:
    kwargs.setdefault("policy", LOOPBACK_ONLY)
    return FederationClient(
        None,
        ssl_context=federation_ssl_context(True, [rig.ca_file]),
        srv_lookup=no_srv,
        **kwargs,
    )


async def test_the_tls_listener_answers_federation_by_ip_literal(rig: Rig) -> None:
    assert rig.server.base_url == f"https://{ADDRESS}:{rig.port}"
    client = client_for(rig)
    keys = await client.get_json(f"{ADDRESS}:{rig.port}", "/_matrix/key/v2/server")
    await client.aclose()
    assert keys["server_name"] == "pocket.test"
    assert keys["verify_keys"]


async def test_the_server_well_known_delegates_to_public_baseurl(rig: Rig) -> None:
    """serve_server_wellknown: the answer names public_baseurl's host and port, and the
    client follows it: pocket.test (no port) -> well-known -> pocket.test:PORT."""
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=rig.ca_file)) as h:
        r = await h.get(f"https://{ADDRESS}:{rig.port}/.well-known/matrix/server")
    assert r.json() == {"m.server": f"pocket.test:{rig.port}"}
    client = client_for(
        rig, address_resolver=fixed_resolver({"pocket.test": [ADDRESS]}), well_known_port=rig.port
    )
    keys = await client.get_json("pocket.test", "/_matrix/key/v2/server")
    resolved = await client.resolver.resolve("pocket.test")
    await client.aclose()
    assert keys["server_name"] == "pocket.test"
    assert resolved.step == "well-known-port"


async def test_by_a_name_that_another_hosts_well_known_delegates(rig: Rig) -> None:
    wk_cert = write_cert(rig.ca, rig.folder / "wk", "origin.test")
    wk_answers = {"/.well-known/matrix/server": (200, {"m.server": f"pocket.test:{rig.port}"})}

    async def answer(scope: dict[str, Any], body: bytes) -> Any:
        return await json_handler(wk_answers, scope, body)  # type: ignore[arg-type]

    wk = TinyServer(answer)
    async with trio.open_nursery() as nursery:
        wk_port = await start_tiny_server(nursery, wk, WELL_KNOWN_ADDRESS, wk_cert)
        names = fixed_resolver({"origin.test": [WELL_KNOWN_ADDRESS], "pocket.test": [ADDRESS]})
        client = client_for(rig, address_resolver=names, well_known_port=wk_port)
        keys = await client.get_json("origin.test", "/_matrix/key/v2/server")
        await client.aclose()
        nursery.cancel_scope.cancel()
    assert keys["server_name"] == "pocket.test"
    assert len(wk.seen.requests) == 1


async def test_the_default_blacklist_refuses_loopback(rig: Rig) -> None:
    names = fixed_resolver({"pocket.test": [ADDRESS]})
    client = client_for(
        rig,
        policy=outbound_policy(DEFAULT_IP_RANGE_BLACKLIST, ()),
        address_resolver=names,
    )
    for destination in (f"{ADDRESS}:{rig.port}", f"pocket.test:{rig.port}"):
        with pytest.raises(FederationBlocked):
            await client.get_json(destination, "/_matrix/key/v2/server")
    await client.aclose()


def copy_files(*pairs: tuple[Path, Path]) -> None:
    for source, target in pairs:
        target.write_bytes(source.read_bytes())


def served_der(port: int) -> bytes:
    return ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate((ADDRESS, port), timeout=5))


async def test_a_renewed_certificate_is_served_after_sighup(rig: Rig) -> None:
    config = yaml.safe_load(rig.server.config_path.read_text())
    cert, key = Path(config["tls_certificate_path"]), Path(config["tls_private_key_path"])
    before = await trio.to_thread.run_sync(served_der, rig.port)
    renewed_cert, renewed_key = write_cert(rig.ca, rig.folder / "renewed", ADDRESS, "pocket.test")
    copy_files((renewed_cert, cert), (renewed_key, key))
    rig.server.proc.send_signal(signal.SIGHUP)
    for _ in range(200):
        after = await trio.to_thread.run_sync(served_der, rig.port)
        if after != before:
            break
        await trio.sleep(0.05)
    pem = renewed_cert.read_text()
    end = "-----END CERTIFICATE-----"
    assert after == ssl.PEM_cert_to_DER_cert(pem[: pem.index(end) + len(end)])
    assert rig.server.proc.poll() is None  # SIGHUP did not stop it
    client = client_for(rig)
    keys = await client.get_json(f"{ADDRESS}:{rig.port}", "/_matrix/key/v2/server")
    await client.aclose()
    assert keys["server_name"] == "pocket.test"
    assert "TLS certificate" in rig.server.log_text()
