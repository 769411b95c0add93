"""An admin's first day: the real server refuses to start on a broken installation,
with one line that names the file (issue #9)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.harness import make_config, running_server, server_command, start_server

NOBODY_UID = 65534
REPO_ROOT = Path(__file__).resolve().parents[2]


def start_and_fail(config: Path, as_user: RunAs | None = None) -> subprocess.CompletedProcess[str]:
    command = server_command(config)
    env = None
    if as_user is not None and as_user.python is not None:
        command = [as_user.python, *command[1:]]
        env = {**os.environ, "PYTHONPATH": as_user.python_path}
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        preexec_fn=as_user.preexec if as_user else None,
        cwd=config.parent,
        env=env,
    )
    assert proc.returncode != 0, proc.stderr
    assert "is ready" not in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- a data folder the service user cannot write ------------------------------------


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """A folder outside pytest's private (mode 0700) tmp tree, so another user can read
    the config in it."""
    path = Path(tempfile.mkdtemp(prefix="pocket-perm-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class RunAs:
    name: str
    preexec: Callable[[], None] | None = None
    python: str | None = None
    python_path: str = ""


def _become_nobody() -> None:
    os.setgid(NOBODY_UID)
    os.setgroups([])
    os.setuid(NOBODY_UID)


def _python_for_nobody() -> tuple[str, str] | None:
    """An interpreter ``nobody`` can run with our packages (the venv's may link into
    root's home), and the PYTHONPATH that finds them."""
    python_path = os.pathsep.join(
        [str(REPO_ROOT), *(p for p in sys.path if p.endswith("site-packages"))]
    )
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, os.path.realpath(sys.executable), f"/usr/bin/{version}"):
        try:
            ok = subprocess.run(
                [candidate, "-c", "import pocketserver.server"],
                preexec_fn=_become_nobody,
                env={**os.environ, "PYTHONPATH": python_path},
                cwd="/",
                capture_output=True,
                timeout=60,
            )
        except OSError:
            continue
        if ok.returncode == 0:
            return candidate, python_path
    return None


def as_other_user(directory: Path) -> RunAs:
    """How to run the server as a user that does not own the data: ``nobody`` when the
    tests run as root (root ignores permission bits), else ourselves with the data
    made read-only (which non-root users cannot ignore)."""
    if os.geteuid() != 0:
        import pwd

        return RunAs(pwd.getpwuid(os.geteuid()).pw_name)
    found = _python_for_nobody()
    if found is None:
        pytest.skip("no Python interpreter that user nobody can run with our packages")
    # nobody must read the config and the signing key (generated with mode 0600).
    for path in directory.iterdir():
        if path.is_file():
            os.chown(path, NOBODY_UID, NOBODY_UID)
    return RunAs("nobody", _become_nobody, *found)


def test_unwritable_data_folder_refuses_to_start(world_readable_dir: Path) -> None:
    config = make_config(world_readable_dir)
    data = world_readable_dir / "data"  # created by root (or us) with mode 0700
    data.chmod(0o555)
    user = as_other_user(world_readable_dir)
    proc = start_and_fail(config, user)
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert str(data) in lines[0]
    assert f"user {user.name}" in lines[0]
    assert list(data.iterdir()) == []


def test_database_file_the_user_cannot_write_refuses_to_start(world_readable_dir: Path) -> None:
    config = make_config(world_readable_dir)
    with running_server(config):  # creates the database (owned by the test's user)
        pass
    db = world_readable_dir / "data" / "homeserver.db"
    data = db.parent
    db.chmod(0o444)
    user = as_other_user(world_readable_dir)
    if user.preexec is not None:  # nobody may write the folder, but not the root-owned file
        os.chown(data, NOBODY_UID, NOBODY_UID)
        os.chown(data / "media_store", NOBODY_UID, NOBODY_UID)
    before = sha256(db)
    proc = start_and_fail(config, user)
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert str(db) in lines[0]
    assert f"user {user.name}" in lines[0]
    assert sha256(db) == before


def test_unwritable_media_folder_refuses_to_start(world_readable_dir: Path) -> None:
    config = make_config(world_readable_dir)
    data = world_readable_dir / "data"
    media = data / "media"
    media.mkdir()
    media.chmod(0o555)
    cfg = yaml.safe_load(config.read_text())
    cfg["media_store_path"] = str(media)
    config.write_text(yaml.safe_dump(cfg))
    user = as_other_user(world_readable_dir)
    if user.preexec is not None:
        os.chown(data, NOBODY_UID, NOBODY_UID)
    proc = start_and_fail(config, user)
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert str(media) in lines[0]
    assert f"user {user.name}" in lines[0]


# --- two servers on one database -----------------------------------------------------


def test_second_server_on_the_same_database_is_refused(tmp_path: Path) -> None:
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    config = make_config(first_dir)
    # Another config (another port) that points at the same database file.
    other = make_config(second_dir)
    data = yaml.safe_load(other.read_text())
    data["database"]["args"]["database"] = str(first_dir / "data" / "homeserver.db")
    other.write_text(yaml.safe_dump(data))
    with running_server(config) as first:
        first.register("alice")
        proc = start_and_fail(other)
        lines = error_lines(proc)
        assert len(lines) == 1, proc.stderr
        assert f"pid {first.proc.pid}" in lines[0]
        assert "already running" in lines[0]
        assert str(first_dir / "data" / "homeserver.db") in lines[0]
        # The first server is unharmed.
        assert first.login("alice").status_code == 200
    # Once the first has stopped, the second starts (the lock died with it).
    with running_server(other) as second:
        assert second.login("alice").status_code == 200


def test_lock_is_released_by_kill_9(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    server = start_server(config)
    server.proc.kill()
    server.proc.wait()
    with running_server(config):
        pass


# --- a foreign SQLite database -------------------------------------------------------


def make_synapse_like_db(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE schema_version (Lock CHAR(1) NOT NULL DEFAULT 'X' UNIQUE,
            version INTEGER NOT NULL, upgraded BOOL NOT NULL);
        INSERT INTO schema_version VALUES ('X', 88, 1);
        CREATE TABLE applied_schema_deltas (version INTEGER NOT NULL, file TEXT NOT NULL);
        CREATE TABLE users (name TEXT, password_hash TEXT, creation_ts BIGINT, admin SMALLINT);
        INSERT INTO users VALUES ('@alice:example.org', '$2b$12$x', 0, 1);
        CREATE TABLE event_json (event_id TEXT, room_id TEXT, json TEXT);
        CREATE TABLE holiday_photos (id INTEGER PRIMARY KEY, caption TEXT);
        """
    )
    conn.commit()
    conn.close()


@pytest.mark.parametrize("kind", ["synapse", "other"])
def test_foreign_database_is_refused_unchanged(tmp_path: Path, kind: str) -> None:
    config = make_config(tmp_path)
    db = tmp_path / "data" / "homeserver.db"
    if kind == "synapse":
        make_synapse_like_db(db)
    else:
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE recipes (name TEXT, schema_migrations TEXT)")
        conn.execute("INSERT INTO recipes VALUES ('soup', 'none')")
        conn.commit()
        conn.close()
    before = sha256(db)
    proc = start_and_fail(config)
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert str(db) in lines[0]
    assert "not a pocketserver database" in lines[0]
    if kind == "synapse":
        assert "Synapse" in lines[0]
    assert sha256(db) == before
    assert not db.with_name("homeserver.db-wal").exists()


def test_a_file_that_is_not_sqlite_is_refused_unchanged(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    db = tmp_path / "data" / "homeserver.db"
    db.write_bytes(b"these are my notes, not a database\n" * 200)
    before = sha256(db)
    proc = start_and_fail(config)
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert str(db) in lines[0]
    assert sha256(db) == before


# --- TLS files and the signing key ---------------------------------------------------


def tls_config(directory: Path, cert: Path, key: Path) -> Path:
    config = make_config(directory)
    data = yaml.safe_load(config.read_text())
    data["listeners"][0]["tls"] = True
    data["tls_certificate_path"] = str(cert)
    data["tls_private_key_path"] = str(key)
    config.write_text(yaml.safe_dump(data))
    return config


def test_missing_tls_certificate_is_named(tmp_path: Path) -> None:
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    config = tls_config(tmp_path, cert, key)
    proc = start_and_fail(config)
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert str(cert) in lines[0]
    assert "does not exist" in lines[0]


def test_unusable_tls_key_is_named(tmp_path: Path) -> None:
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    config = tls_config(tmp_path, cert, key)
    proc = start_and_fail(config)
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert str(cert) in lines[0]
    assert str(key) in lines[0]


def test_missing_signing_key_is_named(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    key = tmp_path / "test.local.signing.key"
    key.unlink()
    proc = start_and_fail(config)
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert str(key) in lines[0]
    assert "--generate-keys" in lines[0]
