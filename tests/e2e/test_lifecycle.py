"""Starting, stopping, crashing and restarting the real server."""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.harness import RunningServer, make_config, running_server, start_server


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    """Register (acknowledged), kill -9 at once, restart: the account and the login work."""
    config = make_config(tmp_path)
    server = start_server(config)
    try:
        users = [f"crash{i}" for i in range(5)]
        for user in users:
            server.register(user, "pw-" + user)
        token = server.login(users[0], "pw-" + users[0]).json()["access_token"]
    finally:
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
    assert server.proc.returncode == -signal.SIGKILL
    with running_server(config) as again:
        for user in users:
            r = again.login(user, "pw-" + user)
            assert r.status_code == 200, r.text
        with again.client() as c:
            r = c.get(
                "/_matrix/client/v3/account/whoami", headers={"Authorization": f"Bearer {token}"}
            )
        assert r.status_code == 200


def test_sigterm_shuts_down_cleanly(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    server = start_server(config)
    server.register("alice")
    started = time.monotonic()
    code = server.stop(signal.SIGTERM)
    assert code == 0
    assert time.monotonic() - started < 15
    log = server.log_text()
    assert "shutting down" in log
    assert "database closed" in log
    assert "Traceback" not in log
    db = tmp_path / "data" / "homeserver.db"
    wal = db.with_name(db.name + "-wal")
    # The WAL was checkpointed into the main file.
    assert not wal.exists() or wal.stat().st_size == 0
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 1


def test_refuses_database_from_newer_code(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with running_server(config):
        pass
    db = tmp_path / "data" / "homeserver.db"
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'from_the_future', 0)")
    conn.commit()
    conn.close()
    proc = subprocess.run(
        [sys.executable, "-m", "pocketserver", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "newer" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_config_value_names_the_key(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["listeners"][0]["port"] = "eighty"
    data["not_a_real_key"] = 1
    config.write_text(yaml.safe_dump(data))
    proc = subprocess.run(
        [sys.executable, "-m", "pocketserver", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "listeners[0].port" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_key_is_a_warning(tmp_path: Path) -> None:
    config = make_config(tmp_path, enable_regstration=True)
    with running_server(config) as s:
        assert "enable_regstration" in s.log_text()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    try:
        config = make_config(tmp_path)
        data = yaml.safe_load(config.read_text())
        data["listeners"][0]["port"] = blocker.getsockname()[1]
        config.write_text(yaml.safe_dump(data))
        proc = subprocess.run(
            [sys.executable, "-m", "pocketserver", "run", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        blocker.close()
    assert proc.returncode != 0
    assert "cannot listen" in proc.stderr
    assert "Traceback" not in proc.stderr


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_tryout_default_without_config(tmp_path: Path) -> None:
    """`run` in an empty folder: localhost on 127.0.0.1:8008, data in ./pocket-data/."""
    if not _port_free(8008):
        pytest.skip("port 8008 is in use on this machine")
    server = start_server(
        tmp_path / "homeserver.yaml",  # does not exist: only names where the log goes
        command=[sys.executable, "-m", "pocketserver", "run"],
        cwd=tmp_path,
    )
    try:
        assert server.base_url == "http://127.0.0.1:8008"
        assert "try-out" in server.log_text()
        generated = yaml.safe_load((tmp_path / "pocket-data" / "homeserver.yaml").read_text())
        assert generated["server_name"] == "localhost"
        # register-user finds the try-out config by itself.
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pocketserver",
                "register-user",
                "-u",
                "tryme",
                "-p",
                "pw",
                "--no-admin",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, proc.stderr
        server.config = generated
        assert server.login("tryme", "pw").status_code == 200
    finally:
        assert server.stop() == 0
    assert (tmp_path / "pocket-data" / "homeserver.db").exists()


def _long_poll_in_background(server: RunningServer, token: str) -> tuple[threading.Thread, dict]:
    """Start a /sync long-poll (30 s) that nothing will wake, as an idle Element does."""
    headers = {"Authorization": f"Bearer {token}"}
    with server.client() as c:
        since = c.get("/_matrix/client/v3/sync", headers=headers).json()["next_batch"]
    result: dict[str, object] = {}

    def poll() -> None:
        with server.client() as c:
            try:
                r = c.get(
                    "/_matrix/client/v3/sync",
                    params={"since": since, "timeout": 30000},
                    headers=headers,
                )
                result["status"] = r.status_code
            except httpx.HTTPError as e:
                result["error"] = repr(e)

    thread = threading.Thread(target=poll)
    thread.start()
    return thread, result


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_answers_long_polls_at_once(tmp_path: Path, sig: signal.Signals) -> None:
    """A waiting /sync no longer holds the shutdown for the 10 s grace period; exit 0."""
    server = start_server(make_config(tmp_path))
    try:
        server.register("alice")
        token = server.login("alice").json()["access_token"]
        thread, result = _long_poll_in_background(server, token)
        time.sleep(0.5)  # the request is waiting in the server
        assert thread.is_alive()
        started = time.monotonic()
        server.proc.send_signal(sig)
        code = server.proc.wait(20)
        took = time.monotonic() - started
        thread.join(10)
    finally:
        server.stop()
    assert code == 0, server.log_text()
    assert took < 2.0, took  # typically 0.05 s; was 10 s
    assert result == {"status": 200}
    log = server.log_text()
    assert "database closed" in log
    assert "Traceback" not in log


def test_second_sigint_stops_at_once(tmp_path: Path) -> None:
    """An upload still arriving holds a graceful shutdown (up to 10 s); a second ^C
    stops at once, still closing the database."""
    server = start_server(make_config(tmp_path))
    try:
        server.register("alice")
        token = server.login("alice").json()["access_token"]
        host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
        upload = socket.create_connection((host, int(port)))
        upload.sendall(
            b"POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n"
            + b"x"
            * 1000
        )
        time.sleep(0.5)
        server.proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
        assert server.proc.poll() is None, "the first ^C waits for the upload in flight"
        started = time.monotonic()
        server.proc.send_signal(signal.SIGINT)
        code = server.proc.wait(20)
        took = time.monotonic() - started
        upload.close()
    finally:
        server.stop()
    assert took < 2.0, took
    assert code == 130
    log = server.log_text()
    assert "again" in log
    assert "database closed" in log
