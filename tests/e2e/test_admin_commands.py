"""reset-password and register-user as an admin types them, against the real server."""

from __future__ import annotations

import os
import pty
import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import RunningServer, make_config, running_server


def cli(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pocketserver", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def cli_in_terminal(config: Path, answers: list[str], *args: str) -> tuple[int, str]:
    """Run a command on a pseudo-terminal, typing ``answers`` at its prompts (getpass
    reads the terminal, not stdin). Returns the exit code and everything shown."""
    argv = [sys.executable, "-m", "pocketserver", *args, "-c", str(config)]
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execv(sys.executable, argv)
    shown = b""
    pending = list(answers)
    answered = 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
            # Answer each prompt once, when it has appeared (getpass discards what is
            # typed before it turns echo off).
            if pending and shown[answered:].rstrip().endswith(b":"):
                os.write(fd, pending.pop(0).encode() + b"\n")
                answered = len(shown)
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


def whoami(server: RunningServer, token: str) -> int:
    with server.client() as c:
        return c.get(
            "/_matrix/client/v3/account/whoami", headers={"Authorization": f"Bearer {token}"}
        ).status_code


def password_file(tmp_path: Path, password: str) -> Path:
    path = tmp_path / "new-password"
    path.write_text(password + "\n")
    return path


def test_reset_password_while_the_server_runs(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with running_server(config) as server:
        server.register("alice", "old password")
        server.register("bob", "bob's password")
        phone = server.login("alice", "old password", device_id="PHONE").json()
        laptop = server.login(
            "alice", "old password", device_id="LAPTOP", refresh_token=True
        ).json()
        bob = server.login("bob", "bob's password").json()["access_token"]
        # Both tokens used once: the server now has them cached in memory.
        assert whoami(server, phone["access_token"]) == 200
        assert whoami(server, laptop["access_token"]) == 200

        proc = cli(
            config,
            "reset-password",
            "-u",
            "@alice:test.local",
            "--password-file",
            str(password_file(tmp_path, "new password")),
        )
        assert proc.returncode == 0, proc.stderr
        assert "@alice:test.local" in proc.stdout
        assert "3 session(s)" in proc.stdout  # registration logged in too
        assert f"pid {server.proc.pid}" in proc.stdout

        # The running server stops honouring the old tokens (at once, or within its
        # poll of the database: half a second).
        started = time.monotonic()
        while whoami(server, phone["access_token"]) != 401:
            assert time.monotonic() - started < 2.0, "the old token still works"
            time.sleep(0.05)
        assert whoami(server, laptop["access_token"]) == 401
        with server.client() as c:
            r = c.post(
                "/_matrix/client/v3/refresh", json={"refresh_token": laptop["refresh_token"]}
            )
        assert r.status_code == 401, r.text
        assert server.login("alice", "old password").status_code == 403
        new = server.login("alice", "new password")
        assert new.status_code == 200, new.text
        # Other users keep their sessions.
        assert whoami(server, bob) == 200
        # The devices stay listed (their tokens are gone).
        with server.client() as c:
            devices = c.get(
                "/_matrix/client/v3/devices",
                headers={"Authorization": f"Bearer {new.json()['access_token']}"},
            ).json()["devices"]
        assert {"PHONE", "LAPTOP"} <= {d["device_id"] for d in devices}
    assert "Traceback" not in server.log_text()


def test_reset_password_while_the_server_is_stopped(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with running_server(config) as server:
        server.register("alice", "old password")
        token = server.login("alice", "old password").json()["access_token"]
    proc = cli(config, "reset-password", "-u", "alice", "--password-file", "-", stdin="fresh\n")
    assert proc.returncode == 0, proc.stderr
    assert "running server" not in proc.stdout
    with running_server(config) as server:
        assert whoami(server, token) == 401
        assert server.login("alice", "old password").status_code == 403
        assert server.login("alice", "fresh").status_code == 200


def test_reset_password_prompts_twice_without_echo(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with running_server(config) as server:
        server.register("alice", "old password")
    code, shown = cli_in_terminal(
        config, ["typed secretly", "typed secretly"], "reset-password", "-u", "alice"
    )
    assert code == 0, shown
    assert shown.count("assword:") == 2
    assert "typed secretly" not in shown
    with running_server(config) as server:
        assert server.login("alice", "typed secretly").status_code == 200


def test_reset_password_mismatch_changes_nothing(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with running_server(config) as server:
        server.register("alice", "old password")
    db = tmp_path / "data" / "homeserver.db"
    before = sqlite3.connect(db).execute("SELECT password_hash FROM users").fetchall()
    code, shown = cli_in_terminal(config, ["one", "two"], "reset-password", "-u", "alice")
    assert code == 1
    assert shown.strip().splitlines()[-1] == "Passwords do not match"
    assert "error" not in shown.lower()
    assert sqlite3.connect(db).execute("SELECT password_hash FROM users").fetchall() == before


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ("nobody-here", "there is no user @nobody-here:test.local"),
        ("@alice:other.example", "@alice:other.example is a user of another server"),
    ],
)
def test_reset_password_refuses_unknown_users(tmp_path: Path, user: str, message: str) -> None:
    config = make_config(tmp_path)
    with running_server(config) as server:
        server.register("alice", "old password")
    proc = cli(config, "reset-password", "-u", user, "--password-file", "-", stdin="x\n")
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_reset_password_refuses_a_foreign_database(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    db = tmp_path / "data" / "homeserver.db"
    db.parent.mkdir(exist_ok=True)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE users (name TEXT, password_hash TEXT)")
    conn.execute("INSERT INTO users VALUES ('@alice:test.local', 'x')")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    proc = cli(config, "reset-password", "-u", "alice", "--password-file", "-", stdin="x\n")
    assert proc.returncode == 1
    assert "not a pocketserver database" in proc.stderr
    assert db.read_bytes() == before


# --- register-user -------------------------------------------------------------------


def test_register_user_takes_a_user_id_of_this_server(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with running_server(config) as server:
        url = server.base_url  # the config's port is 0: give the real one
        ok = cli(config, "register-user", "-u", "@carol:test.local", "-p", "pw", "--no-admin", url)
        assert ok.returncode == 0, ok.stderr
        assert "@carol:test.local" in ok.stdout
        assert server.login("carol", "pw").status_code == 200
        other = cli(
            config, "register-user", "-u", "@dave:example.com", "-p", "pw", "--no-admin", url
        )
        assert other.returncode == 1
        assert "@dave:example.com is a user of another server" in other.stderr
        assert "test.local" in other.stderr
        assert len(other.stderr.strip().splitlines()) == 1
        assert server.login("dave", "pw").status_code == 403


def test_register_user_password_mismatch_says_only_that(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with running_server(config) as server:
        code, shown = cli_in_terminal(
            config,
            ["first", "second"],
            "register-user",
            "-u",
            "erin",
            "--no-admin",
            server.base_url,
        )
        assert code == 1
        assert shown.strip().splitlines()[-1] == "Passwords do not match"
        assert "no password" not in shown
        assert server.login("erin", "first").status_code == 403
