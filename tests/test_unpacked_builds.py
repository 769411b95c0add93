"""Older unpacked pocket.pyz builds under shiv's root are removed, never one in use."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pocketserver.cli import unpacked
from pocketserver.cli.unpacked import IN_USE_FILE, prune_older_builds, running_build


def _build(root: Path, n: int, *, ours: bool = True, name: str = "pocket.pyz") -> Path:
    build = root / f"{name}_{n:064x}"
    package = build / "site-packages" / ("pocketserver" if ours else "something")
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data.bin").write_bytes(b"x" * 100_000)
    return build


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "shiv"
    root.mkdir()
    return root


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    _stop(procs)


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        p.kill()
        p.wait()
        if p.stdout is not None:
            p.stdout.close()
    procs.clear()


def _hold(procs: list[subprocess.Popen[str]], code: str) -> None:
    """Run ``code`` in another process, which prints "ok" and then sleeps."""
    p = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"{code}\nimport sys, time\nprint('ok', flush=True)\ntime.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ok"
    procs.append(p)


def test_running_build_is_found_only_in_an_unpacked_pyz(root: Path) -> None:
    build = _build(root, 1)
    init = build / "site-packages" / "pocketserver" / "__init__.py"
    assert running_build(init) == build
    assert running_build(unpacked.__file__) is None  # this checkout
    odd = root / "pocket.pyz_notahash" / "site-packages" / "pocketserver"
    odd.mkdir(parents=True)
    assert running_build(odd / "__init__.py") is None


def test_only_unused_older_builds_of_ours_are_removed(
    root: Path, holders: list[subprocess.Popen[str]]
) -> None:
    current = _build(root, 1)
    old = _build(root, 2)
    (root / f".{old.name}_lock").write_text("")  # shiv's unpacking lock
    renamed = _build(root, 3, name="pocket-0.9.pyz")  # an old build under another name
    locked = _build(root, 4)
    mapped = _build(root, 5)
    foreign = _build(root, 6, ours=False)
    half_removed = root / f".{_build(root, 7).name}.removing"
    (root / f"pocket.pyz_{7:064x}").rename(half_removed)
    stale_tmp = _build(root, 8)
    stale_tmp = stale_tmp.rename(root / f"{stale_tmp.name}.tmp")
    unpacking = _build(root, 9)
    unpacking = unpacking.rename(root / f"{unpacking.name}.tmp")
    (root / "unrelated.txt").write_text("keep")

    # A newer pocketserver holds its in-use lock; an older one maps its files.
    _hold(
        holders,
        "import fcntl, os\n"
        f"fd = os.open({str(locked / IN_USE_FILE)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_SH)",
    )
    _hold(
        holders,
        "import mmap\n"
        f"f = open({str(mapped / 'site-packages/pocketserver/data.bin')!r}, 'rb')\n"
        "m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)",
    )
    # shiv is unpacking into this .tmp right now (it holds its lock).
    _hold(
        holders,
        "import fcntl, os\n"
        f"fd = os.open({str(root / ('.' + unpacking.name[:-4] + '_lock'))!r}, "
        "os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)",
    )

    removed = prune_older_builds(current)

    assert {r.path for r in removed} == {old, renamed, half_removed, stale_tmp}
    assert all(r.size >= 100_000 for r in removed)
    for gone in (old, renamed, half_removed, stale_tmp, root / f".{old.name}_lock"):
        assert not gone.exists(), gone
    for kept in (current, locked, mapped, foreign, unpacking, root / "unrelated.txt"):
        assert kept.exists(), kept
    assert not list(root.glob("*.removing"))
    # Once the older server stops, the next start removes its copy.
    _stop(holders)
    again = prune_older_builds(current)
    assert {r.path for r in again} == {locked, mapped, unpacking}
    assert current.exists()
    assert foreign.exists()


def test_a_start_marks_its_copy_and_prunes_in_the_background(
    root: Path, holders: list[subprocess.Popen[str]]
) -> None:
    current = _build(root, 1)
    old = _build(root, 2)
    thread = unpacked.prune_at_start(current / "site-packages" / "pocketserver" / "__init__.py")
    assert thread is not None
    thread.join(10)
    assert not old.exists()
    # Our copy is now marked: a pruner in another process leaves it alone.
    other = _build(root, 3)
    code = (
        "from pathlib import Path\n"
        "from pocketserver.cli.unpacked import prune_older_builds\n"
        f"print(sorted(str(r.path) for r in prune_older_builds(Path({str(other)!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert str(current) not in out
    assert current.exists()
    for fd in unpacked._held:
        os.close(fd)
    unpacked._held.clear()


def test_prune_at_start_outside_a_pyz_does_nothing() -> None:
    assert unpacked.prune_at_start(unpacked.__file__) is None
