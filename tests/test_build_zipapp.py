"""Tests of build_zipapp.py: tag expansion, arguments, and real builds (slow)."""

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import pocketserver

ROOT = Path(__file__).resolve().parent.parent


def _load_build_zipapp():
    spec = importlib.util.spec_from_file_location("build_zipapp", ROOT / "build_zipapp.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_zipapp"] = module
    spec.loader.exec_module(module)
    return module


bz = _load_build_zipapp()


# --- platform tags -------------------------------------------------------------------


def test_aarch64_alias_expands_from_bookworm_glibc_down_to_manylinux2014():
    tags = bz.expand_platform("aarch64")
    assert tags[0] == "manylinux_2_36_aarch64"
    assert tags[-2:] == ["manylinux_2_17_aarch64", "manylinux2014_aarch64"]
    assert tags == bz.expand_platform("manylinux_2_36_aarch64")
    assert len(tags) == (36 - 17 + 1) + 1
    assert [t for t in tags if "manylinux_2_" in t] == [
        f"manylinux_2_{minor}_aarch64" for minor in range(36, 16, -1)
    ]


def test_never_offers_wheels_newer_than_the_targets_glibc():
    tags = bz.expand_platform("manylinux_2_31_aarch64")
    assert tags[0] == "manylinux_2_31_aarch64"
    assert "manylinux_2_32_aarch64" not in tags
    assert tags[-1] == "manylinux2014_aarch64"


def test_armv7l_alias():
    tags = bz.expand_platform("armv7l")
    assert tags[0] == "manylinux_2_36_armv7l"
    assert tags[-1] == "manylinux2014_armv7l"


def test_legacy_tag_input_is_expanded_like_its_pep600_name():
    assert bz.expand_platform("manylinux2014_aarch64") == [
        "manylinux_2_17_aarch64",
        "manylinux2014_aarch64",
    ]


def test_x86_64_goes_down_to_manylinux1():
    tags = bz.expand_platform("manylinux_2_28_x86_64")
    assert tags[0] == "manylinux_2_28_x86_64"
    assert "manylinux2014_x86_64" in tags
    assert "manylinux2010_x86_64" in tags
    assert tags[-2:] == ["manylinux_2_5_x86_64", "manylinux1_x86_64"]


def test_musllinux_expands_down_to_1_1():
    assert bz.expand_platform("musllinux_1_2_aarch64") == [
        "musllinux_1_2_aarch64",
        "musllinux_1_1_aarch64",
    ]


def test_other_tags_pass_through():
    assert bz.expand_platform("macosx_11_0_arm64") == ["macosx_11_0_arm64"]


def test_manylinux_older_than_the_architecture_is_refused():
    with pytest.raises(ValueError, match=r"glibc 2\.17"):
        bz.expand_platform("manylinux_2_12_aarch64")


def test_target_pip_args_select_binary_cpython_wheels_for_every_tag():
    target = bz.Target(tuple(bz.expand_platform("aarch64")), "3.11")
    args = target.pip_args()
    assert "--only-binary=:all:" in args
    assert args[args.index("--implementation") + 1] == "cp"
    assert args[args.index("--python-version") + 1] == "3.11"
    assert args[args.index("--abi") + 1] == "cp311"
    platforms = [args[i + 1] for i, a in enumerate(args) if a == "--platform"]
    assert platforms == list(target.platforms)


# --- pyproject and pip output --------------------------------------------------------


def test_reads_runtime_dependencies_from_pyproject():
    project = bz.read_project(ROOT / "pyproject.toml")
    names = {bz.requirement_name(r) for r in project.dependencies}
    assert {"pynacl", "trio", "pyyaml", "quart-trio"} <= names
    assert "pytest" not in names
    assert "test" in project.extras


@pytest.mark.parametrize(
    ("requirement", "name"),
    [
        ("PyNaCl>=1.5", "pynacl"),
        ("quart_trio>=0.11", "quart-trio"),
        ("types-PyYAML", "types-pyyaml"),
        ("zope.interface ; python_version>'3'", "zope-interface"),
        ("Pillow[avif]>=10", "pillow"),
    ],
)
def test_requirement_name(requirement, name):
    assert bz.requirement_name(requirement) == name


def test_missing_distributions_parses_pip_errors():
    output = (
        "ERROR: Could not find a version that satisfies the requirement pynacl>=1.5 "
        "(from versions: none)\n"
        "ERROR: No matching distribution found for pynacl>=1.5\n"
    )
    assert bz.missing_distributions(output) == ["pynacl"]
    assert bz.missing_distributions("Successfully downloaded trio") == []


def test_check_python_version():
    bz.check_python_version("3.11", ">=3.11")
    bz.check_python_version("3.13", ">=3.11")
    with pytest.raises(bz.BuildError, match="requires Python"):
        bz.check_python_version("3.10", ">=3.11")
    with pytest.raises(bz.BuildError, match="look like"):
        bz.check_python_version("311", ">=3.11")


def test_select_extras_splits_dedupes_and_skips_unknown(capsys):
    project = bz.Project(dependencies=[], extras={"thumbnails": ["Pillow"], "test": ["pytest"]})
    chosen = bz.select_extras(["thumbnails,nosuch", "thumbnails"], project)
    assert chosen == ["thumbnails"]
    assert "'nosuch' is not in pyproject.toml" in capsys.readouterr().err


# --- the cross-build download loop, with pip faked -----------------------------------


def _fake_probe(no_wheel):
    """A stand-in for probe(): fails like pip on the first requirement in no_wheel."""

    def probe(requirements, target, download_dir, tools):
        for requirement in requirements:
            if bz.requirement_name(requirement) in no_wheel:
                return False, f"ERROR: No matching distribution found for {requirement}\n"
        return True, "Successfully downloaded"

    return probe


def test_cross_build_names_every_missing_dependency(monkeypatch, tmp_path):
    monkeypatch.setattr(bz, "probe", _fake_probe({"pynacl", "pyyaml"}))
    project = bz.Project(dependencies=["trio>=0.25", "pynacl>=1.5", "pyyaml>=6.0"])
    target = bz.Target(("manylinux_2_36_armv7l",), "3.11")
    with pytest.raises(bz.BuildError) as excinfo:
        bz.download_for_target(project, [], target, tmp_path, bz.Tools())
    message = str(excinfo.value)
    assert "pynacl, pyyaml" in message
    assert "trio" not in message
    assert "on the target machine" in message


def test_cross_build_when_no_dependency_has_a_wheel(monkeypatch, tmp_path):
    monkeypatch.setattr(bz, "probe", _fake_probe({"pynacl", "pyyaml"}))
    project = bz.Project(dependencies=["pynacl", "pyyaml"])
    with pytest.raises(bz.BuildError, match="pynacl, pyyaml"):
        bz.download_for_target(project, [], bz.Target(("x",), "3.11"), tmp_path, bz.Tools())


def test_probe_reports_an_unreachable_index(monkeypatch, tmp_path):
    def run(command, **kwargs):
        output = (
            "WARNING: Retrying ... NewConnectionError('Failed to establish a new connection')\n"
            "ERROR: No matching distribution found for trio\n"
        )
        return subprocess.CompletedProcess(command, 1, stdout="", stderr=output)

    monkeypatch.setattr(bz.subprocess, "run", run)
    with pytest.raises(bz.BuildError, match="could not reach the package index"):
        bz.probe(["trio"], bz.Target(("x",), "3.11"), tmp_path, bz.Tools())


def test_cross_build_names_a_missing_dependency_of_a_dependency(monkeypatch, tmp_path):
    def probe(requirements, target, download_dir, tools):
        return False, "ERROR: No matching distribution found for cffi>=1.4.1\n"

    monkeypatch.setattr(bz, "probe", probe)
    project = bz.Project(dependencies=["pynacl>=1.5"])
    with pytest.raises(bz.BuildError, match="cffi"):
        bz.download_for_target(project, [], bz.Target(("x",), "3.11"), tmp_path, bz.Tools())


def test_cross_build_drops_an_extra_without_wheels(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(bz, "probe", _fake_probe({"pillow"}))
    project = bz.Project(
        dependencies=["trio"], extras={"thumbnails": ["Pillow>=10"], "fast": ["orjson"]}
    )
    target = bz.Target(("manylinux_2_36_armv7l",), "3.11")
    kept = bz.download_for_target(project, ["thumbnails", "fast"], target, tmp_path, bz.Tools())
    assert kept == ["fast"]
    assert "extra 'thumbnails' dropped: no wheel for pillow" in capsys.readouterr().err


def test_shiv_requirement_comes_from_pyproject():
    project = bz.read_project(ROOT / "pyproject.toml")
    assert bz.shiv_requirement(project).startswith("shiv")
    assert bz.shiv_requirement(bz.Project(dependencies=[])) == "shiv"


def test_strip_build_paths(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "flask").write_text("#!/some/venv/python\n")
    info = tmp_path / "demo-1.0.dist-info"
    info.mkdir()
    (info / "direct_url.json").write_text('{"url": "file:///tmp/x.whl"}')
    (info / "RECORD").write_text(
        "demo/__init__.py,sha256=abc,1\n"
        "../../bin/demo,sha256=def,2\n"
        "demo-1.0.dist-info/direct_url.json,sha256=ghi,3\n"
        "demo-1.0.dist-info/RECORD,,\n"
    )
    bz.strip_build_paths(tmp_path)
    assert not (tmp_path / "bin").exists()
    assert not (info / "direct_url.json").exists()
    assert (info / "RECORD").read_text() == (
        "demo/__init__.py,sha256=abc,1\ndemo-1.0.dist-info/RECORD,,\n"
    )


# --- argument handling ---------------------------------------------------------------


def test_help_documents_targets(capsys):
    with pytest.raises(SystemExit) as excinfo:
        bz.main(["--help"])
    assert excinfo.value.code == 0
    out = capsys.readouterr().out
    for word in ("--platform", "--python-version", "--extras", "--output", "aarch64"):
        assert word in out
    assert "armv7l, OpenBSD" in out
    assert "SHIV_ROOT" in out


def test_platform_needs_python_version(capsys):
    assert bz.main(["--platform", "aarch64"]) == 1
    assert "--python-version" in capsys.readouterr().err


def test_python_version_needs_platform(capsys):
    assert bz.main(["--python-version", "3.11"]) == 1
    assert "only makes sense with --platform" in capsys.readouterr().err


def test_bad_platform_and_python_version_are_refused(capsys):
    assert bz.main(["--platform", "manylinux_2_5_aarch64", "--python-version", "3.11"]) == 1
    assert "glibc 2.17" in capsys.readouterr().err
    assert bz.main(["--platform", "aarch64", "--python-version", "3.9"]) == 1
    assert "requires Python" in capsys.readouterr().err


def test_default_output_is_in_the_checkout_not_the_cwd():
    args = bz.parse_args([])
    assert Path(args.output) == ROOT / "dist" / "pocket.pyz"
    assert args.entry_point == "pocketserver.cli:main"
    assert args.shebang == "/usr/bin/env python3"


# --- real builds (slow; the cross builds need PyPI) ----------------------------------


def _run_pyz(pyz, *args, cwd, shiv_root, env_extra=None):
    env = {**os.environ, "SHIV_ROOT": str(shiv_root), **(env_extra or {})}
    return subprocess.run(
        [sys.executable, str(pyz), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_builds_a_working_pyz_for_this_machine(tmp_path, capsys):
    pyz = tmp_path / "out" / "pocket.pyz"
    assert bz.main(["--output", str(pyz)]) == 0
    out = capsys.readouterr().out
    assert str(pyz) in out
    assert "MB" in out
    assert "SHIV_ROOT" in out

    assert zipfile.is_zipfile(pyz)
    with zipfile.ZipFile(pyz) as archive:
        names = set(archive.namelist())
    assert "__main__.py" in names
    assert "site-packages/pocketserver/__init__.py" in names
    assert not any(name.endswith(".pyc") for name in names)
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shiv_root = tmp_path / "shiv"
    imports = "import pocketserver, trio, quart_trio, nacl.signing, yaml, bcrypt, httpx, netaddr"
    result = _run_pyz(
        pyz,
        "-c",
        imports + "; print(pocketserver.__version__, pocketserver.__file__)",
        cwd=elsewhere,
        shiv_root=shiv_root,
        env_extra={"SHIV_INTERPRETER": "1"},
    )
    assert result.returncode == 0, result.stderr
    version, location = result.stdout.split()
    assert version == pocketserver.__version__
    assert Path(location).is_relative_to(shiv_root)
    # Nothing is written beside the pyz, so it can live in a read-only place.
    assert list(pyz.parent.iterdir()) == [pyz]
    assert list(elsewhere.iterdir()) == []

    result = _run_pyz(pyz, "--version", cwd=elsewhere, shiv_root=shiv_root)
    assert result.returncode == 0, result.stderr
    assert pocketserver.__version__ in result.stdout + result.stderr


@pytest.mark.slow
def test_build_tools_makes_a_venv_with_shiv_when_this_python_lacks_it(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "shiv" else real_find_spec(name, *args)

    monkeypatch.setattr(bz.importlib.util, "find_spec", find_spec)
    tools = bz.build_tools(tmp_path, "shiv>=1.0.6", verbose=False)
    assert Path(tools.python).is_relative_to(tmp_path)
    result = subprocess.run(
        [tools.python, "-m", "shiv", "--version"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "shiv" in result.stdout


@pytest.mark.slow
def test_cross_build_for_armv7l_fails_naming_pynacl(tmp_path, capsys):
    pyz = tmp_path / "pocket.pyz"
    code = bz.main(["--platform", "armv7l", "--python-version", "3.11", "--output", str(pyz)])
    assert code != 0
    err = capsys.readouterr().err
    assert "pynacl" in err
    assert "build_zipapp.py" in err  # says how to build on the box instead
    assert not pyz.exists()


@pytest.mark.slow
def test_cross_build_for_aarch64(tmp_path, capsys):
    pyz = tmp_path / "pocket.pyz"
    assert bz.main(["--platform", "aarch64", "--python-version", "3.11", "-o", str(pyz)]) == 0
    with zipfile.ZipFile(pyz) as archive:
        binaries = [n for n in archive.namelist() if n.endswith(".so")]
    assert any(n.startswith("site-packages/nacl/") for n in binaries)
    assert all("x86_64" not in n for n in binaries)
    assert any("aarch64" in n for n in binaries)
