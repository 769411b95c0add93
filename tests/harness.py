"""Start the real server as a subprocess on a loopback port, for end-to-end tests and benches."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from pocketserver.config.generate import generate

_LISTEN_RE = re.compile(r"listening on (\S+) for")
READY_MARK = "is ready"


def make_config(directory: Path, server_name: str = "test.local", **overrides: object) -> Path:
    """Generate a real config in ``directory`` and adjust it for tests.

    The listener binds 127.0.0.1 on port 0, bcrypt is cheap, and ``overrides``
    replace top-level keys.
    """
    path = directory / "homeserver.yaml"
    generate(server_name, path, directory / "data")
    data = yaml.safe_load(path.read_text())
    data["listeners"][0]["port"] = 0
    data["bcrypt_rounds"] = 4
    data["log_level"] = "INFO"
    # Tests read the servers' logs for every request's line (the default logs only
    # failed and slow ones at INFO).
    data["access_log_level"] = "INFO"
    # Tests log in far more often than a person; they test the limiter explicitly.
    data["rc_login"] = {
        k: {"per_second": 1000, "burst_count": 1000}
        for k in ("address", "account", "failed_attempts")
    }
    data["rc_registration"] = {"per_second": 1000, "burst_count": 1000}
    # Likewise they join, invite and create rooms faster than people do.
    fast = {"per_second": 1000, "burst_count": 1000}
    data["rc_joins"] = {"local": fast, "remote": fast}
    data["rc_joins_per_room"] = fast
    data["rc_invites"] = {"per_room": fast, "per_user": fast, "per_issuer": fast}
    data["rc_room_creation"] = fast
    data["rc_media_create"] = fast
    data["rc_presence"] = {"per_user": fast}
    # Tests that turn on enable_registration do it without a token on purpose.
    data["enable_registration_without_verification"] = True
    data.update(overrides)
    path.write_text(yaml.safe_dump(data))
    return path


@dataclass
class RunningServer:
    proc: subprocess.Popen[bytes]
    config_path: Path
    log_path: Path
    base_url: str
    config: dict[str, object] = field(default_factory=dict)

    @property
    def shared_secret(self) -> str:
        return str(self.config["registration_shared_secret"])

    @property
    def server_name(self) -> str:
        return str(self.config["server_name"])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30.0)

    def register(
        self, localpart: str, password: str = "correct horse", admin: bool = False
    ) -> dict[str, str]:
        """Register through the shared-secret admin API; return the JSON answer."""
        with self.client() as c:
            nonce = c.get("/_synapse/admin/v1/register").json()["nonce"]
            mac = registration_mac_for_tests(self.shared_secret, nonce, localpart, password, admin)
            r = c.post(
                "/_synapse/admin/v1/register",
                json={
                    "nonce": nonce,
                    "username": localpart,
                    "password": password,
                    "admin": admin,
                    "mac": mac,
                },
            )
        assert r.status_code == 200, r.text
        return dict(r.json())

    def login(self, user: str, password: str = "correct horse", **extra: object) -> httpx.Response:
        with self.client() as c:
            return c.post(
                "/_matrix/client/v3/login",
                json={
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": user},
                    "password": password,
                    **extra,
                },
            )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def registration_mac_for_tests(
    secret: str, nonce: str, user: str, password: str, admin: bool
) -> str:
    """Written out again from Synapse's documented rule, independent of pocketserver's code."""
    msg = b"\x00".join(
        [nonce.encode(), user.encode(), password.encode(), b"admin" if admin else b"notadmin"]
    )
    return hmac.new(secret.encode(), msg, hashlib.sha1).hexdigest()


def server_command(config_path: Path) -> list[str]:
    return [sys.executable, "-m", "pocketserver", "run", "-c", str(config_path)]


def start_server(
    config_path: Path,
    *,
    command: Sequence[str] | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    log_to: Path | None = None,
) -> RunningServer:
    """Start the server and wait until it logs that it is ready; learn its port from the log.

    ``log_to``: the file the config sends the log to (``log_file``), read instead of
    the server's standard error (which is still kept beside the config).
    """
    stderr_path = config_path.parent / f"server-{time.monotonic_ns()}.log"
    log_path = log_to or stderr_path
    log_file = stderr_path.open("wb")
    proc = subprocess.Popen(
        list(command or server_command(config_path)),
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        cwd=cwd or config_path.parent,
        env={**os.environ, **(env or {})},
    )
    log_file.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        if READY_MARK in text:
            m = _LISTEN_RE.search(text)
            assert m, text
            config = yaml.safe_load(config_path.read_text()) if config_path.exists() else {}
            return RunningServer(proc, config_path, log_path, m.group(1), config)
        if proc.poll() is not None:
            err = stderr_path.read_text(errors="replace")
            raise RuntimeError(f"server exited with {proc.returncode}:\n{text}{err}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server did not start in {timeout}s:\n{text}")


@contextlib.contextmanager
def running_server(config_path: Path, **kwargs: object) -> Iterator[RunningServer]:
    server = start_server(config_path, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()
