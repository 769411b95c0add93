"""A small identity server (Identity Service API v2) over HTTPS on 127.0.0.1, in a thread.

It serves what a homeserver asks for during third-party invites: ``hash_details``,
``lookup`` (sha256 and none), ``store-invite`` and ``pubkey/isvalid``; it records every
request, and it plays the identity server's side of a binding (``onbind``, signed with
its long-term key). Written from identity-service-api.md, independent of pocketserver's
code; the certificates come from :func:`make_tls`.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import canonicaljson
import httpx
import nacl.signing

ACCESS_TOKEN = "id-token-swordfish"
PEPPER = "pepper-matrixrocks"
PREFIX = "/_matrix/identity/v2"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def sign(obj: dict, key: nacl.signing.SigningKey, origin: str, key_id: str = "ed25519:0") -> None:
    """Sign ``obj`` in place (appendices "Signing JSON")."""
    unsigned = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    sig = key.sign(canonicaljson.encode_canonical_json(unsigned)).signature
    obj.setdefault("signatures", {}).setdefault(origin, {})[key_id] = b64(sig)


@dataclass
class Tls:
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_tls(directory: Path, name: str = "test") -> Tls:
    """A CA and a certificate it signs for 127.0.0.1 / localhost, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    tls = Tls(
        directory / f"{name}-ca.pem", directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    )
    tls.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    tls.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tls


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None
    body: object


@dataclass
class FakeIdentityServer:
    tls: Tls
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    bindings: dict[str, str] = field(default_factory=dict)
    """``"<address> <medium>"`` -> user ID."""
    invites: list[dict] = field(default_factory=list)
    long_term: nacl.signing.SigningKey = field(default_factory=nacl.signing.SigningKey.generate)
    ephemeral: nacl.signing.SigningKey = field(default_factory=nacl.signing.SigningKey.generate)
    revoked: set[str] = field(default_factory=set)
    _next_token: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return f"127.0.0.1:{self.port}"

    def public_keys(self) -> dict[str, str]:
        return {
            "ed25519:0": b64(bytes(self.long_term.verify_key)),
            "ed25519:ephemeral": b64(bytes(self.ephemeral.verify_key)),
        }

    def rotate_keys(self) -> None:
        """New keys; the old ones are no longer valid (isvalid answers false)."""
        self.revoked.update(self.public_keys().values())
        self.long_term = nacl.signing.SigningKey.generate()
        self.ephemeral = nacl.signing.SigningKey.generate()

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]

    def bind(self, address: str, user_id: str, medium: str = "email") -> None:
        self.bindings[f"{address} {medium}"] = user_id

    def onbind_body(self, address: str, user_id: str, medium: str = "email") -> dict:
        """Bind and build the ``/3pid/onbind`` notification with the stored invites for
        ``address``, each ``signed`` with the long-term key."""
        self.bind(address, user_id, medium)
        invites = []
        for invite in self.invites:
            if invite["address"] == address and invite["medium"] == medium:
                signed = {"mxid": user_id, "token": invite["token"]}
                sign(signed, self.long_term, self.name)
                invites.append({**invite, "mxid": user_id, "signed": signed})
        body = {"medium": medium, "address": address, "mxid": user_id, "invites": invites}
        sign(body, self.long_term, self.name)
        return body

    def token_for(self, room_id: str) -> str:
        return next(i["token"] for i in self.invites if i["room_id"] == room_id)

    # --- the HTTP side -----------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict, auth: str | None, body: object):
        with self._lock:
            self.seen.append(Seen(method, path, query, auth, body))
        if path == f"{PREFIX}/pubkey/isvalid":
            key = (query.get("public_key") or [""])[0]
            valid = key in self.public_keys().values() and key not in self.revoked
            return 200, {"valid": valid}
        if auth != f"Bearer {ACCESS_TOKEN}":
            return 401, {"errcode": "M_UNAUTHORIZED", "error": "bad token"}
        if path == f"{PREFIX}/hash_details" and method == "GET":
            return 200, {"algorithms": ["none", "sha256"], "lookup_pepper": PEPPER}
        if path == f"{PREFIX}/lookup" and method == "POST":
            return self._lookup(body)
        if path == f"{PREFIX}/store-invite" and method == "POST":
            return self._store_invite(body)
        return 404, {"errcode": "M_UNRECOGNIZED", "error": "unknown path"}

    def _lookup(self, body: object):
        assert isinstance(body, dict)
        if body.get("pepper") != PEPPER:
            return 400, {"errcode": "M_INVALID_PEPPER", "error": "wrong pepper"}
        mappings = {}
        for value in body.get("addresses", []):
            for plain, user_id in self.bindings.items():
                digest = hashlib.sha256(f"{plain} {PEPPER}".encode()).digest()
                hashed = base64.urlsafe_b64encode(digest).decode().rstrip("=")
                wanted = hashed if body.get("algorithm") == "sha256" else plain
                if value == wanted:
                    mappings[value] = user_id
        return 200, {"mappings": mappings}

    def _store_invite(self, body: object):
        assert isinstance(body, dict)
        for key in ("medium", "address", "room_id", "sender"):
            if not isinstance(body.get(key), str):
                return 400, {"errcode": "M_MISSING_PARAMS", "error": key}
        with self._lock:
            self._next_token += 1
            token = f"tok{self._next_token}"
        self.invites.append({**body, "token": token})
        url = f"https://{self.name}{PREFIX}/pubkey/isvalid"
        keys = self.public_keys()
        return 200, {
            "token": token,
            "display_name": "l...@m...",
            "public_keys": [
                {"public_key": keys["ed25519:0"], "key_validity_url": url},
                {"public_key": keys["ed25519:ephemeral"], "key_validity_url": url},
            ],
        }


def _handler(fake: FakeIdentityServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            status, answer = fake.handle(
                method, parts.path, parse_qs(parts.query), self.headers.get("Authorization"), body
            )
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextlib.contextmanager
def serving(fake: FakeIdentityServer) -> Iterator[FakeIdentityServer]:
    """Serve ``fake`` over HTTPS on 127.0.0.1 until the block ends."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(fake.tls.cert_file, fake.tls.key_file)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    fake.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()


def post_onbind(base_url: str, body: dict, method: str = "PUT") -> httpx.Response:
    """The identity server's call to the homeserver (server-server-api "3pid/onbind")."""
    with httpx.Client(base_url=base_url, timeout=30.0) as c:
        return c.request(method, "/_matrix/federation/v1/3pid/onbind", json=body)
