"""The README's reverse-proxy recipes, run as written with Debian's caddy and nginx.

Each recipe is the code block after a `<!-- reverse-proxy-test: NAME -->` comment in
README.md. Only its placeholders are replaced: the domain `example.com` by a loopback
address, the proxy's port 443 by a free loopback port (nginx: `listen 127.0.0.1:PORT`
and `[::1]:PORT`), pocketserver's `127.0.0.1:8008` by the real server's port, and the
certificate paths by a throwaway CA's. Caddy runs plain HTTP (an `http://` site
address: no ACME), with a global block that turns its admin port off and binds
loopback; nginx runs the recipe inside a minimal nginx.conf of its own (pid, logs and
temp files in the test's folder) with TLS.

A client then does what Element does: GET /.well-known/matrix/client from the proxy,
takes base_url, logs in through it, and chats. It connects from 127.0.0.2 and sends a
made-up X-Forwarded-For, to show the recipe passes on only the address the proxy saw.

caddy and nginx are installed with apt-get when they are missing and this runs as
root (CI: Debian 12); elsewhere these tests are skipped, saying why.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import yaml

from tests.harness import RunningServer, make_config, running_server

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SNIPPET_RE = r"<!-- reverse-proxy-test: {name} -->\s*\n```[a-z]*\n(.*?)\n```"
CLIENT_ADDRESS = "127.0.0.2"  # the client; the proxy reaches pocketserver from 127.0.0.1


def readme_snippet(name: str) -> str:
    match = re.search(SNIPPET_RE.format(name=name), README.read_text(), re.DOTALL)
    assert match, f"README.md has no code block after <!-- reverse-proxy-test: {name} -->"
    return match[1] + "\n"


@pytest.fixture(scope="session")
def proxies_installed() -> None:
    """caddy and nginx on PATH, installed with apt-get if missing and we are root."""
    missing = [name for name in ("caddy", "nginx") if not _which(name)]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(f"{' and '.join(missing)} not installed (apt-get install caddy nginx)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "caddy", "nginx"]
    result = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:  # an old package list: update it once
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        result = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(_which(name) for name in ("caddy", "nginx"))


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"proxy exited with {proc.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"proxy did not listen on {port}:\n{log.read_text()}")


@dataclass
class CA:
    cafile: Path
    certfile: Path
    keyfile: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cafile))


def _throwaway_ca(folder: Path) -> CA:
    """A CA and a certificate for 127.0.0.1 and localhost signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(subject: str, key, issuer: str, issuer_key, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
            builder = builder.add_extension(usage, critical=True)
        else:
            names = [
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = cert("pocketserver test CA", ca_key, "pocketserver test CA", ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = cert("127.0.0.1", key, "pocketserver test CA", ca_key, ca=False)
    pem = serialization.Encoding.PEM
    paths = CA(folder / "ca.pem", folder / "fullchain.pem", folder / "privkey.pem")
    paths.cafile.write_bytes(ca_cert.public_bytes(pem))
    paths.certfile.write_bytes(leaf.public_bytes(pem) + ca_cert.public_bytes(pem))
    paths.keyfile.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@dataclass
class Proxy:
    url: str  # what the user types: https://example.com (here a loopback address)
    verify: ssl.SSLContext | bool


def _start_caddy(tmp: Path, proxy_port: int, server_port: int) -> tuple[Proxy, list[str], dict]:
    snippet = readme_snippet("caddy")
    assert "example.com {" in snippet
    assert "127.0.0.1:8008" in snippet
    site = snippet.replace("example.com {", f"http://127.0.0.1:{proxy_port} {{")
    site = site.replace("127.0.0.1:8008", f"127.0.0.1:{server_port}")
    # Test-only global options: no admin port, and listen on loopback only.
    (tmp / "Caddyfile").write_text("{\n\tadmin off\n\tdefault_bind 127.0.0.1\n}\n\n" + site)
    env = {
        **os.environ,
        "HOME": str(tmp),
        "XDG_DATA_HOME": str(tmp / "data"),
        "XDG_CONFIG_HOME": str(tmp / "config"),
    }
    command = [_which("caddy") or "caddy", "run", "--config", str(tmp / "Caddyfile")]
    command += ["--adapter", "caddyfile"]
    return Proxy(f"http://127.0.0.1:{proxy_port}", False), command, env


def _start_nginx(tmp: Path, proxy_port: int, server_port: int) -> tuple[Proxy, list[str], dict]:
    snippet = readme_snippet("nginx")
    ca = _throwaway_ca(tmp)
    for placeholder in (
        "listen 443 ssl",
        "listen [::]:443 ssl",
        "/etc/letsencrypt/live/example.com/fullchain.pem",
        "/etc/letsencrypt/live/example.com/privkey.pem",
        "server_name example.com;",
        "127.0.0.1:8008",
    ):
        assert placeholder in snippet, placeholder
    site = snippet.replace("listen 443 ssl", f"listen 127.0.0.1:{proxy_port} ssl")
    ipv6 = f"listen [::1]:{proxy_port} ssl" if _has_ipv6_loopback() else "# no IPv6 here:"
    site = site.replace("listen [::]:443 ssl", ipv6)
    site = site.replace("/etc/letsencrypt/live/example.com/fullchain.pem", str(ca.certfile))
    site = site.replace("/etc/letsencrypt/live/example.com/privkey.pem", str(ca.keyfile))
    site = site.replace("server_name example.com;", "server_name 127.0.0.1;")
    site = site.replace("127.0.0.1:8008", f"127.0.0.1:{server_port}")
    (tmp / "matrix.conf").write_text(site)
    temp = "".join(
        f"    {kind}_temp_path {tmp / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # What /etc/nginx/nginx.conf would be, reduced to this folder.
    (tmp / "nginx.conf").write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"pid {tmp / 'nginx.pid'};\nerror_log {tmp / 'error.log'};\nworker_processes 1;\n"
        + "events { worker_connections 64; }\n"
        + f"http {{\n    access_log {tmp / 'access.log'};\n{temp}"
        + f"    include {tmp / 'matrix.conf'};\n}}\n"
    )
    command = [_which("nginx") or "nginx", "-p", str(tmp), "-c", str(tmp / "nginx.conf")]
    command += ["-e", str(tmp / "error.log"), "-g", "daemon off;"]
    return Proxy(f"https://127.0.0.1:{proxy_port}", ca.context()), command, dict(os.environ)


@dataclass
class Setup:
    server: RunningServer
    proxy: Proxy
    x_forwarded: bool


@pytest.fixture(params=["caddy", "nginx"])
def proxy_name(request: pytest.FixtureRequest, proxies_installed: None) -> str:
    return str(request.param)


@pytest.fixture(params=[True, False], ids=["x_forwarded", "no_x_forwarded"])
def setup(request: pytest.FixtureRequest, proxy_name: str, tmp_path: Path) -> Iterator[Setup]:
    x_forwarded = bool(request.param)
    proxy_port = _free_port()
    scheme = "http" if proxy_name == "caddy" else "https"
    config = make_config(
        tmp_path,
        server_name="127.0.0.1",
        public_baseurl=f"{scheme}://127.0.0.1:{proxy_port}/",
        serve_server_wellknown=True,
    )
    data = yaml.safe_load(config.read_text())
    data["listeners"][0]["x_forwarded"] = x_forwarded
    config.write_text(yaml.safe_dump(data))
    with running_server(config) as server:
        server_port = int(server.base_url.rsplit(":", 1)[1])
        folder = tmp_path / proxy_name
        folder.mkdir()
        start = _start_caddy if proxy_name == "caddy" else _start_nginx
        proxy, command, env = start(folder, proxy_port, server_port)
        log = folder / "proxy.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        try:
            _wait_for_port(proxy_port, proc, log)
            yield Setup(server, proxy, x_forwarded)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert "Traceback" not in server.log_text(), server.log_text()


def _client(base_url: str, verify: ssl.SSLContext | bool, token: str | None = None):
    transport = httpx.HTTPTransport(local_address=CLIENT_ADDRESS, verify=verify)
    headers = {"X-Forwarded-For": "203.0.113.7"}  # made up by the client
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(
        base_url=base_url, transport=transport, verify=verify, headers=headers, timeout=30
    )


def test_login_and_chat_through_the_readme_proxy_after_discovery(setup: Setup) -> None:
    server, proxy = setup.server, setup.proxy
    server.register("alice", "proxy password")

    # Discovery, as Element does it from the server name the user typed.
    with _client(proxy.url, proxy.verify) as c:
        r = c.get("/.well-known/matrix/client")
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == "*"  # Element Web elsewhere
        base_url = r.json()["m.homeserver"]["base_url"]
        assert base_url == proxy.url + "/"
        r = c.get("/.well-known/matrix/server")
        assert r.status_code == 200, r.text
        assert r.json() == {"m.server": proxy.url.split("://")[1]}

    with _client(base_url.rstrip("/"), proxy.verify) as c:
        assert c.get("/_matrix/client/versions").status_code == 200
        login = c.post(
            "/_matrix/client/v3/login",
            json={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "alice"},
                "password": "proxy password",
            },
        )
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        device_id = login.json()["device_id"]
        # /_synapse/client/ reaches pocketserver (a Matrix error, not the proxy's page).
        r = c.get("/_synapse/client/nothing-here")
        assert r.status_code == 404
        assert r.json()["errcode"] == "M_UNRECOGNIZED"
        # The admin API is not published through the proxy.
        r = c.get("/_synapse/admin/v1/register")
        assert "nonce" not in r.text

    with _client(base_url.rstrip("/"), proxy.verify, token) as c:
        room = c.post("/_matrix/client/v3/createRoom", json={"name": "behind a proxy"})
        assert room.status_code == 200, room.text
        room_id = room.json()["room_id"]
        sent = c.put(
            f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1",
            json={"msgtype": "m.text", "body": "through the proxy"},
        )
        assert sent.status_code == 200, sent.text
        synced = c.get("/_matrix/client/v3/sync", params={"timeout": "0"})
        assert synced.status_code == 200, synced.text
        timeline = synced.json()["rooms"]["join"][room_id]["timeline"]["events"]
        assert sent.json()["event_id"] in [e["event_id"] for e in timeline]
        # A long-poll is held open and answered when it times out.
        start = time.monotonic()
        polled = c.get(
            "/_matrix/client/v3/sync",
            params={"timeout": "1500", "since": synced.json()["next_batch"]},
        )
        assert polled.status_code == 200, polled.text
        assert time.monotonic() - start >= 1.2
        # Uploads larger than nginx's default 1 MB limit go through.
        upload = c.post(
            "/_matrix/media/v3/upload",
            content=os.urandom(2 * 1024 * 1024),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert upload.status_code == 200, upload.text
        assert upload.json()["content_uri"].startswith("mxc://")

        # Room version 3 event IDs may hold "/", sent as %2F: the proxy must pass the
        # path on as the client sent it.
        v3 = c.post("/_matrix/client/v3/createRoom", json={"room_version": "3"})
        assert v3.status_code == 200, v3.text
        v3_room = v3.json()["room_id"]
        for txn in range(60):
            event_id = c.put(
                f"/_matrix/client/v3/rooms/{v3_room}/send/m.room.message/s{txn}",
                json={"msgtype": "m.text", "body": str(txn)},
            ).json()["event_id"]
            if "/" in event_id:
                break
        assert "/" in event_id
        r = c.get(f"/_matrix/client/v3/rooms/{v3_room}/event/{quote(event_id, safe='')}")
        assert r.status_code == 200, r.text
        assert r.json()["event_id"] == event_id

        # Which address pocketserver saw: the proxy's own, or what the proxy forwarded.
        # Never the one the client made up.
        expected = CLIENT_ADDRESS if setup.x_forwarded else "127.0.0.1"
        deadline = time.monotonic() + 10
        while True:
            device = c.get(f"/_matrix/client/v3/devices/{device_id}").json()
            if device.get("last_seen_ip") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert device["last_seen_ip"] == expected
