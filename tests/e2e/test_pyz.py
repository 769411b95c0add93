"""The real pocket.pyz: build it, then generate a config, run, register a user and log in.

The pyz lies in a read-only folder and runs from another working directory, as it
would from /opt under systemd.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.harness import start_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("build") / "pocket.pyz"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "build_zipapp.py"), "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    readonly = out.parent
    out.chmod(0o444)
    readonly.chmod(0o555)
    yield out
    readonly.chmod(0o755)


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "SHIV_ROOT": str(tmp / "shiv")}


def _pyz(pyz: Path, *args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(pyz), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_pyz_generate_run_register_login(pyz: Path, tmp_path: Path) -> None:
    assert not os.access(pyz.parent, os.W_OK) or os.geteuid() == 0
    env = _env(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    etc = tmp_path / "etc"

    r = _pyz(
        pyz,
        "--generate-config",
        "--server-name",
        "pyz.test",
        "-c",
        str(etc / "homeserver.yaml"),
        "--report-stats=no",
        cwd=work,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    config = etc / "homeserver.yaml"
    key = etc / "pyz.test.signing.key"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # Generating again refuses and leaves the file alone.
    before = config.read_text()
    r = _pyz(
        pyz, "--generate-config", "--server-name", "pyz.test", "-c", str(config), cwd=work, env=env
    )
    assert r.returncode != 0
    assert "exists" in r.stderr
    assert config.read_text() == before

    r = _pyz(pyz, "check-config", "-c", str(config), cwd=work, env=env)
    assert r.returncode == 0, r.stderr
    data = yaml.safe_load(config.read_text())
    assert data["registration_shared_secret"] not in r.stdout

    data["listeners"][0]["port"] = 0
    data["bcrypt_rounds"] = 4
    config.write_text(yaml.safe_dump(data))
    server = start_server(
        config, command=[sys.executable, str(pyz), "run", "-c", str(config)], cwd=work, env=env
    )
    try:
        r = _pyz(
            pyz,
            "register-user",
            "-c",
            str(config),
            "-u",
            "alice",
            "-p",
            "pyz password",
            "--admin",
            server.base_url,
            cwd=work,
            env=env,
        )
        assert r.returncode == 0, r.stderr
        assert "@alice:pyz.test" in r.stdout
        r = _pyz(
            pyz,
            "register-user",
            "-c",
            str(config),
            "-u",
            "alice",
            "-p",
            "x",
            "--no-admin",
            server.base_url,
            cwd=work,
            env=env,
        )
        assert r.returncode != 0
        assert "M_USER_IN_USE" in r.stderr
        login = server.login("alice", "pyz password")
        assert login.status_code == 200, login.text
        assert login.json()["user_id"] == "@alice:pyz.test"
        # The README's password reset works from the pyz, with the server running.
        new_password = tmp_path / "new-password"
        new_password.write_text("new password\n")
        r = _pyz(
            pyz,
            "reset-password",
            "-c",
            str(config),
            "-u",
            "alice",
            "--password-file",
            str(new_password),
            cwd=work,
            env=env,
        )
        assert r.returncode == 0, r.stderr
        assert server.login("alice", "new password").status_code == 200
        assert server.login("alice", "pyz password").status_code == 403
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log_text()
    # Nothing was written next to the pyz or in the working directory.
    assert sorted(p.name for p in pyz.parent.iterdir()) == ["pocket.pyz"]
    assert list(work.iterdir()) == [] or all(p.suffix == ".log" for p in work.iterdir())
