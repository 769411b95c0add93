"""Tests of build_zipapp.py: tag expansion, arguments, and real builds (slow)."""

import importlib.util
import os
import platform
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import pocketserver
from tests.pyz_build import built_pyz

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


# --- one site-packages for several CPythons ----------------------------------------


def _install(site, dist, files):
    """Fake what pip install --target leaves: the files and a dist-info with RECORD."""
    info = site / f"{dist}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Name: {dist.split('-')[0]}\n")
    rows = []
    for name, content in {**files, f"{info.name}/METADATA": None}.items():
        path = site / name
        if content is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        rows.append(f"{name},sha256=x,1")
    (info / "RECORD").write_text("\n".join([*rows, f"{info.name}/RECORD,,"]) + "\n")


def _staged(tmp_path, versions=("3.11", "3.12")):
    staged = {}
    for version in versions:
        tag = version.replace(".", "")
        site = tmp_path / f"cp{tag}"
        _install(site, "trio-1.0", {"trio/__init__.py": b"pure"})
        _install(site, "nacl-1.6", {"nacl/__init__.py": b"n", "nacl/_sodium.abi3.so": b"abi3"})
        _install(
            site,
            "pyyaml-6.0",
            {
                "yaml/__init__.py": b"y",
                f"yaml/_yaml.cpython-{tag}-x86_64-linux-gnu.so": f"elf {tag}".encode(),
                f"_cffi_backend.cpython-{tag}-x86_64-linux-gnu.so": f"cffi {tag}".encode(),
            },
        )
        # A newer release for the newer Python only, like quart-trio for 3.13.
        quart = "quart_trio-0.13" if version >= "3.12" else "quart_trio-0.12"
        _install(site, quart, {"quart_trio/__init__.py": quart.encode()})
        if version == "3.11":  # a backport some marker wants on 3.11 only
            _install(site, "backport-1.0", {"backport.py": b"b"})
        staged[version] = site
    return staged


def test_layout_shares_what_is_the_same_and_splits_what_differs(tmp_path):
    staged = _staged(tmp_path)
    plan = bz.plan_layout(staged)
    # Pure and abi3 packages, with their dist-info, once.
    for path in ("trio/__init__.py", "nacl/_sodium.abi3.so", "trio-1.0.dist-info/RECORD"):
        assert path in plan
        assert not any(d.endswith("/" + path) for d in plan if d.startswith("by-python/"))
    # Extension modules named for one CPython side by side; their dist-info per version.
    assert plan["yaml/__init__.py"].read_bytes() == b"y"
    for tag in ("311", "312"):
        so = f"yaml/_yaml.cpython-{tag}-x86_64-linux-gnu.so"
        assert plan[so].read_bytes() == f"elf {tag}".encode()
        assert f"_cffi_backend.cpython-{tag}-x86_64-linux-gnu.so" in plan
        assert f"by-python/cp{tag}/pyyaml-6.0.dist-info/RECORD" in plan
    assert "pyyaml-6.0.dist-info/RECORD" not in plan
    # Another release per version, or a package one version lacks: whole, per version.
    assert plan["by-python/cp311/quart_trio/__init__.py"].read_bytes() == b"quart_trio-0.12"
    assert plan["by-python/cp312/quart_trio/__init__.py"].read_bytes() == b"quart_trio-0.13"
    assert "quart_trio/__init__.py" not in plan
    assert "by-python/cp311/backport.py" in plan
    assert "backport.py" not in plan
    assert not any(d.startswith("by-python/cp312/backport") for d in plan)


def test_layout_of_one_version_is_flat(tmp_path):
    plan = bz.plan_layout(_staged(tmp_path, ("3.11",)))
    assert not any(d.startswith("by-python/") for d in plan)
    assert "backport.py" in plan
    assert "pyyaml-6.0.dist-info/RECORD" in plan


def test_a_differing_file_keeps_the_whole_distribution_per_version(tmp_path):
    staged = _staged(tmp_path)
    (staged["3.12"] / "yaml" / "__init__.py").write_bytes(b"generated for 3.12")
    plan = bz.plan_layout(staged)
    assert "yaml/__init__.py" not in plan
    assert not [d for d in plan if "_yaml.cpython" in d and not d.startswith("by-python/")]
    assert plan["by-python/cp312/yaml/__init__.py"].read_bytes() == b"generated for 3.12"
    assert "by-python/cp311/yaml/_yaml.cpython-311-x86_64-linux-gnu.so" in plan


def test_ext_module_version():
    assert bz.ext_module_version("yaml/_yaml.cpython-312-aarch64-linux-gnu.so") == "3.12"
    assert bz.ext_module_version("_cffi_backend.cpython-311-x86_64-linux-musl.so") == "3.11"
    assert bz.ext_module_version("nacl/_sodium.abi3.so") is None
    assert bz.ext_module_version("foo/cpython-312.py") is None


def _run_selector(site, python=sys.executable):
    code = f"import site, sys; site.addsitedir({str(site)!r}); import which; print(which.NAME)"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)


def test_selector_puts_this_cpythons_directory_on_sys_path(tmp_path):
    site = tmp_path / "site-packages"
    here = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    plan = {}
    for tag in (here, "cp399"):
        source = tmp_path / tag / "which.py"
        source.parent.mkdir()
        source.write_text(f"NAME = {tag!r}\n")
        plan[f"by-python/{tag}/which.py"] = source
    bz.write_layout(plan, site)
    result = _run_selector(site)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == here


def test_selector_without_a_directory_for_this_cpython_adds_nothing(tmp_path):
    site = tmp_path / "site-packages"
    source = tmp_path / "which.py"
    source.write_text("NAME = 'other'\n")
    bz.write_layout({"by-python/cp399/which.py": source}, site)
    result = _run_selector(site)
    assert "No module named 'which'" in result.stderr


def _zipapp(path, main_py, files):
    with path.open("wb") as fd:
        fd.write(b"#!/usr/bin/env python3\n")
        with zipfile.ZipFile(fd, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in {"__main__.py": main_py, **files}.items():
                archive.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
    path.chmod(0o755)


def test_main_refuses_another_python_in_one_line_before_unpacking(tmp_path):
    pyz = tmp_path / "pocket.pyz"
    boot = "raise SystemExit('bootstrap ran')\n"
    _zipapp(pyz, "old main", {"_bootstrap/__init__.py": boot, "site-packages/x.py": "x"})
    bz.replace_main(pyz, bz.MAIN_TEMPLATE.format(supported=("3.98", "3.99")))
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert os.access(pyz, os.X_OK)
    assert bz.supported_pythons(pyz) == ("3.98", "3.99")
    result = subprocess.run([sys.executable, str(pyz)], capture_output=True, text=True)
    assert result.returncode == 1
    here = f"{sys.version_info[0]}.{sys.version_info[1]}.{sys.version_info[2]}"
    assert result.stderr == (
        f"pocket.pyz runs on CPython 3.98, 3.99, not on CPython {here} ({sys.executable}):"
        f" start it with one of those, e.g. python3.99 {pyz}\n"
    )
    with zipfile.ZipFile(pyz) as archive:
        assert archive.read("site-packages/x.py") == b"x"
        assert archive.getinfo("site-packages/x.py").date_time == (2020, 1, 1, 0, 0, 0)


def test_main_starts_shivs_bootstrap_on_a_supported_python(tmp_path):
    pyz = tmp_path / "pocket.pyz"
    boot = "def bootstrap():\n    raise SystemExit('bootstrap ran')\n"
    _zipapp(pyz, "old main", {"_bootstrap/__init__.py": boot})
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    bz.replace_main(pyz, bz.MAIN_TEMPLATE.format(supported=(here,)))
    result = subprocess.run([sys.executable, str(pyz)], capture_output=True, text=True)
    assert result.stderr.strip() == "bootstrap ran"


def test_missing_requirements_reads_markers_for_the_target_version(tmp_path):
    info = tmp_path / "demo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: demo\n"
        'Requires-Dist: newer-only>=2; python_version >= "3.13"\n'
        'Requires-Dist: old-backport; python_version < "3.11"\n'
        'Requires-Dist: testing-only; extra == "test"\n'
        "Requires-Dist: Demo_Dep\n"
        "\nRequires-Dist: not a header, the description\n"
    )
    (tmp_path / "demo_dep-1.0.dist-info").mkdir()
    assert bz.missing_requirements(tmp_path, "3.12") == []
    assert bz.missing_requirements(tmp_path, "3.13") == ["newer-only>=2"]


def _fake_stage_wheels(no_wheel_for):
    calls = []

    def stage_wheels(site_packages, wheel, project, extras, target, download_dir, tools):
        calls.append(target.python_version)
        if target.python_version in no_wheel_for:
            raise bz.NoWheelError(f"no wheel on PyPI for cffi on {target.platforms[0]}\nmore")
        site_packages.mkdir(parents=True)

    return stage_wheels, calls


def _stage_all(monkeypatch, tmp_path, argv, no_wheel_for=()):
    stage_wheels, calls = _fake_stage_wheels(no_wheel_for)
    monkeypatch.setattr(bz, "stage_wheels", stage_wheels)
    here_calls = []
    monkeypatch.setattr(
        bz, "stage_here", lambda site, *a: here_calls.append(site) or site.mkdir(parents=True)
    )
    project = bz.read_project(ROOT / "pyproject.toml")
    wheel = tmp_path / "pocketserver-1-py3-none-any.whl"
    staged = bz.stage_all(bz.parse_args(argv), project, [], wheel, tmp_path, bz.Tools())
    return staged, calls, here_calls


def test_default_versions_without_wheels_are_left_out_with_a_warning(monkeypatch, tmp_path, capsys):
    argv = ["--platform", "aarch64"]
    staged, calls, _ = _stage_all(monkeypatch, tmp_path, argv, no_wheel_for={"3.14"})
    assert list(staged) == ["3.11", "3.12", "3.13"]
    assert calls == ["3.11", "3.12", "3.13", "3.14"]
    err = capsys.readouterr().err
    assert "CPython 3.14 left out: no wheel on PyPI for cffi" in err
    assert "more" not in err


def test_a_version_given_must_build(monkeypatch, tmp_path):
    argv = ["--platform", "aarch64", "--python-version", "3.11,3.14"]
    with pytest.raises(bz.NoWheelError, match="cffi"):
        _stage_all(monkeypatch, tmp_path, argv, no_wheel_for={"3.14"})


def test_no_version_with_wheels_fails_naming_the_first_reason(monkeypatch, tmp_path):
    with pytest.raises(bz.NoWheelError, match="cffi on manylinux_2_36_armv7l"):
        _stage_all(monkeypatch, tmp_path, ["--platform", "armv7l"], no_wheel_for=bz.PYTHON_VERSIONS)


def test_a_native_build_without_wheels_installs_this_python_with_pip(monkeypatch, tmp_path):
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    staged, _, here_calls = _stage_all(monkeypatch, tmp_path, [], no_wheel_for=bz.PYTHON_VERSIONS)
    assert list(staged) == [here]
    assert here_calls == [staged[here]]


def test_native_platforms_of_this_machine():
    libc, version = platform.libc_ver()
    tags = bz.native_platforms()
    if not sys.platform.startswith("linux") or libc != "glibc":
        assert tags == []
    else:
        minor = version.split(".")[1]
        assert tags[0] == f"manylinux_2_{minor}_{platform.machine()}"
        assert tags == bz.expand_platform(tags[0])


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


def test_python_versions_default_to_every_supported_cpython():
    assert bz.parse_python_versions(None, ">=3.11") == ["3.11", "3.12", "3.13", "3.14"]
    assert bz.parse_python_versions(None, ">=3.12") == ["3.12", "3.13", "3.14"]
    assert bz.parse_python_versions("3.13, 3.11,3.13", ">=3.11") == ["3.11", "3.13"]
    with pytest.raises(bz.BuildError, match="requires Python"):
        bz.parse_python_versions("3.10,3.11", ">=3.11")
    with pytest.raises(bz.BuildError, match="look like"):
        bz.parse_python_versions("3.11,312", ">=3.11")
    with pytest.raises(bz.BuildError, match="at least one"):
        bz.parse_python_versions(" , ", ">=3.11")


def test_bad_arguments_fail_before_any_work(monkeypatch, capsys):
    def no_work(*args, **kwargs):
        raise AssertionError("started building")

    monkeypatch.setattr(bz, "build_tools", no_work)
    assert bz.main(["--python-version", "3.11,3.9"]) == 1
    assert "requires Python" in capsys.readouterr().err


def test_bad_platform_and_python_version_are_refused(capsys):
    assert bz.main(["--platform", "manylinux_2_5_aarch64", "--python-version", "3.11"]) == 1
    assert "glibc 2.17" in capsys.readouterr().err
    assert bz.main(["--platform", "aarch64", "--python-version", "3.9"]) == 1
    assert "requires Python" in capsys.readouterr().err
    assert bz.main(["--platform", "aarch64", "--python-version", "3.12,three"]) == 1
    assert "look like" in capsys.readouterr().err


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


@pytest.fixture(scope="session")
def build(tmp_path_factory):
    return built_pyz(tmp_path_factory)


@pytest.mark.slow
def test_builds_a_working_pyz_for_this_machine(build, tmp_path):
    pyz = build.pyz
    assert str(pyz) in build.output
    assert "MB" in build.output
    assert "SHIV_ROOT" in build.output
    assert "it runs on CPython 3.11, 3.12, 3.13, 3.14" in build.output

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
    assert not os.access(pyz.parent, os.W_OK) or os.geteuid() == 0
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
    assert bz.main(["--platform", "aarch64", "-o", str(pyz)]) == 0
    assert "it runs on CPython 3.11, 3.12, 3.13, 3.14" in capsys.readouterr().out
    assert bz.supported_pythons(pyz) == bz.PYTHON_VERSIONS
    with zipfile.ZipFile(pyz) as archive:
        binaries = [n for n in archive.namelist() if n.endswith(".so")]
    assert "site-packages/nacl/_sodium.abi3.so" in binaries
    assert all("x86_64" not in n for n in binaries)
    for version in bz.PYTHON_VERSIONS:
        tag = version.replace(".", "")
        for module in ("_cffi_backend", "yaml/_yaml", "PIL/_imaging"):
            assert f"site-packages/{module}.cpython-{tag}-aarch64-linux-gnu.so" in binaries
