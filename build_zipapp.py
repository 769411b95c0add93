#!/usr/bin/env python3
"""Build dist/pocket.pyz: pocketserver and all its runtime dependencies in one file.

The zipapp is made with shiv. Its shebang is `/usr/bin/env python3` and it runs
`pocketserver.cli:main`. On its first start it unpacks into $SHIV_ROOT (default
~/.shiv)/pocket.pyz_<build id>/; each different build adds one such directory.

Steps: build pocketserver as a wheel from a copy of the source tree (the checkout
is left untouched), install that wheel and its dependencies (read from
pyproject.toml) into a staging directory with pip, and pack the directory with
shiv. If this Python lacks shiv, it is installed into a throwaway venv first, so
only Python, pip (or venv's ensurepip) and access to PyPI are needed. Builds are
reproducible: the same source and dependency versions give the same file, and
so the same build id.

Targets (the pyz holds binary wheels: the target needs the same CPython X.Y):
  this machine          `python build_zipapp.py` (pip may compile dependencies
                        from source here if no wheel fits)
  x86_64, aarch64 glibc cross build from PyPI wheels, e.g.
                        `python build_zipapp.py --platform aarch64 --python-version 3.11`
                        (64-bit Raspberry Pi OS / Debian bookworm: glibc 2.36)
  armv7l, OpenBSD       PyPI has no wheels for pynacl, cffi, pyyaml there: copy the
                        source to the box and run `python3 build_zipapp.py` on it.
  musllinux (Alpine)    accepted (e.g. musllinux_1_2_aarch64) but not tested.

A cross build downloads wheels only (pip --only-binary=:all:) for every
platform tag from the target's glibc down to manylinux2014, and fails, naming
the dependencies, if one has no wheel for the target. Run it with the same
Python X.Y as the target: pip evaluates environment markers for this machine.

A service user without a writable home needs SHIV_ROOT set to a writable
directory; delete the old pocket.pyz_* directories there after an upgrade.
"""

import argparse
import importlib.util
import json
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
_NAME_RE = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_MISSING_RE = re.compile(r"No matching distribution found for (\S+)")
_NETWORK_RE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|ConnectTimeout"
    r"|Temporary failure in name resolution|ProxyError|SSLError"
)


class BuildError(Exception):
    """A build step failed; the message is meant for the user."""


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


@dataclass(frozen=True)
class Target:
    """Another machine to build for: its platform tags and CPython X.Y."""

    platforms: tuple[str, ...]
    python_version: str

    @property
    def abi(self) -> str:
        return "cp" + self.python_version.replace(".", "")

    def pip_args(self) -> list[str]:
        """The pip options that select wheels for this target only."""
        args = ["--only-binary=:all:", "--implementation", "cp"]
        args += ["--python-version", self.python_version, "--abi", self.abi]
        for platform in self.platforms:
            args += ["--platform", platform]
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
        raise BuildError(
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


def build_id(pyz: Path) -> str:
    with zipfile.ZipFile(pyz) as archive:
        return str(json.loads(archive.read("environment.json"))["build_id"])


def build(args: argparse.Namespace) -> Path:
    """Build the zipapp described by the parsed arguments; return its path."""
    project = read_project(ROOT / "pyproject.toml")
    requested = args.extras or DEFAULT_EXTRAS
    extras = select_extras([e for e in requested if e != "none"], project)
    target = None
    if args.platform:
        if not args.python_version:
            raise BuildError("--platform needs --python-version (the target's python3 X.Y)")
        check_python_version(args.python_version, project.requires_python)
        try:
            target = Target(tuple(expand_platform(args.platform)), args.python_version)
        except ValueError as e:
            raise BuildError(str(e)) from e
        here = f"{sys.version_info.major}.{sys.version_info.minor}"
        if args.python_version != here:
            warn(f"building with Python {here} for {args.python_version}: markers use {here}")
    elif args.python_version:
        raise BuildError("--python-version only makes sense with --platform")

    output = Path(args.output).expanduser().resolve()
    with tempfile.TemporaryDirectory(prefix="pocket-build-") as tmp:
        scratch = Path(tmp)
        tools = build_tools(scratch, shiv_requirement(project), verbose=args.verbose)
        wheel = build_project_wheel(scratch / "wheel", scratch, tools)
        if target is not None and not wheel.name.endswith("-none-any.whl"):
            raise BuildError(f"{wheel.name} is not pure Python: build on the target instead")
        download_dir = scratch / "download"
        if target is not None:
            print(f"downloading wheels for {target.platforms[0]}, CPython {target.python_version}")
            extras = download_for_target(project, extras, target, download_dir, tools)
        requirements = [r for extra in extras for r in project.extras[extra]]
        site_packages = scratch / "site-packages"
        try:
            install_into(site_packages, wheel, requirements, target, download_dir, tools)
        except BuildError:
            if args.extras or not requirements:
                raise
            # The default extras (Pillow) may have no wheel here and no compiler.
            warn(f"default extras {', '.join(extras)} could not be installed; built without")
            shutil.rmtree(site_packages, ignore_errors=True)
            install_into(site_packages, wheel, [], target, download_dir, tools)
        built = scratch / output.name
        shiv = [tools.python, "-m", "shiv", "--site-packages", str(site_packages)]
        shiv += ["-e", args.entry_point, "-o", str(built), "-p", args.shebang]
        shiv += ["--reproducible", "--compressed"]
        tools.run(shiv, what="shiv")
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
        metavar="X.Y",
        help="the target's CPython version (required with --platform; bookworm has 3.11)",
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
    print(
        f"note: the first run unpacks to $SHIV_ROOT (default ~/.shiv)/{output.name}_<build id>/"
        f" (this one: {build_id(output)[:12]}...); every new build adds one, delete old ones."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
