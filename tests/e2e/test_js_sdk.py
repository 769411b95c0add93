"""matrix-js-sdk (from npm, run with node) against the real server.

tests/js/scenario.mjs drives two clients through the everyday chat features; this
test installs the pinned SDK (npm ci, once) and checks that every step passed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import make_config, running_server

JS = Path(__file__).resolve().parents[1] / "js"


@pytest.fixture(scope="module")
def node_modules() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are needed for the matrix-js-sdk tests")
    if not (JS / "node_modules" / "matrix-js-sdk").exists():
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=JS,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return JS / "node_modules"


def test_js_sdk_two_users_chat(node_modules: Path, tmp_path: Path) -> None:
    config = make_config(tmp_path, rc_message={"per_second": 1000, "burst_count": 1000})
    with running_server(config) as s:
        s.register("jsalice", "pw-alice")
        s.register("jsbob", "pw-bob")
        scenario = {
            "baseUrl": s.base_url,
            "alice": {"user": "jsalice", "password": "pw-alice"},
            "bob": {"user": "jsbob", "password": "pw-bob"},
        }
        proc = subprocess.run(
            ["node", str(JS / "scenario.mjs"), json.dumps(scenario)],
            cwd=JS,
            capture_output=True,
            text=True,
            timeout=600,
        )
        log = s.log_text()
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "ok log out" in proc.stdout, output
    assert " 500 " not in log
