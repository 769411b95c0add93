"""The command line: --version, --generate-config, hash-password and check-config."""

from __future__ import annotations

import dataclasses
import re
import stat
from pathlib import Path

import bcrypt
import pytest
import yaml

from pocketserver import __version__
from pocketserver.cli import main
from pocketserver.config import Config, load_config
from pocketserver.config.dump import DUMPED_FIELDS
from pocketserver.core.crypto import read_signing_keys


def run(argv: list[str]) -> int:
    """Call ``main`` and return its exit code, also when argparse exits."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1


def generate(path: Path, server_name: str = "example.org", *extra: str) -> int:
    argv = ["--generate-config", "--server-name", server_name, "-c", str(path)]
    return run([*argv, *extra, "--report-stats=no"])


def edit_config(path: Path, **changes: object) -> None:
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data))


@pytest.fixture
def config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "homeserver.yaml"
    assert generate(path) == 0
    edit_config(path, bcrypt_rounds=4)
    return path


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_no_arguments_prints_help_and_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run([]) != 0
    assert "--generate-config" in capsys.readouterr().out


# --- --generate-config -----------------------------------------------------------------


def test_generate_config_writes_config_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "conf" / "homeserver.yaml"
    assert generate(path, "example.org", "--data-dir", "data") == 0
    out = capsys.readouterr().out
    assert str(path) in out
    key_path = tmp_path / "conf" / "example.org.signing.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    config = load_config(path)
    assert config.warnings == ()
    assert config.server_name == "example.org"
    assert config.report_stats is False
    # --data-dir is relative to the current folder, like Synapse's --data-directory.
    assert config.database.path == tmp_path / "data" / "homeserver.db"
    assert len(read_signing_keys(key_path.read_text())) == 1


def test_generate_config_defaults_to_homeserver_yaml_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(["--generate-config", "-H", "example.org", "--report-stats", "yes"]) == 0
    config = load_config(tmp_path / "homeserver.yaml")
    assert config.report_stats is True
    assert config.database.path == tmp_path / "homeserver.db"


def test_generate_config_without_server_name_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(["--generate-config", "-c", "homeserver.yaml", "--report-stats=no"]) != 0
    assert "--server-name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_generate_config_with_invalid_server_name_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert generate(tmp_path / "homeserver.yaml", "not a server!") != 0
    assert not (tmp_path / "homeserver.yaml").exists()


def test_generate_config_twice_fails_and_keeps_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "homeserver.yaml"
    assert generate(path) == 0
    before = path.read_bytes()
    key_before = (tmp_path / "example.org.signing.key").read_bytes()
    capsys.readouterr()
    assert generate(path) != 0
    assert "exists" in capsys.readouterr().err
    assert path.read_bytes() == before
    assert (tmp_path / "example.org.signing.key").read_bytes() == key_before


def test_generate_config_cannot_be_combined_with_a_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(["--generate-config", "-H", "example.org", "check-config"]) != 0
    assert not (tmp_path / "homeserver.yaml").exists()


# --- hash-password -----------------------------------------------------------------


def test_hash_password_prints_a_synapse_style_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(["hash-password", "--password", "correct horse"]) == 0
    hashed = capsys.readouterr().out.strip()
    assert hashed.startswith("$2b$12$")
    assert bcrypt.checkpw(b"correct horse", hashed.encode())


def test_hash_password_uses_the_configs_pepper_and_rounds(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit_config(config_path, bcrypt_rounds=5, password_config={"pepper": "PEPPER"})
    capsys.readouterr()
    assert run(["hash-password", "-c", str(config_path), "-p", "hunter2"]) == 0
    hashed = capsys.readouterr().out.strip()
    assert re.fullmatch(r"\$2b\$05\$[./A-Za-z0-9]{53}", hashed), hashed
    assert bcrypt.checkpw(b"hunter2PEPPER", hashed.encode())
    assert not bcrypt.checkpw(b"hunter2", hashed.encode())


def test_hash_password_with_a_broken_config_fails(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit_config(config_path, bcrypt_rounds=99)
    assert run(["hash-password", "-c", str(config_path), "-p", "x"]) != 0
    captured = capsys.readouterr()
    assert "bcrypt_rounds" in captured.err
    assert "$2b$" not in captured.out


# --- check-config ------------------------------------------------------------------


def test_check_config_accepts_a_generated_config_and_masks_secrets(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit_config(config_path, password_config={"pepper": "my-pepper-value"})
    secret = load_config(config_path).registration_shared_secret
    assert secret
    capsys.readouterr()
    assert run(["check-config", "-c", str(config_path)]) == 0
    captured = capsys.readouterr()
    assert secret not in captured.out
    assert secret not in captured.err
    assert "my-pepper-value" not in captured.out
    assert "example.org" in captured.out
    # The effective configuration is YAML after the header comment.
    effective = yaml.safe_load(captured.out)
    assert effective["server_name"] == "example.org"
    assert effective["registration_shared_secret"] not in (None, "", secret)
    assert effective["bcrypt_rounds"] == 4


def test_check_config_finds_homeserver_yaml_in_the_current_folder(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["check-config"]) == 0
    assert "example.org" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"database": {"synchronous": "sometimes"}}, "database.synchronous"),
        ({"rc_login": {"address": {"per_second": "fast"}}}, "rc_login.address.per_second"),
        ({"memory_budget": "tiny"}, "memory_budget"),
    ],
)
def test_check_config_with_a_bad_value_fails_and_names_the_key(
    config_path: Path, capsys: pytest.CaptureFixture[str], changes: dict[str, object], key: str
) -> None:
    edit_config(config_path, **changes)
    capsys.readouterr()
    assert run(["check-config", "-c", str(config_path)]) != 0
    assert key in capsys.readouterr().err


def test_check_config_warns_about_unknown_keys_but_succeeds(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit_config(config_path, enable_registraton=True)
    capsys.readouterr()
    assert run(["check-config", "-c", str(config_path)]) == 0
    assert "enable_registraton" in capsys.readouterr().err


def test_check_config_without_a_config_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(["check-config"]) != 0
    assert capsys.readouterr().err
    assert run(["check-config", "-c", str(tmp_path / "missing.yaml")]) != 0
    assert "missing.yaml" in capsys.readouterr().err


def test_check_config_output_is_the_config_a_user_writes(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The printed YAML uses homeserver.yaml's key names, and with the secrets filled back
    in it loads to the same config."""
    edit_config(
        config_path,
        password_config={"pepper": "my-pepper-value", "enabled": True},
        turn_shared_secret="turn-secret-value",
        turn_uris=["turn:turn.example.org?transport=udp"],
        memory_budget="96M",
        refresh_token_lifetime="1d",
        login_via_existing_session={"enabled": True, "token_timeout": "2m"},
        media_upload_quota_per_user="1G",
        media_retention={"local_media_lifetime": "90d"},
        url_preview_url_blacklist=[{"netloc": "*.internal.example.org"}],
        thumbnail_sizes=[{"width": 64, "height": 64, "method": "crop"}],
    )
    original = load_config(config_path)
    capsys.readouterr()
    assert run(["check-config", "-c", str(config_path)]) == 0
    out = capsys.readouterr().out
    for secret in ("my-pepper-value", "turn-secret-value", original.registration_shared_secret):
        assert secret is not None
        assert secret not in out
    # Masked values are obvious: a run of stars and a comment on the line.
    masked = [line for line in out.splitlines() if "********" in line]
    assert len(masked) == 3
    assert all("# secret" in line for line in masked)
    printed = yaml.safe_load(out)
    # The names a user writes, not the model's.
    assert printed["password_config"]["pepper"] == "********"
    assert printed["memory_budget"] == "96M"
    assert printed["database"]["args"]["database"] == str(original.database.path)
    assert printed["presence"] == {"enabled": True}
    for internal in ("password_pepper", "media", "key_refresh_interval_ms", "presence_enabled"):
        assert internal not in printed
    printed["registration_shared_secret"] = original.registration_shared_secret
    printed["password_config"]["pepper"] = "my-pepper-value"
    printed["turn_shared_secret"] = "turn-secret-value"
    pasted = config_path.with_name("pasted.yaml")
    pasted.write_text(yaml.safe_dump(printed))
    again = load_config(pasted)
    assert again.warnings == ()
    assert dataclasses.replace(again, config_path=original.config_path) == original


def test_check_config_dumps_every_field() -> None:
    """A new Config field must be added to config/dump.py, or check-config would hide it."""
    fields = {f.name for f in dataclasses.fields(Config)} - {"warnings", "config_path"}
    assert fields == DUMPED_FIELDS


def test_check_config_reports_missing_signing_key_and_tls_files(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = config_path.parent / "example.org.signing.key"
    key.unlink()
    cert, tls_key = config_path.parent / "cert.pem", config_path.parent / "key.pem"
    data = yaml.safe_load(config_path.read_text())
    data["listeners"][0]["tls"] = True
    data["tls_certificate_path"] = str(cert)
    data["tls_private_key_path"] = str(tls_key)
    config_path.write_text(yaml.safe_dump(data))
    capsys.readouterr()
    assert run(["check-config", "-c", str(config_path)]) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 3, captured.err
    assert str(key) in errors[0]
    assert str(cert) in errors[1]
    assert str(tls_key) in errors[2]
    assert "is valid" not in captured.out


# --- --generate-keys ---------------------------------------------------------------


def test_generate_keys_writes_a_missing_signing_key_and_keeps_an_existing_one(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = config_path.parent / "example.org.signing.key"
    old = key.read_bytes()
    capsys.readouterr()
    assert run(["--generate-keys", "-c", str(config_path)]) == 0
    assert "kept" in capsys.readouterr().out
    assert key.read_bytes() == old
    key.unlink()
    assert run(["--generate-keys", "-c", str(config_path)]) == 0
    assert str(key) in capsys.readouterr().out
    new = key.read_bytes()
    assert new != old
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(read_signing_keys(new.decode())) == 1
    # A second run keeps the new key.
    assert run(["--generate-keys", "-c", str(config_path)]) == 0
    assert key.read_bytes() == new
    # The config now passes check-config again.
    assert run(["check-config", "-c", str(config_path)]) == 0


def test_generate_keys_never_replaces_a_broken_key(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = config_path.parent / "example.org.signing.key"
    key.write_text("garbage\n")
    capsys.readouterr()
    assert run(["--generate-keys", "-c", str(config_path)]) == 1
    assert str(key) in capsys.readouterr().err
    assert key.read_text() == "garbage\n"


def test_generate_keys_follows_signing_key_path(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = config_path.parent / "keys" / "my.key"
    edit_config(config_path, signing_key_path=str(elsewhere))
    assert run(["--generate-keys", "-c", str(config_path)]) == 0
    assert len(read_signing_keys(elsewhere.read_text())) == 1
