#!/usr/bin/env python3
"""Build dist/pocket.pyz: pocketserver and all its runtime dependencies in one file.

One pocket.pyz runs on every CPython it was built for: by default 3.11, 3.12, 3.13
and 3.14 (each one that has wheels for every binary dependency). Started with
another Python (3.10, 3.15, PyPy) it stops with a one-line message naming them.

The zipapp is made with shiv. Its shebang is `/usr/bin/env python3` and it runs
`pocketserver.cli:main`. On its first start it unpacks into $SHIV_ROOT (default
~/.shiv)/pocket.pyz_<build id>/; each different build adds one such directory.

Steps: build pocketserver as a wheel from a copy of the source tree (the checkout
is left untouched); for each CPython X.Y download the wheels of its dependencies
(read from pyproject.toml) and install them into a staging directory of its own;
merge the staging directories into one site-packages (see plan_layout); pack it
with shiv; put a version check in front of shiv's bootstrap. If this Python lacks
shiv, it is installed into a throwaway venv first, so only Python, pip (or venv's
ensurepip) and access to PyPI are needed. Builds are reproducible: the same source
and dependency versions give the same file, and so the same build id.

Layout of site-packages in the pyz: everything that is the same for every X.Y
(pure-Python packages, abi3 wheels such as pynacl and bcrypt) once; extension
modules named for one CPython (`_yaml.cpython-312-x86_64-linux-gnu.so`) beside
them, since each CPython imports only its own; and under by-python/cpXY/ what
differs otherwise (the .dist-info of those binary packages, or a whole package
that differs between versions). _pocket_python.pth puts this CPython's directory
on sys.path when shiv adds site-packages.

Targets (the pyz holds binary wheels for one CPU kind and C library):
  this machine          `python build_zipapp.py` (on Linux with glibc it downloads
                        wheels for every CPython; where PyPI has none, it builds for
                        this Python only, and pip may compile dependencies here)
  x86_64, aarch64 glibc cross build from PyPI wheels, e.g.
                        `python build_zipapp.py --platform aarch64`
                        (64-bit Raspberry Pi OS / Debian bookworm: glibc 2.36)
  armv7l, OpenBSD       PyPI has no wheels for pynacl, cffi, pyyaml there: copy the
                        source to the box and run `python3 build_zipapp.py` on it
                        (the pyz then runs on that box's Python X.Y only).
  musllinux (Alpine)    accepted (e.g. musllinux_1_2_aarch64) but not tested.

A build downloads wheels only (pip --only-binary=:all:) for every platform tag
from the target's glibc down to manylinux2014, and fails, naming the
dependencies, if one has no wheel for a CPython given with --python-version; from
the default list such a CPython is left out with a warning. pip evaluates
environment markers for the Python that runs the build; a dependency that a
marker requires only on another X.Y is added for that X.Y (see missing_requirements).

A service user without a writable home needs SHIV_ROOT set to a writable
directory; delete the old pocket.pyz_* directories there after an upgrade.
"""

import argparse
import csv
import hashlib
import importlib.util
import json
import platform
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import venv
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DEFAULT_OUTPUT = ROOT / "dist" / "pocket.pyz"
ENTRY_POINT = "pocketserver.cli:main"
SHEBANG = "/usr/bin/env python3"
# Extras built in unless --extras says otherwise ("--extras none": no extras). An
# extra that cannot be installed for the target (no wheel, nothing to compile it
# with) is dropped with a warning, so the default build works everywhere.
DEFAULT_EXTRAS = ["thumbnails"]
# The CPythons a pyz is built for unless --python-version says otherwise. One that
# lacks a wheel for some binary dependency on the target is left out with a warning.
PYTHON_VERSIONS = ("3.11", "3.12", "3.13", "3.14")
# Under site-packages: cpXY/ directories of what differs between CPython versions.
VERSIONS_DIR = "by-python"
# The module that puts by-python/cpXY on sys.path, and the .pth line that runs it
# when shiv's bootstrap calls site.addsitedir() on the unpacked site-packages.
SELECT_MODULE = "_pocket_python"
SELECT_MODULE_SOURCE = f'''"""pocket.pyz: put this CPython's own packages on sys.path.

build_zipapp.py wrote this. {SELECT_MODULE}.pth imports it when shiv adds
site-packages; shiv then moves every directory added before the system's own.
"""

import os
import site
import sys

_dir = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "{VERSIONS_DIR}", "cp%d%d" % sys.version_info[:2]
)
if os.path.isdir(_dir):
    site.addsitedir(_dir)
'''
# The zipapp's __main__.py: refuse an unsupported Python in one line before shiv
# unpacks anything, then run shiv's bootstrap. Plain enough for any Python to parse.
MAIN_TEMPLATE = """\
# -*- coding: utf-8 -*-
# pocket.pyz (build_zipapp.py): check the Python, then start shiv's bootstrap.
import platform
import sys
import sysconfig

SUPPORTED = {supported!r}
_here = "%d.%d" % tuple(sys.version_info[:2])
if (
    platform.python_implementation() != "CPython"
    or _here not in SUPPORTED
    or sysconfig.get_config_var("Py_GIL_DISABLED")
):
    sys.exit(
        "pocket.pyz runs on CPython %s, not on %s %s (%s): start it with one of those,"
        " e.g. python%s %s"
        % (
            ", ".join(SUPPORTED),
            platform.python_implementation(),
            platform.python_version(),
            sys.executable,
            SUPPORTED[-1],
            sys.argv[0],
        )
    )

import _bootstrap

_bootstrap.bootstrap()
"""

# Short names for common targets; glibc 2.36 is Debian bookworm (Raspberry Pi OS 12).
PLATFORM_ALIASES = {
    "aarch64": "manylinux_2_36_aarch64",
    "arm64": "manylinux_2_36_aarch64",
    "armv7l": "manylinux_2_36_armv7l",
    "armhf": "manylinux_2_36_armv7l",
    "x86_64": "manylinux_2_36_x86_64",
    "amd64": "manylinux_2_36_x86_64",
}
# Oldest glibc with manylinux wheels per architecture (PEP 599 / PEP 600).
_OLDEST_GLIBC_MINOR = {"x86_64": 5, "i686": 5}
_DEFAULT_OLDEST_GLIBC_MINOR = 17
# Legacy aliases of PEP 600 tags: glibc minor version -> legacy tag name.
_LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
_LEGACY_INPUT = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}

_MANYLINUX_RE = re.compile(r"manylinux_2_(\d+)_(\w+)")
_LEGACY_RE = re.compile(r"(manylinux2014|manylinux2010|manylinux1)_(\w+)")
_MUSLLINUX_RE = re.compile(r"musllinux_1_(\d+)_(\w+)")
_PYTHON_VERSION_RE = re.compile(r"3\.(\d+)")
# An extension module built for one CPython X.Y, e.g. _yaml.cpython-312-x86_64-linux-gnu.so.
_EXT_MODULE_RE = re.compile(r"\.cpython-3(\d+)[^./]*\.so$")
_NAME_RE = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_MISSING_RE = re.compile(r"No matching distribution found for (\S+)")
_NETWORK_RE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|ConnectTimeout"
    r"|Temporary failure in name resolution|ProxyError|SSLError"
)


class BuildError(Exception):
    """A build step failed; the message is meant for the user."""


class NoWheelError(BuildError):
    """A dependency has no wheel for the target (platform and CPython X.Y)."""


def expand_platform(tag: str) -> list[str]:
    """Return every pip platform tag a target accepts, newest first.

    `manylinux_2_36_aarch64` gives manylinux_2_36 ... manylinux_2_17 and
    manylinux2014 for aarch64; an alias such as `aarch64` is resolved first.
    musllinux tags expand down to musllinux_1_1. Other tags are returned as given.

    Raises:
        ValueError: for a manylinux tag older than that architecture has.
    """
    tag = PLATFORM_ALIASES.get(tag, tag)
    if match := _LEGACY_RE.fullmatch(tag):
        tag = f"manylinux_2_{_LEGACY_INPUT[match[1]]}_{match[2]}"
    if match := _MANYLINUX_RE.fullmatch(tag):
        newest, arch = int(match[1]), match[2]
        oldest = _OLDEST_GLIBC_MINOR.get(arch, _DEFAULT_OLDEST_GLIBC_MINOR)
        if newest < oldest:
            raise ValueError(f"{tag}: no manylinux wheels exist for {arch} before glibc 2.{oldest}")
        tags = []
        for minor in range(newest, oldest - 1, -1):
            tags.append(f"manylinux_2_{minor}_{arch}")
            if minor in _LEGACY_MANYLINUX:
                tags.append(f"{_LEGACY_MANYLINUX[minor]}_{arch}")
        return tags
    if match := _MUSLLINUX_RE.fullmatch(tag):
        newest, arch = int(match[1]), match[2]
        return [f"musllinux_1_{minor}_{arch}" for minor in range(newest, 0, -1)]
    return [tag]


def native_platforms() -> list[str]:
    """The manylinux tags of this machine (Linux with glibc), or [] elsewhere.

    Where PyPI has wheels for them, a build here gets every CPython's wheels;
    elsewhere (musl, OpenBSD, macOS) pip installs for this Python only.
    """
    if not sys.platform.startswith("linux"):
        return []
    libc, version = platform.libc_ver()
    match = re.match(r"2\.(\d+)", version)
    if libc != "glibc" or not match:
        return []
    try:
        return expand_platform(f"manylinux_2_{match[1]}_{platform.machine()}")
    except ValueError:
        return []


def parse_python_versions(value: str | None, requires_python: str) -> list[str]:
    """The CPython X.Y list of --python-version ("3.11,3.12"), or the default list.

    Raises:
        BuildError: for a malformed version or one below pyproject's floor.
    """
    if value is None:
        floor = re.fullmatch(r"\s*>=\s*3\.(\d+)\s*", requires_python)
        return [v for v in PYTHON_VERSIONS if not floor or int(v[2:]) >= int(floor[1])]
    versions: list[str] = []
    for version in filter(None, (part.strip() for part in value.split(","))):
        check_python_version(version, requires_python)
        if version not in versions:
            versions.append(version)
    if not versions:
        raise BuildError("--python-version needs at least one X.Y, e.g. 3.11,3.12")
    return sorted(versions, key=lambda v: int(v[2:]))


def abi_tag(version: str) -> str:
    """cp312 for 3.12."""
    return "cp" + version.replace(".", "")


@dataclass(frozen=True)
class Target:
    """Another machine to build for: its platform tags and CPython X.Y."""

    platforms: tuple[str, ...]
    python_version: str

    @property
    def abi(self) -> str:
        return abi_tag(self.python_version)

    def pip_args(self) -> list[str]:
        """The pip options that select wheels for this target only."""
        args = ["--only-binary=:all:", "--implementation", "cp"]
        args += ["--python-version", self.python_version, "--abi", self.abi]
        for tag in self.platforms:
            args += ["--platform", tag]
        return args


@dataclass
class Project:
    """What the build needs from pyproject.toml."""

    dependencies: list[str]
    extras: dict[str, list[str]] = field(default_factory=dict)
    requires_python: str = ""


def read_project(pyproject: Path) -> Project:
    """Read the runtime dependencies and extras from a pyproject.toml file."""
    with pyproject.open("rb") as f:
        table = tomllib.load(f)["project"]
    return Project(
        dependencies=list(table.get("dependencies", [])),
        extras={k: list(v) for k, v in table.get("optional-dependencies", {}).items()},
        requires_python=table.get("requires-python", ""),
    )


def requirement_name(requirement: str) -> str:
    """The normalised project name of a requirement string (PEP 503)."""
    match = _NAME_RE.match(requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match[1]).lower()


def missing_distributions(pip_output: str) -> list[str]:
    """The names pip reported as having no matching distribution."""
    return [requirement_name(m) for m in _MISSING_RE.findall(pip_output)]


def check_python_version(version: str, requires_python: str) -> None:
    """Raise BuildError if X.Y is malformed or below pyproject's `>=X.Y`."""
    match = _PYTHON_VERSION_RE.fullmatch(version)
    if not match:
        raise BuildError(f"--python-version must look like 3.11, not {version!r}")
    floor = re.fullmatch(r"\s*>=\s*3\.(\d+)\s*", requires_python)
    if floor and int(match[1]) < int(floor[1]):
        raise BuildError(f"pocketserver requires Python {requires_python}, not {version}")


def select_extras(requested: Sequence[str], project: Project) -> list[str]:
    """Split comma lists, drop duplicates, and warn about extras pyproject lacks."""
    names: list[str] = []
    for item in requested:
        for name in filter(None, (part.strip() for part in item.split(","))):
            if name not in project.extras:
                known = ", ".join(sorted(project.extras)) or "none"
                warn(f"extra {name!r} is not in pyproject.toml (known: {known}); skipped")
            elif name not in names:
                names.append(name)
    return names


def shiv_requirement(project: Project) -> str:
    """shiv as pinned in any extra of pyproject.toml, else plain `shiv`."""
    for requirements in project.extras.values():
        for requirement in requirements:
            if requirement_name(requirement) == "shiv":
                return requirement
    return "shiv"


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass(frozen=True)
class Tools:
    """The interpreter that runs pip and shiv, and whether to show their output."""

    python: str = sys.executable
    verbose: bool = False

    def pip(self, *args: str) -> list[str]:
        return [self.python, "-m", "pip", "--disable-pip-version-check", *args]

    def run(self, command: list[str], *, what: str) -> None:
        """Run a command; show its output if it fails (always, if verbose)."""
        if self.verbose:
            print("+", " ".join(command), file=sys.stderr)
            if subprocess.run(command, check=False).returncode != 0:
                raise BuildError(f"{what} failed")
            return
        result = subprocess.run(command, check=False, capture_output=True, text=True)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise BuildError(f"{what} failed:\n{output}")


def build_tools(scratch: Path, shiv_requirement: str, *, verbose: bool) -> Tools:
    """This interpreter if it has pip and shiv, else a throwaway venv given them."""
    if all(importlib.util.find_spec(name) for name in ("pip", "shiv")):
        return Tools(sys.executable, verbose)
    has_pip = importlib.util.find_spec("pip") is not None
    env_dir = scratch / "build-env"
    print(f"installing {shiv_requirement} into a temporary build environment")
    try:
        # Without pip of its own the venv sees this Python's pip.
        venv.EnvBuilder(with_pip=not has_pip, system_site_packages=has_pip).create(env_dir)
    except (OSError, subprocess.CalledProcessError) as e:
        raise BuildError(
            f"could not create a build environment ({e}); install pip and venv for this"
            " Python (Debian: apt install python3-venv python3-pip; OpenBSD: pkg_add py3-pip)"
        ) from e
    tools = Tools(str(env_dir / "bin" / "python"), verbose)
    tools.run(tools.pip("install", "-q", shiv_requirement), what=f"installing {shiv_requirement}")
    return tools


def build_project_wheel(wheel_dir: Path, scratch: Path, tools: Tools) -> Path:
    """Build pocketserver's wheel from a copy of the tree (no build/ left in it)."""
    source = scratch / "source"
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "venv", "dist", "build", "*.egg-info", "__pycache__", ".*_cache"
    )
    shutil.copytree(ROOT, source, ignore=ignore, symlinks=True)
    tools.run(
        tools.pip("wheel", "--no-deps", "-q", "-w", str(wheel_dir), str(source)),
        what="building the pocketserver wheel",
    )
    wheels = sorted(wheel_dir.glob("pocketserver-*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one pocketserver wheel in {wheel_dir}, found {len(wheels)}")
    return wheels[0]


def probe(
    requirements: list[str], target: Target, download_dir: Path, tools: Tools
) -> tuple[bool, str]:
    """Download wheels for the target; return (success, pip's output)."""
    command = tools.pip("download", "-d", str(download_dir), *target.pip_args(), *requirements)
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    output = result.stdout + result.stderr
    if result.returncode != 0 and _NETWORK_RE.search(output):
        tail = "\n".join(output.strip().splitlines()[-5:])
        raise BuildError(f"pip could not reach the package index:\n{tail}")
    return result.returncode == 0, output


def download_for_target(
    project: Project, extras: list[str], target: Target, download_dir: Path, tools: Tools
) -> list[str]:
    """Fetch every wheel the target needs into download_dir.

    Returns the extras kept: an extra with a missing wheel is dropped with a warning.

    Raises:
        BuildError: naming each runtime dependency that has no wheel for the target.
    """
    remaining = list(project.dependencies)
    missing: list[str] = []
    while True:
        ok, output = probe(remaining, target, download_dir, tools)
        if ok or not remaining:
            break
        names = missing_distributions(output)
        if not names:
            tail = "\n".join(output.strip().splitlines()[-20:])
            raise BuildError(f"pip could not resolve the dependencies for the target:\n{tail}")
        missing += [n for n in names if n not in missing]
        kept = [r for r in remaining if requirement_name(r) not in names]
        if len(kept) == len(remaining):  # a dependency of a dependency: cannot go on
            break
        remaining = kept
    if missing:
        raise NoWheelError(
            "no wheel on PyPI for "
            + ", ".join(missing)
            + f" on {target.platforms[0]} with CPython {target.python_version}"
            + " (their own dependencies may lack wheels too).\n"
            "Build on the target machine itself instead: copy the source there and run"
            " `python3 build_zipapp.py` (pip then compiles what it needs; see --help)."
        )
    kept_extras: list[str] = []
    for extra in extras:
        requirements = project.dependencies + project.extras[extra]
        ok, output = probe(requirements, target, download_dir, tools)
        if ok:
            kept_extras.append(extra)
        else:
            lacking = ", ".join(missing_distributions(output)) or "a dependency"
            warn(f"extra {extra!r} dropped: no wheel for {lacking} on {target.platforms[0]}")
    return kept_extras


def install_into(
    site_packages: Path,
    wheel: Path,
    requirements: list[str],
    target: Target | None,
    download_dir: Path,
    tools: Tools,
) -> None:
    """pip install the wheel and requirements into a staging site-packages."""
    args = ["install", "--target", str(site_packages), "--no-compile", "-q"]
    if target is not None:
        args += ["--no-index", "--find-links", str(download_dir), *target.pip_args()]
        # pip install checks Requires-Python against the Python running it (pip
        # download checked it against the target's X.Y already).
        args += ["--ignore-requires-python"]
    tools.run(tools.pip(*args, str(wheel), *requirements), what="installing dependencies")
    strip_build_paths(site_packages)


def strip_build_paths(site_packages: Path) -> None:
    """Drop the console scripts and direct_url.json files pip wrote, and their RECORD lines.

    Nothing runs them in the zipapp, and they name paths of this machine (the
    interpreter, the temporary wheel), which would change every build's id.
    """
    shutil.rmtree(site_packages / "bin", ignore_errors=True)
    for path in site_packages.glob("*.dist-info/direct_url.json"):
        path.unlink()
    for record in site_packages.glob("*.dist-info/RECORD"):
        lines = record.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [
            line
            for line in lines
            if not line.startswith("../../bin/")
            and not line.split(",", 1)[0].endswith(".dist-info/direct_url.json")
        ]
        if kept != lines:
            record.write_text("".join(kept), encoding="utf-8")


def missing_requirements(site_packages: Path, version: str) -> list[str]:
    """Requirements of the installed distributions that CPython `version` lacks.

    pip evaluates environment markers for the Python running the build, not for
    --python-version; this evaluates them again for `version` and returns, without
    their markers, the requirements whose project is not installed. [] if neither
    `packaging` nor pip's copy of it can be imported to read markers with.
    """
    try:
        from packaging.markers import default_environment
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:
        try:
            from pip._vendor.packaging.markers import default_environment
            from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
        except ImportError:
            return []
    environment = {
        **default_environment(),
        "python_version": version,
        "python_full_version": f"{version}.0",
        "extra": "",
    }
    installed = {requirement_name(p.name.split("-")[0]) for p in site_packages.glob("*.dist-info")}
    missing: list[str] = []
    for metadata in sorted(site_packages.glob("*.dist-info/METADATA")):
        for line in metadata.read_text(encoding="utf-8").splitlines():
            if not line.startswith("Requires-Dist:"):
                if not line:  # the headers end at the first empty line
                    break
                continue
            try:
                requirement = Requirement(line.split(":", 1)[1].strip())
            except InvalidRequirement:
                continue
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue
            if requirement_name(requirement.name) not in installed:
                text = f"{requirement.name}{requirement.specifier}"
                if text not in missing:
                    missing.append(text)
    return missing


def stage_wheels(
    site_packages: Path,
    wheel: Path,
    project: Project,
    extras: list[str],
    target: Target,
    download_dir: Path,
    tools: Tools,
) -> None:
    """Install pocketserver and the wheels of its dependencies for one target CPython.

    Raises:
        NoWheelError: a dependency has no wheel for the target.
    """
    kept = download_for_target(project, extras, target, download_dir, tools)
    requirements = [r for extra in kept for r in project.extras[extra]]
    install_into(site_packages, wheel, requirements, target, download_dir, tools)
    if missing := missing_requirements(site_packages, target.python_version):
        ok, output = probe(missing, target, download_dir, tools)
        if not ok:
            names = ", ".join(missing_distributions(output)) or ", ".join(missing)
            raise NoWheelError(f"no wheel on PyPI for {names} (needed on {target.python_version})")
        install_into(site_packages, wheel, requirements + missing, target, download_dir, tools)
        if still := missing_requirements(site_packages, target.python_version):
            raise BuildError(f"CPython {target.python_version} still lacks {', '.join(still)}")


def stage_here(
    site_packages: Path, wheel: Path, requirements: list[str], extras_given: bool, tools: Tools
) -> None:
    """Install pocketserver and its dependencies for this Python with plain pip.

    pip may compile a dependency that has no wheel here. When the default extras
    (Pillow) cannot be installed, the build goes on without them.
    """
    try:
        install_into(site_packages, wheel, requirements, None, site_packages, tools)
    except BuildError:
        if extras_given or not requirements:
            raise
        warn("default extras could not be installed for this Python; built without them")
        shutil.rmtree(site_packages, ignore_errors=True)
        install_into(site_packages, wheel, [], None, site_packages, tools)


# --- one site-packages for several CPython versions -----------------------------------


def installed_files(site_packages: Path) -> dict[str, str]:
    """Every file under site_packages (relative POSIX path) and its SHA-256."""
    return {
        path.relative_to(site_packages).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(site_packages.rglob("*"))
        if path.is_file()
    }


def file_groups(site_packages: Path, files: set[str]) -> dict[str, set[str]]:
    """The files of each installed distribution, keyed by its .dist-info name (RECORD).

    A file that no RECORD lists makes a group of its top-level name ("?name").
    """
    groups: dict[str, set[str]] = {}
    owned: set[str] = set()
    for record in sorted(site_packages.glob("*.dist-info/RECORD")):
        group = groups.setdefault(record.parent.name, set())
        for row in csv.reader(record.read_text(encoding="utf-8").splitlines()):
            path = posixpath.normpath(row[0]) if row else ""
            if path in files and path not in owned:
                group.add(path)
                owned.add(path)
    for path in sorted(files - owned):
        groups.setdefault("?" + path.split("/")[0], set()).add(path)
    return groups


def ext_module_version(path: str) -> str | None:
    """ "3.12" for an extension module only CPython 3.12 imports, else None."""
    match = _EXT_MODULE_RE.search(path)
    return f"3.{match[1]}" if match else None


def plan_layout(staged: dict[str, Path]) -> dict[str, Path]:
    """Where each file of the per-version installs goes in the pyz: {destination: source}.

    `staged` maps each CPython X.Y to its own complete install. A distribution
    installed for every X.Y whose files are the same for all, apart from extension
    modules named for one X.Y, goes to the top level once, with each X.Y's
    extension modules side by side (CPython imports only the ones with its own
    suffix, PEP 3149). Its .dist-info goes there too if the same for all, else to
    by-python/cpXY/. Any other distribution (another release for one X.Y, files
    that differ, or installed for some X.Y only) goes whole to by-python/cpXY/ of
    each X.Y that has it.
    """
    hashes = {v: installed_files(root) for v, root in staged.items()}
    groups = {v: file_groups(root, set(hashes[v])) for v, root in staged.items()}
    plan: dict[str, Path] = {}
    for key in sorted(set().union(*groups.values())):
        present = {v: groups[v][key] for v in staged if key in groups[v]}
        shared = _shared_files(key, present, hashes) if present.keys() == staged.keys() else set()
        for version, files in present.items():
            for path in sorted(files):
                dest = path if path in shared else f"{VERSIONS_DIR}/{abi_tag(version)}/{path}"
                plan.setdefault(dest, staged[version] / path)
    return plan


def _shared_files(
    key: str, present: dict[str, set[str]], hashes: dict[str, dict[str, str]]
) -> set[str]:
    """The files of one distribution, installed for every X.Y, that go to the top level."""
    paths = set().union(*present.values())
    info = {p for p in paths if key.endswith(".dist-info") and p.startswith(key + "/")}

    def same_for_all(path: str) -> bool:
        digests = {hashes[version].get(path) for version in present}
        return len(digests) == 1 and None not in digests

    def own_module(path: str) -> bool:
        return {v for v in present if path in present[v]} == {ext_module_version(path)}

    if not all(same_for_all(p) or own_module(p) for p in paths - info):
        return set()
    if all(same_for_all(p) for p in info):
        return paths
    return paths - info


def write_layout(plan: dict[str, Path], site_packages: Path) -> None:
    """Copy the planned files into site_packages and add the sys.path selector."""
    for dest, source in sorted(plan.items()):
        target = site_packages / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    (site_packages / f"{SELECT_MODULE}.py").write_text(SELECT_MODULE_SOURCE, encoding="utf-8")
    (site_packages / f"{SELECT_MODULE}.pth").write_text(f"import {SELECT_MODULE}\n")


def replace_main(pyz: Path, main_py: str) -> None:
    """Give the zipapp another __main__.py; every other entry is kept as it was."""
    data = pyz.read_bytes()
    prefix = data[: data.index(b"\n") + 1] if data.startswith(b"#!") else b""
    rewritten = pyz.with_name(pyz.name + ".main")
    with zipfile.ZipFile(pyz) as old, rewritten.open("wb") as fd:
        fd.write(prefix)
        with zipfile.ZipFile(fd, "w") as new:
            for info in old.infolist():
                content = main_py.encode() if info.filename == "__main__.py" else old.read(info)
                clone = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                clone.compress_type = info.compress_type
                clone.external_attr = info.external_attr
                new.writestr(clone, content)
    rewritten.chmod(pyz.stat().st_mode)
    rewritten.replace(pyz)


def supported_pythons(pyz: Path) -> tuple[str, ...]:
    """The CPython versions a built pocket.pyz runs on (read from its __main__.py)."""
    with zipfile.ZipFile(pyz) as archive:
        main_py = archive.read("__main__.py").decode()
    match = re.search(r"^SUPPORTED = (\(.*\))$", main_py, re.MULTILINE)
    if not match:
        return ()
    return tuple(re.findall(r"'(3\.\d+)'", match[1]))


def build_id(pyz: Path) -> str:
    with zipfile.ZipFile(pyz) as archive:
        return str(json.loads(archive.read("environment.json"))["build_id"])


def resolve_targets(
    args: argparse.Namespace, project: Project
) -> tuple[list[str], list[str] | None]:
    """The CPython versions to build for and the platform tags of --platform (None: here).

    Raises:
        BuildError: for a malformed or too old version, or an impossible platform tag.
    """
    versions = parse_python_versions(args.python_version, project.requires_python)
    if not args.platform:
        return versions, None
    try:
        return versions, expand_platform(args.platform)
    except ValueError as e:
        raise BuildError(str(e)) from e


def stage_all(
    args: argparse.Namespace,
    project: Project,
    extras: list[str],
    wheel: Path,
    scratch: Path,
    tools: Tools,
) -> dict[str, Path]:
    """Install everything once per CPython X.Y; return {X.Y: its site-packages}.

    A version given with --python-version must build; from the default list a
    version without wheels is left out with a warning. Built here (no --platform),
    this Python's own version falls back to plain pip, which may compile.

    Raises:
        BuildError: a version given with --python-version cannot be built, or none can.
    """
    versions, platforms = resolve_targets(args, project)
    given = args.python_version is not None
    if platforms is None:
        platforms = native_platforms()
    elif not wheel.name.endswith("-none-any.whl"):
        raise BuildError(f"{wheel.name} is not pure Python: build on the target instead")
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    staged: dict[str, Path] = {}
    errors: list[BuildError] = []
    for version in versions:
        site_packages = scratch / "stage" / abi_tag(version)
        try:
            if not platforms:
                raise NoWheelError(
                    f"PyPI has no wheels for this machine; run build_zipapp.py with python{version}"
                )
            print(f"downloading wheels for {platforms[0]}, CPython {version}")
            download_dir = scratch / "download" / abi_tag(version)
            target = Target(tuple(platforms), version)
            stage_wheels(site_packages, wheel, project, extras, target, download_dir, tools)
        except NoWheelError as e:
            shutil.rmtree(site_packages, ignore_errors=True)
            if not args.platform and version == here:
                print(f"installing for this Python ({here}) with pip, which may compile")
                requirements = [r for extra in extras for r in project.extras[extra]]
                stage_here(site_packages, wheel, requirements, bool(args.extras), tools)
            elif given:
                raise
            else:
                warn(f"CPython {version} left out: {str(e).splitlines()[0]}")
                errors.append(e)
                continue
        staged[version] = site_packages
    if not staged:
        raise errors[0] if errors else BuildError("no CPython version to build for")
    return staged


def build(args: argparse.Namespace) -> Path:
    """Build the zipapp described by the parsed arguments; return its path."""
    project = read_project(ROOT / "pyproject.toml")
    requested = args.extras or DEFAULT_EXTRAS
    extras = select_extras([e for e in requested if e != "none"], project)
    resolve_targets(args, project)  # bad arguments fail before any work
    output = Path(args.output).expanduser().resolve()
    with tempfile.TemporaryDirectory(prefix="pocket-build-") as tmp:
        scratch = Path(tmp)
        tools = build_tools(scratch, shiv_requirement(project), verbose=args.verbose)
        wheel = build_project_wheel(scratch / "wheel", scratch, tools)
        staged = stage_all(args, project, extras, wheel, scratch, tools)
        site_packages = scratch / "site-packages"
        write_layout(plan_layout(staged), site_packages)
        built = scratch / output.name
        shiv = [tools.python, "-m", "shiv", "--site-packages", str(site_packages)]
        shiv += ["-e", args.entry_point, "-o", str(built), "-p", args.shebang]
        shiv += ["--reproducible", "--compressed"]
        tools.run(shiv, what="shiv")
        replace_main(built, MAIN_TEMPLATE.format(supported=tuple(staged)))
        # Replace the output in one step: a failed build, or a full SD card, never
        # leaves a half-written pocket.pyz where a working one was.
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(f".{output.name}.partial")
        try:
            shutil.copy2(built, partial)
            partial.replace(output)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return output


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="build_zipapp.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="platform aliases:\n"
        + "".join(f"  {k:8} {v}\n" for k, v in PLATFORM_ALIASES.items())
        + "For another glibc pass its tag: `ldd --version` on the target prints it\n"
        + "(2.31 -> manylinux_2_31_aarch64).",
    )
    parser.add_argument(
        "-o",
        "--output",
        default=str(DEFAULT_OUTPUT),
        help="where to write the zipapp (%(default)s)",
    )
    parser.add_argument(
        "--extras",
        action="append",
        default=[],
        metavar="NAME",
        help="optional extras from pyproject.toml to include (repeat or comma-separate;"
        f" default: {','.join(DEFAULT_EXTRAS)}; 'none' for none);"
        " an unknown extra, or one without wheels for a cross build's target, is skipped"
        " with a warning",
    )
    parser.add_argument(
        "--platform",
        metavar="TAG",
        help="build for another machine: an alias (aarch64, armv7l, x86_64: glibc 2.36)"
        " or a pip platform tag such as manylinux_2_31_aarch64 or musllinux_1_2_aarch64;"
        " every older compatible tag is added",
    )
    parser.add_argument(
        "--python-version",
        metavar="X.Y[,X.Y...]",
        help="the CPython versions to build for (default: "
        + ",".join(PYTHON_VERSIONS)
        + ", each one that has wheels; bookworm has 3.11, trixie 3.13, Ubuntu 24.04 3.12)",
    )
    parser.add_argument(
        "--shebang",
        default=SHEBANG,
        help="interpreter line of the zipapp (%(default)s); e.g. '/usr/local/bin/python3.11'",
    )
    parser.add_argument(
        "--entry-point", default=ENTRY_POINT, help="module:function to run (%(default)s)"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show pip's and shiv's output as they run"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the zipapp; return the process exit code."""
    args = parse_args(argv)
    try:
        output = build(args)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    size_mb = output.stat().st_size / 1_000_000
    print(f"built {output} ({size_mb:.1f} MB)")
    print(f"it runs on CPython {', '.join(supported_pythons(output))}")
    print(
        f"note: the first run unpacks to $SHIV_ROOT (default ~/.shiv)/{output.name}_<build id>/"
        f" (this one: {build_id(output)[:12]}...); every new build adds one, delete old ones."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
