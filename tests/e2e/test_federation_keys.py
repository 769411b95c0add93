"""Server keys, the keyring, X-Matrix and the notary through the real server.

A tiny key server on 127.0.0.1 (HTTPS with a test CA given to pocketserver as
``SSL_CERT_FILE``, 127.0.0.1 let through ``ip_range_whitelist``) publishes a
throw-away ed25519 key for the server name ``127.0.0.1:PORT``. The test signs
federation requests with that key, written from the spec with plain pynacl and
canonicaljson, independent of pocketserver's code; pocketserver fetches the key
over real HTTPS to check them, and signs its own key request with X-Matrix.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import canonicaljson
import nacl.signing
import pytest

from tests.e2e.fake_identity import Tls, make_tls
from tests.harness import RunningServer, make_config, running_server

KEY_ID = "ed25519:e2e"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def unb64(s: str) -> bytes:
    return base64.b64decode(s + "=" * (-len(s) % 4))


def sign(obj: dict, key: nacl.signing.SigningKey, name: str) -> dict:
    body = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    sig = b64(key.sign(canonicaljson.encode_canonical_json(body)).signature)
    return {**obj, "signatures": {name: {KEY_ID: sig}}}


@dataclass
class KeyServer:
    tls: Tls
    key: nacl.signing.SigningKey = field(default_factory=nacl.signing.SigningKey.generate)
    port: int = 0
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    up: bool = True

    @property
    def name(self) -> str:
        return f"127.0.0.1:{self.port}"

    def keys(self) -> dict:
        body = {
            "server_name": self.name,
            "valid_until_ts": int(time.time() * 1000) + 3600_000,
            "verify_keys": {KEY_ID: {"key": b64(bytes(self.key.verify_key))}},
            "old_verify_keys": {},
        }
        return sign(body, self.key, self.name)


@contextlib.contextmanager
def key_server(tmp_path: Path) -> Iterator[KeyServer]:
    tls = make_tls(tmp_path, "keys")
    ks = KeyServer(tls)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ks.seen.append((self.path, self.headers.get("Authorization")))
            if not ks.up or self.path != "/_matrix/key/v2/server":
                self.send_error(404)
                return
            data = json.dumps(ks.keys()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    ks.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield ks
    finally:
        httpd.shutdown()
        httpd.server_close()


def x_matrix(ks: KeyServer, destination: str, method: str, uri: str, content=None) -> str:
    obj = {"method": method, "uri": uri, "origin": ks.name, "destination": destination}
    if content is not None:
        obj["content"] = content
    sig = sign(obj, ks.key, ks.name)["signatures"][ks.name][KEY_ID]
    return f'X-Matrix origin="{ks.name}",destination="{destination}",key="{KEY_ID}",sig="{sig}"'


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, KeyServer]]:
    tmp = tmp_path_factory.mktemp("fedkeys")
    with key_server(tmp) as ks:
        config = make_config(tmp, ip_range_whitelist=["127.0.0.1/32"], trusted_key_servers=[])
        env = {"SSL_CERT_FILE": str(ks.tls.ca_file)}
        with running_server(config, env=env) as server:
            server.register("alice")
            yield server, ks
        assert "Traceback" not in server.log_text(), server.log_text()


def _profile_uri(server: RunningServer) -> str:
    return f"/_matrix/federation/v1/query/profile?user_id=%40alice%3A{server.server_name}"


def test_signed_request_is_checked_with_a_key_fetched_over_https(setup) -> None:
    server, ks = setup
    uri = _profile_uri(server)
    with server.client() as c:
        r = c.get(uri, headers={"Authorization": x_matrix(ks, server.server_name, "GET", uri)})
        assert r.status_code == 200, r.text
        assert r.json() == {"displayname": "alice"}
        published = c.get("/_matrix/key/v2/server").json()
    key_requests = [auth for path, auth in ks.seen if path == "/_matrix/key/v2/server"]
    assert len(key_requests) == 1
    # pocketserver signed its own key request: X-Matrix with destination, checked
    # against the key it publishes.
    auth = key_requests[0]
    assert auth is not None
    assert auth.startswith("X-Matrix ")
    params = dict(p.split("=", 1) for p in auth[len("X-Matrix ") :].split(","))
    params = {k: v.strip('"') for k, v in params.items()}
    assert params["origin"] == server.server_name
    assert params["destination"] == ks.name
    signed = {
        "method": "GET",
        "uri": "/_matrix/key/v2/server",
        "origin": server.server_name,
        "destination": ks.name,
    }
    vk = nacl.signing.VerifyKey(unb64(published["verify_keys"][params["key"]]["key"]))
    vk.verify(canonicaljson.encode_canonical_json(signed), unb64(params["sig"]))
    # Again: the key is remembered.
    with server.client() as c:
        r = c.get(uri, headers={"Authorization": x_matrix(ks, server.server_name, "GET", uri)})
    assert r.status_code == 200
    assert len([p for p, _ in ks.seen if p == "/_matrix/key/v2/server"]) == 1


def test_bad_signatures_and_destinations_are_refused(setup) -> None:
    server, ks = setup
    uri = _profile_uri(server)
    other = KeyServer(ks.tls, port=1)  # nothing listens there: its key cannot be found
    cases = {
        "none": None,
        "wrong destination": x_matrix(ks, "elsewhere.example", "GET", uri),
        "signed for another path": x_matrix(ks, server.server_name, "GET", uri + "&x=1"),
        "unknown server": x_matrix(other, server.server_name, "GET", uri),
    }
    with server.client() as c:
        for name, header in cases.items():
            headers = {} if header is None else {"Authorization": header}
            r = c.get(uri, headers=headers)
            assert (r.status_code, r.json()["errcode"]) == (401, "M_UNAUTHORIZED"), name
        # Unreadable headers: 400, as Synapse (SyTest "Non-numeric ports in server
        # names are rejected").
        for header in (
            "X-Matrix origin=",
            'X-Matrix origin="localhost:http",key="ed25519:1",sig="c2ln"',
        ):
            r = c.get(uri, headers={"Authorization": header})
            assert (r.status_code, r.json()["errcode"]) == (400, "M_UNAUTHORIZED"), header


def test_notary_answers_for_the_key_server_signed_by_both(setup) -> None:
    server, ks = setup
    with server.client() as c:
        r = c.post(
            "/_matrix/key/v2/query",
            json={"server_keys": {ks.name: {KEY_ID: {"minimum_valid_until_ts": 0}}}},
        )
        published = c.get("/_matrix/key/v2/server").json()
    assert r.status_code == 200
    (entry,) = r.json()["server_keys"]
    body = canonicaljson.encode_canonical_json(
        {k: v for k, v in entry.items() if k not in ("signatures", "unsigned")}
    )
    nacl.signing.VerifyKey(bytes(ks.key.verify_key)).verify(
        body, unb64(entry["signatures"][ks.name][KEY_ID])
    )
    ((our_id, ours),) = published["verify_keys"].items()
    nacl.signing.VerifyKey(unb64(ours["key"])).verify(
        body, unb64(entry["signatures"][server.server_name][our_id])
    )


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/_matrix/federation/v1/unknown_endpoint", 404),
        ("GET", "/_matrix/federation/v1/invite/!r:x/$e", 405),
        ("GET", "/_matrix/key/v2/unknown", 404),
        ("POST", "/_matrix/federation/v1/query/profile", 405),
        ("DELETE", "/_matrix/key/v2/server", 405),
    ],
)
def test_unknown_federation_endpoints(setup, method: str, path: str, status: int) -> None:
    server, _ = setup
    with server.client() as c:
        r = c.request(method, path)
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["errcode"] == "M_UNRECOGNIZED"


def test_keys_survive_a_restart(tmp_path: Path) -> None:
    """The key learnt before a restart still checks requests when its server is down."""
    with key_server(tmp_path) as ks:
        config = make_config(tmp_path, ip_range_whitelist=["127.0.0.1/32"])
        env = {"SSL_CERT_FILE": str(ks.tls.ca_file)}
        with running_server(config, env=env) as server:
            server.register("alice")
            uri = _profile_uri(server)
            with server.client() as c:
                auth = x_matrix(ks, server.server_name, "GET", uri)
                assert c.get(uri, headers={"Authorization": auth}).status_code == 200
        ks.up = False
        with running_server(config, env=env) as server, server.client() as c:
            auth = x_matrix(ks, server.server_name, "GET", uri)
            assert c.get(uri, headers={"Authorization": auth}).status_code == 200
        assert len(ks.seen) == 1


def test_published_keys_honour_the_config(tmp_path: Path) -> None:
    old = nacl.signing.SigningKey.generate()
    config = make_config(
        tmp_path,
        key_refresh_interval="2h",
        old_signing_keys={"ed25519:old": {"key": b64(bytes(old.verify_key)), "expired_ts": 1234}},
    )
    with running_server(config) as server, server.client() as c:
        body = c.get("/_matrix/key/v2/server").json()
    assert body["old_verify_keys"] == {
        "ed25519:old": {"key": b64(bytes(old.verify_key)), "expired_ts": 1234}
    }
    assert abs(body["valid_until_ts"] - (time.time() * 1000 + 2 * 3600_000)) < 60_000
