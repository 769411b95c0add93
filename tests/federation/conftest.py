"""Fixtures for federation tests against real servers on loopback addresses.

pocketserver listens on 127.0.0.2, Synapse on 127.0.0.1, each with an IP-literal server
name and an explicit port, and a certificate from one throw-away CA that both trust.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.federation.synapse_peer import SynapsePeer, TestCA, free_port, running_synapse
from tests.harness import RunningServer, make_config, running_server


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def synapse(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[SynapsePeer]:
    with running_synapse(tmp_path_factory.mktemp("synapse"), test_ca) as peer:
        yield peer


def pocket_tls_config(
    directory: Path, ca: TestCA, host: str = "127.0.0.2", **overrides: object
) -> Path:
    """A pocketserver config with one TLS listener on ``host`` serving every resource,
    named ``host:port`` so peers reach it without DNS."""
    port = free_port(host)
    cert, key = ca.issue(host, f"pocket-{host}")
    return make_config(
        directory,
        server_name=f"{host}:{port}",
        listeners=[
            {
                "port": port,
                "bind_addresses": [host],
                "type": "http",
                "tls": True,
                "x_forwarded": False,
                "resources": [{"names": ["client", "federation", "keys", "media", "openid"]}],
            }
        ],
        tls_certificate_path=str(cert),
        tls_private_key_path=str(key),
        **overrides,
    )


@pytest.fixture(scope="module")
def pocket_tls(
    tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA
) -> Iterator[RunningServer]:
    with running_server(pocket_tls_config(tmp_path_factory.mktemp("pocket"), test_ca)) as server:
        yield server
