"""One real build of pocket.pyz per test session, shared by every test that needs it.

A build downloads wheels for each CPython and takes about a minute, so the test
modules' `pyz` fixtures all call built_pyz(), which builds on the first call. The
pyz lies in a read-only folder, as it would in /opt under systemd.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Every CPython a default build is for (build_zipapp.PYTHON_VERSIONS).
PYTHONS = ("3.11", "3.12", "3.13", "3.14")


@dataclass(frozen=True)
class Build:
    pyz: Path
    output: str  # what build_zipapp.py printed


_build: Build | None = None


def built_pyz(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """Build pocket.pyz for this machine once (the default build: every CPython)."""
    global _build
    if _build is None:
        folder = tmp_path_factory.mktemp("pyz-build")
        out = folder / "pocket.pyz"
        proc = subprocess.run(
            [sys.executable, str(ROOT / "build_zipapp.py"), "--output", str(out)],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out.chmod(0o444)
        folder.chmod(0o555)
        atexit.register(folder.chmod, 0o755)
        _build = Build(out, proc.stdout + proc.stderr)
    return _build


def interpreter(version: str) -> str | None:
    """A CPython X.Y on this machine: this one, pyenv's, or python3.Y on PATH."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    found = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python")))
    for candidate in [*found, shutil.which(f"python{version}")]:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None
