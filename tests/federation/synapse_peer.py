"""A real Synapse on a loopback address, as the federation peer of end-to-end tests.

Synapse is a test dependency (``matrix-synapse`` in the ``test`` extra), so CI needs
nothing installed by hand. Each peer gets:

- an IP-literal server name with an explicit port (``127.0.0.1:PORT``), so server
  discovery needs no DNS (server-server-api.md "Resolving server names": an IP literal
  with a port is used as is);
- a TLS listener with a certificate for that IP issued by a throw-away test CA
  (:class:`TestCA`, trustme), which it also trusts for its outbound federation
  requests (``federation_custom_ca_list``);
- ``ip_range_blacklist`` emptied and ``ip_range_whitelist`` set to loopback, so it may
  talk to the other loopback servers and nothing else matters (tests never send
  traffic outside 127.0.0.0/8);
- no trusted key servers (keys are fetched from each server directly), a SQLite
  database, relaxed rate limits and a registration shared secret.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import trustme
import yaml

from tests.harness import registration_mac_for_tests

SYNAPSE_START_TIMEOUT_S = 90.0


class TestCA:
    """A throw-away certificate authority for one test session (trustme)."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._ca = trustme.CA()
        self.ca_path = directory / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_path))

    def issue(self, host: str, name: str) -> tuple[Path, Path]:
        """Issue a certificate for ``host`` (an IP address or DNS name); return
        ``(certificate chain path, private key path)``."""
        cert = self._ca.issue_cert(host)
        chain = self.directory / f"{name}.crt"
        key = self.directory / f"{name}.key"
        chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(key))
        key.chmod(0o600)
        return chain, key


def trusting(ca_path: Path) -> ssl.SSLContext:
    """A client TLS context that trusts only the test CA."""
    return ssl.create_default_context(cafile=str(ca_path))


def free_port(host: str) -> int:
    """A TCP port free on ``host`` right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class SynapsePeer:
    proc: subprocess.Popen[bytes]
    directory: Path
    host: str
    port: int
    shared_secret: str
    ca_path: Path

    @property
    def server_name(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, verify=trusting(self.ca_path), timeout=60.0)

    def log_text(self) -> str:
        path = self.directory / "homeserver.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def register(self, localpart: str, password: str = "correct horse") -> dict[str, str]:
        """Register a user through Synapse's shared-secret admin API; return its answer
        (``user_id``, ``access_token``, ``device_id``)."""
        with self.client() as c:
            nonce = c.get("/_synapse/admin/v1/register").json()["nonce"]
            mac = registration_mac_for_tests(
                self.shared_secret, nonce, localpart, password, admin=False
            )
            r = c.post(
                "/_synapse/admin/v1/register",
                json={
                    "nonce": nonce,
                    "username": localpart,
                    "password": password,
                    "admin": False,
                    "mac": mac,
                },
            )
        assert r.status_code == 200, r.text
        return dict(r.json())

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _fast() -> dict[str, float]:
    return {"per_second": 1000, "burst_count": 1000}


def synapse_config(directory: Path, host: str, port: int, ca: TestCA, **overrides: object) -> Path:
    """Generate Synapse's own config with its CLI, then shape it for the tests."""
    server_name = f"{host}:{port}"
    path = directory / "homeserver.yaml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "synapse.app.homeserver",
            "--server-name",
            server_name,
            "--config-path",
            str(path),
            "--generate-config",
            "--report-stats=no",
            "--data-directory",
            str(directory),
        ],
        check=True,
        capture_output=True,
        cwd=directory,
    )
    cert, key = ca.issue(host, "synapse")
    data = yaml.safe_load(path.read_text())
    data["listeners"] = [
        {
            "port": port,
            "bind_addresses": [host],
            "type": "http",
            "tls": True,
            "x_forwarded": False,
            "resources": [{"names": ["client", "federation"], "compress": False}],
        }
    ]
    log_config = directory / "log.config"
    log_config.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "formatters": {"f": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
                "handlers": {
                    "file": {
                        "class": "logging.FileHandler",
                        "filename": str(directory / "homeserver.log"),
                        "formatter": "f",
                    }
                },
                "root": {"level": "INFO", "handlers": ["file"]},
                "disable_existing_loggers": False,
            }
        )
    )
    data.update(
        {
            "log_config": str(log_config),
            "tls_certificate_path": str(cert),
            "tls_private_key_path": str(key),
            "federation_custom_ca_list": [str(ca.ca_path)],
            "federation_verify_certificates": True,
            # Loopback only: the other test servers live on 127.0.0.0/8.
            "ip_range_blacklist": [],
            "ip_range_whitelist": ["127.0.0.0/8"],
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "enable_registration": False,
            "report_stats": False,
            "rc_message": _fast(),
            "rc_registration": _fast(),
            "rc_login": {"address": _fast(), "account": _fast(), "failed_attempts": _fast()},
            "rc_joins": {"local": _fast(), "remote": _fast()},
            "rc_invites": {"per_room": _fast(), "per_user": _fast(), "per_sender": _fast()},
            "rc_federation": {
                "window_size": 1000,
                "sleep_limit": 1000,
                "sleep_delay": 0,
                "reject_limit": 1000,
                "concurrent": 100,
            },
            "presence": {"enabled": True},
            "url_preview_enabled": False,
        }
    )
    data.update(overrides)
    path.write_text(yaml.safe_dump(data))
    return path


def start_synapse(
    directory: Path, ca: TestCA, host: str = "127.0.0.1", **overrides: object
) -> SynapsePeer:
    """Start Synapse on ``host`` (a loopback address) and wait until it answers."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port(host)
    synapse_config(directory, host, port, ca, **overrides)
    return restart_synapse(directory, ca, host, port)


def restart_synapse(directory: Path, ca: TestCA, host: str, port: int) -> SynapsePeer:
    """Start Synapse with the config and data already in ``directory`` (after
    :meth:`SynapsePeer.stop`: the same server, database and port)."""
    path = directory / "homeserver.yaml"
    data = yaml.safe_load(path.read_text())
    out = (directory / "stdout.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "synapse.app.homeserver", "-c", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=directory,
        env={**os.environ, "SYNAPSE_ASYNC_IO_REACTOR": "0"},
    )
    out.close()
    peer = SynapsePeer(
        proc, directory, host, port, str(data["registration_shared_secret"]), ca.ca_path
    )
    deadline = time.monotonic() + SYNAPSE_START_TIMEOUT_S
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: peer.stop() if deadline else None)
        c = stack.enter_context(peer.client())
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"Synapse exited with {proc.returncode}:\n"
                    + (directory / "stdout.log").read_text(errors="replace")[-4000:]
                    + peer.log_text()[-4000:]
                )
            with contextlib.suppress(httpx.TransportError):
                if c.get("/health").status_code == 200:
                    deadline = 0.0  # started: leave it running
                    return peer
            time.sleep(0.2)
    raise RuntimeError(
        f"Synapse did not start in {SYNAPSE_START_TIMEOUT_S}s:\n{peer.log_text()[-4000:]}"
    )


@contextlib.contextmanager
def running_synapse(directory: Path, ca: TestCA, **kwargs: object) -> Iterator[SynapsePeer]:
    peer = start_synapse(directory, ca, **kwargs)  # type: ignore[arg-type]
    try:
        yield peer
    finally:
        peer.stop()
