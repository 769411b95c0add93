"""Logs through the real server: a rotated log file, quiet access lines by default,
Synapse's ``log_config`` (issue #15)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import yaml

from tests.harness import make_config, running_server, server_command

WHOAMI = "/_matrix/client/v3/account/whoami"


def test_default_logs_failed_requests_not_successful_ones(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "pocket.log"
    config = make_config(tmp_path, access_log_level="DEBUG", log_file=str(log_file))
    with running_server(config, log_to=log_file) as s:
        token = s.register("alice")["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        with s.client() as c:
            for _ in range(20):
                assert c.get(WHOAMI, headers=auth).status_code == 200
            r = c.get("/_matrix/client/v3/sync", params={"timeout": "300"}, headers=auth)
            assert r.status_code == 200
            missing = c.get("/_matrix/client/v3/rooms/!nope:test.local/state", headers=auth)
            assert missing.status_code in (403, 404)
            assert c.get(WHOAMI).status_code == 401
            stderr = s.log_path.parent.glob("server-*.log")
        text = log_file.read_text()
    assert "pocketserver for test.local is ready" in text
    assert f"GET {WHOAMI} 200" not in text
    assert "GET /_matrix/client/v3/sync 200" not in text  # waited what it asked: not slow
    assert "GET /_matrix/client/v3/rooms/!nope:test.local/state 40" in text
    assert f"GET {WHOAMI} 401" in text
    assert token not in text
    # Everything went to the file: standard error stayed empty.
    assert all(p.read_text() == "" for p in stderr)


def test_debug_level_shows_every_request(tmp_path: Path) -> None:
    log_file = tmp_path / "pocket.log"
    config = make_config(
        tmp_path, access_log_level="DEBUG", log_level="DEBUG", log_file=str(log_file)
    )
    with running_server(config, log_to=log_file) as s:
        token = s.register("bob")["access_token"]
        with s.client() as c:
            c.get(WHOAMI, headers={"Authorization": f"Bearer {token}"})
        text = log_file.read_text()
    assert "DEBUG pocketserver.access: req-" in text
    assert f"GET {WHOAMI} 200" in text


def test_log_file_rotates_by_size(tmp_path: Path) -> None:
    log_file = tmp_path / "pocket.log"
    config = make_config(
        tmp_path,
        access_log_level="INFO",
        log_file=str(log_file),
        log_file_max_size="64K",
        log_file_backup_count=2,
    )
    with running_server(config, log_to=log_file) as s, s.client() as c:
        for _ in range(2000):  # about 90 bytes a line: two rotations
            c.get("/_matrix/client/versions")
    names = sorted(p.name for p in tmp_path.glob("pocket.log*"))
    assert names == ["pocket.log", "pocket.log.1", "pocket.log.2"]
    assert all(p.stat().st_size <= 64 * 1024 for p in tmp_path.glob("pocket.log*"))


def test_log_config_decides_where_lines_go(tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    main = tmp_path / "main.log"
    document = {
        "version": 1,
        "formatters": {"f": {"format": "%(levelname)s %(name)s %(message)s"}},
        "handlers": {
            "main": {"class": "logging.FileHandler", "filename": str(main), "formatter": "f"},
            "access": {
                "class": "logging.FileHandler",
                "filename": str(access),
                "formatter": "f",
            },
        },
        "loggers": {
            "pocketserver.access": {"level": "DEBUG", "handlers": ["access"], "propagate": False}
        },
        "root": {"level": "INFO", "handlers": ["main"]},
        "disable_existing_loggers": False,
    }
    log_config = tmp_path / "log.yaml"
    log_config.write_text(yaml.safe_dump(document))
    config = make_config(tmp_path, log_config=str(log_config), access_log_level="DEBUG")
    with running_server(config, log_to=main) as s, s.client() as c:
        assert c.get("/_matrix/client/versions").status_code == 200
    assert "DEBUG pocketserver.access req-" in access.read_text()
    assert "GET /_matrix/client/versions 200" in access.read_text()
    assert "pocketserver.access" not in main.read_text()
    assert "is ready" in main.read_text()


def test_a_log_config_that_cannot_load_stops_the_start(tmp_path: Path) -> None:
    log_config = tmp_path / "log.yaml"
    log_config.write_text(
        "version: 1\n"
        "handlers:\n"
        "  h: {class: logging.FileHandler, filename: /nonexistent-dir/x/y.log}\n"
        "root: {handlers: [h]}\n"
    )
    config = make_config(tmp_path, log_config=str(log_config))
    proc = subprocess.run(
        server_command(config), capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 1
    assert f"log_config {log_config}: cannot apply it" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_config_refuses_a_log_config_that_is_not_a_dict_config(tmp_path: Path) -> None:
    log_config = tmp_path / "log.ini"
    log_config.write_text("[loggers]\nkeys=root\n")
    config = make_config(tmp_path, log_config=str(log_config))
    proc = subprocess.run(
        [sys.executable, "-m", "pocketserver", "check-config", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "log_config" in proc.stdout + proc.stderr


def test_no_request_line_holds_a_query_string(tmp_path: Path) -> None:
    log_file = tmp_path / "pocket.log"
    config = make_config(tmp_path, access_log_level="INFO", log_file=str(log_file))
    with running_server(config, log_to=log_file) as s:
        httpx.get(f"{s.base_url}{WHOAMI}", params={"access_token": "secret-in-query"})
        text = log_file.read_text()
    assert f"GET {WHOAMI} 401" in text
    assert "secret-in-query" not in text
