"""Unpacked copies of older pocket.pyz builds, removed at start (issue #15).

shiv unpacks each build once into ``$SHIV_ROOT`` (default ``~/.shiv``) as
``<pyz name>_<build id>/`` and never removes one: every upgrade left another 50-80 MB
on the SD card. At start, ``run`` marks its own copy as in use (a shared ``flock`` on
a file inside it, held for the life of the process) and removes the copies of other
builds of pocketserver beside it that no process uses:

* only ours: a copy whose ``site-packages/pocketserver/__init__.py`` exists;
* not in use: no process holds the in-use lock, and (on Linux) no process has a file
  of it mapped (``/proc/PID/maps``: a server started by an older build, which takes
  no lock, has its compiled modules mapped);
* safely: the copy is first renamed to a hidden ``.<name>.removing`` (atomic; a copy
  half removed by a crash is finished at the next start), then deleted.

Leftovers of an interrupted unpacking (``<name>.tmp`` whose shiv lock is free) go too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not on a POSIX system
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

_BUILD_DIR = re.compile(r"^.+_[0-9a-f]{64}$")
IN_USE_FILE = ".pocket_in_use"
_REMOVING = ".removing"

# The in-use lock of this process's copy: kept open (and locked) until exit.
_held: list[int] = []


@dataclass(frozen=True, slots=True)
class Removed:
    path: Path
    size: int


def running_build(module_file: str | Path) -> Path | None:
    """The unpacked copy this code runs from (``<root>/<name>_<build id>``), or None
    when it does not run from a pyz (a checkout, a venv)."""
    site = Path(module_file).resolve().parent.parent
    if site.name != "site-packages" or not _BUILD_DIR.match(site.parent.name):
        return None
    return site.parent


def mark_in_use(build: Path) -> bool:
    """Hold a shared lock on ``build``'s in-use file until this process exits."""
    if fcntl is None:
        return False
    try:
        fd = os.open(build / IN_USE_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        log.debug("cannot mark %s as in use: %s", build, e)
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        # Another start is removing this very copy: keep going, it will be unpacked
        # again by the next start of this build.
        os.close(fd)
        log.warning("%s is being removed by another start of pocketserver", build)
        return False
    _held.append(fd)
    return True


def prune_older_builds(current: Path) -> list[Removed]:
    """Remove the unused unpacked copies of other pocketserver builds beside ``current``."""
    root = current.parent
    removed: list[Removed] = []
    mapped = _mapped_paths()
    try:
        entries = sorted(root.iterdir())
    except OSError as e:
        log.debug("cannot list %s: %s", root, e)
        return removed
    for entry in entries:
        if entry == current or entry.is_symlink() or not entry.is_dir():
            continue
        if entry.name.startswith(".") and entry.name.endswith(_REMOVING):
            removed += _remove(entry)  # a removal a crash interrupted
        elif _BUILD_DIR.match(entry.name) and _is_ours(entry):
            if _in_use_by_mapping(entry, mapped):
                continue
            with _exclusive(entry / IN_USE_FILE) as free:
                if free:
                    removed += _retire(entry)
        elif entry.name.endswith(".tmp") and _BUILD_DIR.match(entry.name[: -len(".tmp")]):
            build = entry.name[: -len(".tmp")]
            if _is_ours(entry) and not _in_use_by_mapping(entry, mapped):
                # shiv holds this lock while it unpacks into <name>.tmp.
                with _exclusive(root / f".{build}_lock") as free:
                    if free:
                        removed += _retire(entry)
    for r in removed:
        log.info("removed an older build's unpacked copy %s (%.1f MB)", r.path, r.size / 1e6)
    return removed


def prune_at_start(module_file: str | Path) -> threading.Thread | None:
    """``run``'s step: mark our copy in use, then remove the others no one uses in a
    background thread (deleting 50-80 MB from an SD card takes seconds; the start does
    not wait). Never fails the start: a problem is logged and the start goes on."""
    current = running_build(module_file)
    if current is None or not mark_in_use(current):
        return None
    thread = threading.Thread(
        target=_prune_logged, args=(current,), name="prune-unpacked-builds", daemon=True
    )
    thread.start()
    return thread


def _prune_logged(current: Path) -> None:
    try:
        prune_older_builds(current)
    except OSError as e:
        log.warning("could not remove older unpacked builds beside %s: %s", current, e)


def _is_ours(build: Path) -> bool:
    return (build / "site-packages" / "pocketserver" / "__init__.py").is_file()


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[bool]:
    """An exclusive lock on ``lock_path`` if nobody holds it (True), else False."""
    if fcntl is None:
        yield False
        return
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _retire(build: Path) -> list[Removed]:
    """Rename ``build`` out of the way (atomic), then delete it."""
    hidden = build.parent / f".{build.name}{_REMOVING}"
    size = _size(build)
    try:
        os.rename(build, hidden)
    except OSError as e:
        log.warning("could not remove %s: %s", build, e)
        return []
    shutil.rmtree(hidden, ignore_errors=True)
    with contextlib.suppress(OSError):
        (build.parent / f".{build.name}_lock").unlink()  # shiv's unpacking lock
    return [Removed(build, size)]


def _remove(hidden: Path) -> list[Removed]:
    size = _size(hidden)
    shutil.rmtree(hidden, ignore_errors=True)
    return [Removed(hidden, size)]


def _size(path: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _mapped_paths() -> frozenset[str]:
    """Every file some process has mapped (Linux ``/proc/PID/maps``); empty elsewhere.
    Processes of other users whose maps cannot be read are left out."""
    proc = Path("/proc")
    paths: set[str] = set()
    try:
        pids = [p for p in proc.iterdir() if p.name.isdigit()]
    except OSError:
        return frozenset()
    for pid in pids:
        try:
            text = (pid / "maps").read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            # address perms offset dev inode pathname
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].startswith("/"):
                paths.add(parts[5])
    return frozenset(paths)


def _in_use_by_mapping(build: Path, mapped: frozenset[str]) -> bool:
    prefixes = {f"{build}/", f"{build.resolve()}/"}
    return any(path.startswith(tuple(prefixes)) for path in mapped)
