"""The three servers of ``demo``: their ports, configs and processes.

Server N (1, 2, 3) is named ``127.0.0.1:F`` where F is its federation port: an IP literal
with a port, so the servers find each other without DNS or ``.well-known``
(server-server-api.md "Resolving server names", step 2). F is a TLS listener (federation,
keys, and the client API for clients that trust the demo's CA); a plain HTTP listener on
another port serves clients (Element and friends will not trust a throw-away CA).
Each server trusts the demo's CA for its outbound federation requests
(``federation_custom_ca_list``) and may reach loopback addresses
(``ip_range_whitelist``): nothing leaves 127.0.0.1.

Each server is its own ``pocket.pyz run`` process (or ``python -m pocketserver run``):
the same server a user runs, one process and database each, stopped with SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from pocketserver.cli.demo_tls import DemoCertificates
from pocketserver.config.generate import generate

HOST = "127.0.0.1"
COUNT = 3
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


class DemoError(Exception):
    """The demo cannot go on; the message says why."""


@dataclass(frozen=True)
class Ports:
    federation: int
    client: int


@dataclass
class DemoServer:
    number: int
    ports: Ports
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def server_name(self) -> str:
        return f"{HOST}:{self.ports.federation}"

    @property
    def client_url(self) -> str:
        return f"http://{HOST}:{self.ports.client}"

    @property
    def federation_url(self) -> str:
        return f"https://{self.server_name}"

    @property
    def config_path(self) -> Path:
        return self.directory / "homeserver.yaml"

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    def config(self) -> dict[str, object]:
        loaded = yaml.safe_load(self.config_path.read_text())
        assert isinstance(loaded, dict)
        return loaded


def _free(port: int) -> bool:
    """Whether the server could listen on ``port`` (SO_REUSEADDR, as its listener sets:
    connections of an earlier run in TIME-WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _any_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _ephemeral_floor() -> int:
    """The lowest port the system hands to outgoing connections (Linux; else 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _ports_from(base: int) -> list[Ports]:
    return [Ports(base + i, base + COUNT + i) for i in range(COUNT)]


def choose_ports(base: int) -> tuple[list[Ports], bool]:
    """Federation ports ``base``..``base+2`` and client ports ``base+3``..``base+5``; if
    one of them is taken, six free ones in a row picked at random below the ephemeral
    range (where outgoing connections cannot take them before the next run of a kept
    directory), else any the system gives. Returns the ports and whether they are the
    asked ones."""
    wanted = _ports_from(base)
    if all(_free(p.federation) and _free(p.client) for p in wanted):
        return wanted, True
    floor = _ephemeral_floor()
    for _ in range(100):
        other = secrets.randbelow(max(1, floor - 10_000 - 2 * COUNT)) + 10_000
        if all(_free(other + i) for i in range(2 * COUNT)):
            return _ports_from(other), False
    picked: set[int] = set()
    while len(picked) < 2 * COUNT:
        picked.add(_any_free_port())
    numbers = sorted(picked)
    return [Ports(numbers[i], numbers[COUNT + i]) for i in range(COUNT)], False


def check_ports_free(servers: list[DemoServer]) -> None:
    """Raises DemoError if a port of an earlier run (kept in ``--dir``) is taken now."""
    for s in servers:
        for port in (s.ports.federation, s.ports.client):
            if not _free(port):
                raise DemoError(
                    f"port {port} of server {s.number} ({s.server_name}) is in use: is the "
                    "demo already running with this directory? (its server names, and so "
                    "its ports, are fixed when the directory is made)"
                )


def write_config(server: DemoServer, certs: DemoCertificates) -> None:
    """The server's config (generated as by ``--generate-config``, then shaped for the
    demo); an existing one, from an earlier run in the same directory, is kept."""
    if server.config_path.exists():
        return
    generate(
        server.server_name,
        server.config_path,
        server.directory / "data",
        public_baseurl=f"{server.client_url}/",
    )
    data = server.config()
    data["listeners"] = [
        {
            "port": server.ports.client,
            "bind_addresses": [HOST],
            "type": "http",
            "tls": False,
            "x_forwarded": False,
            "resources": [{"names": ["client", "media"]}],
        },
        {
            "port": server.ports.federation,
            "bind_addresses": [HOST],
            "type": "http",
            "tls": True,
            "x_forwarded": False,
            "resources": [{"names": ["client", "federation", "keys", "media", "openid"]}],
        },
    ]
    data["tls_certificate_path"] = str(certs.certificate)
    data["tls_private_key_path"] = str(certs.private_key)
    data["federation_custom_ca_list"] = [str(certs.ca)]
    data["ip_range_whitelist"] = ["127.0.0.0/8"]
    data["trusted_key_servers"] = []  # keys come from each server itself: no matrix.org
    server.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    server.config_path.chmod(0o600)


def server_command() -> list[str]:
    """How to run this same pocketserver: the pyz that is running, or the package."""
    program = sys.argv[0] if sys.argv else ""
    if program and os.path.isfile(program) and zipfile.is_zipfile(program):
        return [sys.executable, os.path.abspath(program)]
    return [sys.executable, "-m", "pocketserver"]


def start(server: DemoServer) -> None:
    """Start the server's process, in its own session: a Ctrl-C in the terminal reaches
    only the demo, which then stops the servers one signal each (a second signal would
    make a server stop without waiting for its requests)."""
    with server.log_path.open("ab") as log:
        server.proc = subprocess.Popen(
            [*server_command(), "run", "-c", str(server.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=server.directory,
            start_new_session=True,
        )


def wait_ready(servers: list[DemoServer]) -> None:
    """Wait until every server answers ``/_matrix/client/versions``.

    Raises:
        DemoError: a server exited, or did not answer in ``START_TIMEOUT_S``.
    """
    import httpx

    deadline = time.monotonic() + START_TIMEOUT_S
    waiting = list(servers)
    with httpx.Client(timeout=5.0) as http:
        while waiting:
            server = waiting[0]
            assert server.proc is not None
            if server.proc.poll() is not None:
                raise DemoError(
                    f"server {server.number} exited with {server.proc.returncode}; "
                    f"its log ({server.log_path}) ends:\n{_tail(server.log_path)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if http.get(f"{server.client_url}/_matrix/client/versions").status_code == 200:
                    waiting.pop(0)
                    continue
            if time.monotonic() > deadline:
                raise DemoError(
                    f"server {server.number} did not start in {START_TIMEOUT_S:.0f}s; "
                    f"its log ({server.log_path}) ends:\n{_tail(server.log_path)}"
                )
            time.sleep(0.2)


def stop_all(servers: list[DemoServer], hurry: Callable[[], bool] = lambda: False) -> None:
    """SIGTERM to every running server (each shuts down gracefully), then wait for them;
    those still running after ``STOP_TIMEOUT_S``, or once ``hurry()`` says so (a second
    Ctrl-C), are killed."""
    running = [s.proc for s in servers if s.proc is not None and s.proc.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(proc.poll() is None for proc in running):
        if time.monotonic() > deadline or hurry():
            for proc in running:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            return
        time.sleep(0.1)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
