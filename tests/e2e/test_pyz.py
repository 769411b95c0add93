"""The real pocket.pyz: build it once, then run it under every CPython on this machine.

The pyz lies in a read-only folder and runs from another working directory, as it
would from /opt under systemd. One build serves every CPython from 3.11 on; a test
for a version whose interpreter is absent here is skipped, and says so.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import httpx
import pytest
import yaml

from tests.harness import make_config, start_server
from tests.pyz_build import PYTHONS, built_pyz, interpreter

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_pyz(tmp_path_factory).pyz


@pytest.fixture(scope="session")
def shiv_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SHIV_ROOT for every CPython: they share the unpacked copy, as on a real box."""
    return tmp_path_factory.mktemp("shiv")


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "SHIV_ROOT": str(tmp / "shiv")}


def _pyz(
    pyz: Path, *args: str, cwd: Path, env: dict[str, str], python: str = sys.executable
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, str(pyz), *args],
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


@pytest.mark.slow
def test_pyz_run_removes_older_unpacked_builds(pyz: Path, tmp_path: Path) -> None:
    """Issue #15: each upgrade left another 50-80 MB unpacked copy in ~/.shiv."""
    env = _env(tmp_path)
    shiv = tmp_path / "shiv"
    old = shiv / f"pocket.pyz_{1:064x}"
    (old / "site-packages" / "pocketserver").mkdir(parents=True)
    (old / "site-packages" / "pocketserver" / "__init__.py").write_text("")
    foreign = shiv / f"other.pyz_{2:064x}" / "site-packages" / "other"
    foreign.mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    config = make_config(work)
    server = start_server(
        config, command=[sys.executable, str(pyz), "run", "-c", str(config)], cwd=work, env=env
    )
    try:
        deadline = time.monotonic() + 30
        while old.exists():
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.1)
        ours = [d for d in shiv.iterdir() if d.name.startswith("pocket.pyz_")]
        assert len(ours) == 1
        assert (ours[0] / ".pocket_in_use").exists()
        assert f"removed an older build's unpacked copy {old}" in server.log_text()
        assert foreign.exists()
        with httpx.Client(base_url=server.base_url) as c:
            assert c.get("/_matrix/client/versions").status_code == 200
    finally:
        server.stop()


@pytest.mark.slow
def test_pyz_demo_runs_its_servers_from_the_pyz(pyz: Path, tmp_path: Path) -> None:
    """``pocket.pyz demo``: the three servers are ``python pocket.pyz run`` processes
    (the demo finds the pyz it runs from), they start, and Ctrl-C stops them."""
    from tests.e2e.test_demo import alive, cleanup, start_demo

    demo = start_demo(tmp_path, tmp_path / "demo", _env(tmp_path), [sys.executable, str(pyz)])
    pids: list[int] = []
    try:
        demo.wait_ready()
        pids = list(demo.state()["pids"])
        for pid in pids:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert str(pyz).encode() in cmdline, cmdline
        for entry in demo.logins():
            r = httpx.get(f"{entry.url}/_matrix/client/versions")
            assert r.status_code == 200
        assert demo.stop() == 0, demo.output
        assert not any(alive(pid) for pid in pids)
    finally:
        cleanup(demo, pids)


# --- every CPython from one build -----------------------------------------------------

NATIVE_CHECK = (
    "import sys, yaml, _cffi_backend, markupsafe._speedups, nacl.bindings, bcrypt\n"
    "from PIL import Image, _imaging\n"
    "assert yaml.__with_libyaml__, 'pyyaml without its C extension'\n"
    "for m in (_cffi_backend, markupsafe._speedups, _imaging):\n"
    "    assert f'cpython-{sys.version_info[0]}{sys.version_info[1]}' in m.__file__, m.__file__\n"
    "print('%d.%d' % sys.version_info[:2])\n"
)


def _python(version: str) -> str:
    found = interpreter(version)
    if found is None:
        pytest.skip(f"no CPython {version} on this machine (pyenv or python{version} on PATH)")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("version", PYTHONS)
def test_one_pyz_runs_under_each_cpython(
    pyz: Path, shiv_root: Path, tmp_path: Path, version: str
) -> None:
    """--version, the compiled dependencies, generate/check-config, run, register, chat."""
    python = _python(version)
    env = {**os.environ, "SHIV_ROOT": str(shiv_root)}
    work = tmp_path / "work"
    work.mkdir()

    r = _pyz(pyz, "--version", cwd=work, env=env, python=python)
    assert r.returncode == 0, r.stderr
    assert "pocketserver" in r.stdout + r.stderr
    r = _pyz(pyz, "-c", NATIVE_CHECK, cwd=work, env={**env, "SHIV_INTERPRETER": "1"}, python=python)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == version

    config = tmp_path / "etc" / "homeserver.yaml"
    r = _pyz(
        pyz, "--generate-config", "--server-name", "pyz.test", "-c", str(config),
        cwd=work, env=env, python=python,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = _pyz(pyz, "check-config", "-c", str(config), cwd=work, env=env, python=python)
    assert r.returncode == 0, r.stderr
    data = yaml.safe_load(config.read_text())
    data["listeners"][0]["port"] = 0
    data["bcrypt_rounds"] = 4
    config.write_text(yaml.safe_dump(data))

    server = start_server(
        config, command=[python, str(pyz), "run", "-c", str(config)], cwd=work, env=env
    )
    try:
        r = _pyz(
            pyz, "register-user", "-c", str(config), "-u", "alice", "-p", "pw " + version,
            "--no-admin", server.base_url, cwd=work, env=env, python=python,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        login = server.login("alice", "pw " + version)
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as c:
            room = c.post("/_matrix/client/v3/createRoom", json={"name": version})
            assert room.status_code == 200, room.text
            room_id = room.json()["room_id"]
            body = f"hello from CPython {version}"
            sent = c.put(
                f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1",
                json={"msgtype": "m.text", "body": body},
            )
            assert sent.status_code == 200, sent.text
            history = c.get(
                f"/_matrix/client/v3/rooms/{room_id}/messages", params={"dir": "b", "limit": 5}
            )
            assert history.status_code == 200, history.text
            bodies = [e["content"].get("body") for e in history.json()["chunk"]]
            assert body in bodies
            assert sent.json()["event_id"] in [e["event_id"] for e in history.json()["chunk"]]
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log_text()


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.10", "2.7"])
def test_an_unsupported_python_gets_one_line_naming_the_supported_ones(
    pyz: Path, tmp_path: Path, version: str
) -> None:
    python = _python(version)
    shiv = tmp_path / "shiv"
    r = _pyz(
        pyz, "--version", cwd=tmp_path, env={**os.environ, "SHIV_ROOT": str(shiv)}, python=python
    )
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("pocket.pyz runs on CPython " + ", ".join(PYTHONS) + ", not on")
    assert version in lines[0]
    assert "Traceback" not in r.stderr
    assert not shiv.exists()  # checked before shiv unpacks anything


@pytest.mark.slow
def test_the_pyz_holds_each_cpythons_binaries_once(pyz: Path) -> None:
    with zipfile.ZipFile(pyz) as archive:
        names = archive.namelist()
        main_py = archive.read("__main__.py").decode()
    assert f"SUPPORTED = {PYTHONS!r}" in main_py
    for version in PYTHONS:
        tag = "cp" + version.replace(".", "")
        here = f"cpython-{sys.version_info[0]}{sys.version_info[1]}"
        suffix = sysconfig.get_config_var("EXT_SUFFIX").replace(here, f"cpython-{tag[2:]}")
        for module in ("_cffi_backend", "yaml/_yaml", "markupsafe/_speedups", "PIL/_imaging"):
            assert f"site-packages/{module}{suffix}" in names
        assert any(n.startswith(f"site-packages/by-python/{tag}/pyyaml-") for n in names)
    # abi3 wheels and pure-Python packages are there once.
    assert names.count("site-packages/nacl/_sodium.abi3.so") == 1
    assert names.count("site-packages/trio/__init__.py") == 1
    assert not [n for n in names if n.startswith("site-packages/by-python/") and "/trio/" in n]
    assert "site-packages/_pocket_python.pth" in names
