"""The config: units, the loader's errors and warnings, the sample file and the generator."""

from __future__ import annotations

import copy
import stat
from pathlib import Path

import pytest
import yaml

from pocketserver.config import ConfigError, load_config, parse_config
from pocketserver.config.generate import GenerateError, generate, sample_config_text
from pocketserver.config.loader import _IGNORED_SYNAPSE_KEYS
from pocketserver.config.units import format_size, parse_duration_ms, parse_size
from pocketserver.core.crypto import generate_signing_key, read_signing_keys, write_signing_keys

REPO_ROOT = Path(__file__).resolve().parent.parent
BASE = Path("/srv/pocket")

MINIMAL: dict[str, object] = {
    "server_name": "example.org",
    "listeners": [{"port": 8008, "resources": [{"names": ["client", "federation"]}]}],
}


def minimal(**overrides: object) -> dict[str, object]:
    data = copy.deepcopy(MINIMAL)
    data.update(overrides)
    return data


def config_error(data: object) -> str:
    with pytest.raises(ConfigError) as excinfo:
        parse_config(data, BASE)
    return str(excinfo.value)


# --- units -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (4096, 4096),
        ("100", 100),
        ("512K", 512 * 1024),
        ("128M", 128 * 1024**2),
        ("1G", 1024**3),
        ("2T", 2 * 1024**4),
        ("128m", 128 * 1024**2),
        ("128MB", 128 * 1024**2),
        ("128MiB", 128 * 1024**2),
        ("1.5M", 1536 * 1024),
        (" 2 M ", 2 * 1024**2),
    ],
)
def test_parse_size(value: object, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize(
    "value", [-1, "-1", "", "M", "1X", "1.2.3", "lots", None, 1.5, True, False, [1], {"a": 1}]
)
def test_parse_size_rejects_bad_values(value: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (250, 250),
        ("100", 100),
        ("500ms", 500),
        ("30s", 30_000),
        ("1.5s", 1500),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("1d", 86_400_000),
        ("2w", 14 * 86_400_000),
        ("1y", 365 * 86_400_000),
    ],
)
def test_parse_duration(value: object, expected: int) -> None:
    assert parse_duration_ms(value) == expected


@pytest.mark.parametrize(
    "value", [-1, "-1s", "", "s", "1 hour", "1x", "soon", None, 1.5, True, ["1s"]]
)
def test_parse_duration_rejects_bad_values(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_ms(value)


@pytest.mark.parametrize("n", [0, 1, 1000, 1024, 512 * 1024, 128 * 1024**2, 3 * 1024**3 + 1])
def test_format_size_round_trips(n: int) -> None:
    assert parse_size(format_size(n)) == n


# --- parse_config: values ------------------------------------------------------------


def test_minimal_config_has_defaults_and_no_warnings() -> None:
    config = parse_config(minimal(), BASE)
    assert config.warnings == ()
    assert config.server_name == "example.org"
    assert config.public_baseurl == "https://example.org/"
    assert config.listeners[0].port == 8008
    assert config.listeners[0].bind_addresses == ("127.0.0.1",)
    assert config.listeners[0].resources == frozenset({"client", "federation"})
    assert config.database.synchronous == "full"
    assert config.bcrypt_rounds == 12
    assert config.memory_budget == 128 * 1024**2
    assert config.max_upload_size == 50 * 1024**2
    assert config.default_room_version == "12"
    assert config.registration_shared_secret is None


def test_units_are_applied_to_config_values() -> None:
    config = parse_config(
        minimal(
            memory_budget="64M",
            max_upload_size="10M",
            max_request_body_size="256K",
            key_refresh_interval="2h",
            turn_user_lifetime="30s",
        ),
        BASE,
    )
    assert config.memory_budget == 64 * 1024**2
    assert config.max_upload_size == 10 * 1024**2
    assert config.max_request_body_size == 256 * 1024
    assert config.key_refresh_interval_ms == 2 * 3_600_000
    assert config.turn_user_lifetime_ms == 30_000


def test_synapse_style_rate_limits_are_read() -> None:
    config = parse_config(
        minimal(
            rc_message={"per_second": 1, "burst_count": 20},
            rc_login={"address": {"per_second": 0.5, "burst_count": 7}},
        ),
        BASE,
    )
    assert config.rc_message.per_second == 1.0
    assert config.rc_message.burst_count == 20
    assert config.rc_login.address.per_second == 0.5
    assert config.rc_login.address.burst_count == 7
    # Sections not given keep their defaults.
    assert config.rc_login.account.burst_count >= 1


def test_public_baseurl_gets_a_trailing_slash() -> None:
    config = parse_config(minimal(public_baseurl="https://matrix.example.org"), BASE)
    assert config.public_baseurl == "https://matrix.example.org/"


@pytest.mark.parametrize(
    ("overrides", "key", "expected"),
    [
        ({"server_name": "not a name!"}, "server_name", "server name"),
        ({"public_baseurl": "ftp://example.org"}, "public_baseurl", "URL"),
        ({"memory_budget": "1M"}, "memory_budget", "16M"),
        ({"memory_budget": "lots"}, "memory_budget", "size"),
        ({"max_upload_size": "big"}, "max_upload_size", "size"),
        ({"max_request_body_size": "1K"}, "max_request_body_size", "64K"),
        ({"key_refresh_interval": "soon"}, "key_refresh_interval", "duration"),
        ({"bcrypt_rounds": 3}, "bcrypt_rounds", "4 to 31"),
        ({"bcrypt_rounds": True}, "bcrypt_rounds", "whole number"),
        ({"enable_registration": "maybe"}, "enable_registration", "true or false"),
        ({"log_level": "LOUD"}, "log_level", "DEBUG"),
        ({"database": {"synchronous": "sometimes"}}, "database.synchronous", "full, normal"),
        ({"database": {"name": "psycopg2"}}, "database.name", "sqlite3"),
        ({"database": "sqlite"}, "database", "mapping"),
        ({"password_config": "yes"}, "password_config", "mapping"),
        ({"password_config": {"enabled": 3}}, "password_config.enabled", "true or false"),
        ({"rc_message": {"burst_count": 0}}, "rc_message.burst_count", "whole number"),
        (
            {"rc_login": {"address": {"per_second": "fast"}}},
            "rc_login.address.per_second",
            "positive number",
        ),
        (
            {"rc_login": {"failed_attempts": {"per_second": 0}}},
            "rc_login.failed_attempts.per_second",
            "positive number",
        ),
        ({"turn_uris": "turn:example.org"}, "turn_uris", "list of strings"),
        ({"presence": {"enabled": "on"}}, "presence.enabled", "true or false"),
    ],
)
def test_bad_values_name_the_key_and_what_was_expected(
    overrides: dict[str, object], key: str, expected: str
) -> None:
    message = config_error(minimal(**overrides))
    assert message.startswith(f"{key}:"), message
    assert expected in message


@pytest.mark.parametrize(
    ("listener", "key", "expected"),
    [
        ({"port": "http"}, "listeners[0].port", "0 to 65535"),
        ({"port": 70000}, "listeners[0].port", "0 to 65535"),
        ({"port": None}, "listeners[0].port", "0 to 65535"),
        ({"type": "metrics"}, "listeners[0].type", "http"),
        ({"tls": "sure"}, "listeners[0].tls", "true or false"),
        ({"bind_addresses": "0.0.0.0"}, "listeners[0].bind_addresses", "list of strings"),
        ({"resources": []}, "listeners[0].resources", "non-empty list"),
        ({"resources": [{"names": ["clint"]}]}, "listeners[0].resources[0].names", "client"),
    ],
)
def test_bad_listener_values_name_the_listener(
    listener: dict[str, object], key: str, expected: str
) -> None:
    entry = {"port": 8008, "resources": [{"names": ["client"]}], **listener}
    message = config_error(minimal(listeners=[entry]))
    assert message.startswith(f"{key}:"), message
    assert expected in message


def test_second_listener_is_named_by_its_index() -> None:
    good = {"port": 8008, "resources": [{"names": ["client"]}]}
    bad = {"port": -1, "resources": [{"names": ["federation"]}]}
    assert config_error(minimal(listeners=[good, bad])).startswith("listeners[1].port:")


@pytest.mark.parametrize("listeners", [None, [], "8008", {"port": 8008}])
def test_listeners_must_be_a_non_empty_list(listeners: object) -> None:
    assert config_error(minimal(listeners=listeners)).startswith("listeners:")


def test_missing_server_name_is_an_error() -> None:
    data = minimal()
    del data["server_name"]
    assert config_error(data).startswith("server_name:")


@pytest.mark.parametrize("document", [[], "server_name: x", 42])
def test_document_must_be_a_mapping(document: object) -> None:
    assert "mapping" in config_error(document)


def test_empty_document_asks_for_server_name() -> None:
    assert config_error(None).startswith("server_name:")


# --- parse_config: unknown and ignored keys -------------------------------------------


def test_unknown_keys_warn_with_their_full_names_and_do_not_fail() -> None:
    data = minimal(
        enable_registraton=True,  # typo
        database={"args": {"database": "x.db", "cp_max": 5, "journal": "wal"}},
        rc_login={"address": {"per_second": 1, "burst": 3}},
        password_config={"enabled": True, "peper": "x"},
    )
    data["listeners"][0]["bind_adress"] = "::"  # type: ignore[index]
    data["listeners"][0]["resources"][0]["compres"] = True  # type: ignore[index]
    config = parse_config(data, BASE)
    text = "\n".join(config.warnings)
    for key in (
        "enable_registraton",
        "database.args.journal",
        "rc_login.address.burst",
        "password_config.peper",
        "listeners[0].bind_adress",
        "listeners[0].resources[0].compres",
    ):
        assert f"'{key}'" in text, (key, config.warnings)
    assert len(config.warnings) == 6
    # Keys that pocketserver knows (or tolerates, like cp_max) don't warn.
    assert "cp_max" not in text
    assert config.enable_registration is False


def test_ignored_synapse_keys_do_not_warn() -> None:
    assert {"pid_file", "macaroon_secret_key"} <= _IGNORED_SYNAPSE_KEYS
    assert "log_config" not in _IGNORED_SYNAPSE_KEYS  # honoured since issue #15
    data = minimal(**dict.fromkeys(_IGNORED_SYNAPSE_KEYS, "whatever"))
    assert parse_config(data, BASE).warnings == ()


def test_synapse_database_extras_do_not_warn() -> None:
    data = minimal(
        database={
            "name": "sqlite3",
            "args": {"database": "home.db", "cp_min": 1, "cp_max": 1},
            "allow_unsafe_locale": True,
            "txn_limit": 10,
        }
    )
    assert parse_config(data, BASE).warnings == ()


# --- parse_config: cross-field rules ----------------------------------------------------


def test_url_previews_need_a_blacklist() -> None:
    message = config_error(minimal(url_preview_enabled=True))
    assert "url_preview_ip_range_blacklist" in message
    message = config_error(minimal(url_preview_enabled=True, url_preview_ip_range_blacklist=[]))
    assert "url_preview_ip_range_blacklist" in message
    config = parse_config(
        minimal(url_preview_enabled=True, url_preview_ip_range_blacklist=["10.0.0.0/8"]), BASE
    )
    assert config.url_preview_enabled
    assert config.url_preview_ip_range_blacklist == ("10.0.0.0/8",)


def test_url_preview_blacklist_entries_must_be_ip_ranges() -> None:
    data = minimal(
        url_preview_enabled=True,
        url_preview_ip_range_blacklist=["10.0.0.0/8", "192.168.0.0/16,", "not-an-ip"],
    )
    assert config_error(data).startswith("url_preview_ip_range_blacklist")


def test_tls_listener_needs_certificate_and_key() -> None:
    tls_listener = {"port": 8448, "tls": True, "resources": [{"names": ["federation"]}]}
    message = config_error(minimal(listeners=[tls_listener]))
    assert "tls_certificate_path" in message
    assert "tls_private_key_path" in message
    message = config_error(minimal(listeners=[tls_listener], tls_certificate_path="cert.pem"))
    assert "tls_private_key_path" in message
    config = parse_config(
        minimal(
            listeners=[tls_listener],
            tls_certificate_path="cert.pem",
            tls_private_key_path="/etc/ssl/key.pem",
        ),
        BASE,
    )
    assert config.tls_certificate_path == BASE / "cert.pem"
    assert config.tls_private_key_path == Path("/etc/ssl/key.pem")
    assert config.listeners[0].tls


def test_relative_paths_resolve_against_base_dir() -> None:
    config = parse_config(
        minimal(
            database={"args": {"database": "data/home.db"}},
            signing_key_path="keys/my.key",
            media_store_path="/var/media",
        ),
        BASE,
    )
    assert config.database.path == BASE / "data/home.db"
    assert config.signing_key_path == BASE / "keys/my.key"
    assert config.media_store_path == Path("/var/media")


def test_default_paths_live_in_base_dir() -> None:
    config = parse_config(minimal(), BASE)
    assert config.database.path == BASE / "homeserver.db"
    assert config.signing_key_path == BASE / "example.org.signing.key"
    assert config.media_store_path == BASE / "media_store"


def test_load_config_resolves_paths_against_the_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (conf_dir / "homeserver.yaml").write_text(
        yaml.safe_dump(minimal(database={"args": {"database": "db/home.db"}}))
    )
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("../etc/homeserver.yaml"))
    assert config.database.path == conf_dir.resolve() / "db/home.db"
    assert config.signing_key_path == conf_dir.resolve() / "example.org.signing.key"
    assert config.config_path == (conf_dir / "homeserver.yaml").resolve()


def test_load_config_reports_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("server_name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_load_config_reports_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "homeserver.yaml"
    path.write_bytes(b"server_name: caf\xe9.example.org\n")
    with pytest.raises(ConfigError, match=r"homeserver\.yaml"):
        load_config(path)


@pytest.mark.parametrize("version", ["1", "10", "11", "12", 10])
def test_default_room_version_accepts_known_versions(version: object) -> None:
    config = parse_config(minimal(default_room_version=version), BASE)
    assert config.default_room_version == str(version)


@pytest.mark.parametrize("version", ["99", "0", "org.example.custom", "", 12.5])
def test_default_room_version_rejects_unknown_versions(version: object) -> None:
    message = config_error(minimal(default_room_version=version))
    assert message.startswith("default_room_version:")
    assert "12" in message


# --- the sample config -------------------------------------------------------------


def test_sample_config_file_matches_the_template() -> None:
    """The checked-in sample_config.yaml is what the template renders (regenerate it)."""
    sample = REPO_ROOT / "sample_config.yaml"
    assert sample.exists(), "sample_config.yaml is missing: write sample_config_text() to it"
    assert sample.read_text(encoding="utf-8") == sample_config_text()


def test_sample_config_parses_without_warnings() -> None:
    data = yaml.safe_load(sample_config_text())
    config = parse_config(data, Path("/etc/pocketserver"))
    assert config.warnings == ()
    assert config.server_name == "example.com"
    assert config.registration_shared_secret is None
    assert config.signing_key_path == Path("/etc/pocketserver/example.com.signing.key")
    assert config.database.path == Path("/var/lib/pocketserver/homeserver.db")
    # The sample spells out the defaults: parsing it equals parsing the defaults.
    assert config.bcrypt_rounds == 12
    assert config.memory_budget == 128 * 1024**2


def test_sample_config_mentions_every_known_top_level_key() -> None:
    """Every top-level key the loader reads appears in the sample, so users can find it."""
    data = yaml.safe_load(sample_config_text())
    text = sample_config_text()
    for key in (
        "server_name",
        "listeners",
        "memory_budget",
        "database",
        "signing_key_path",
        "registration_shared_secret",
        "bcrypt_rounds",
        "password_config",
        "rc_login",
        "default_room_version",
        "url_preview_enabled",
        "tls_certificate_path",
        "media_store_path",
    ):
        assert key in data or f"#{key}:" in text, key


# --- generate() --------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generate_writes_private_config_and_key(tmp_path: Path) -> None:
    config_path = tmp_path / "conf" / "homeserver.yaml"
    result = generate("example.org", config_path, tmp_path / "data")
    assert result.config_path == config_path
    assert result.signing_key_path == tmp_path / "conf" / "example.org.signing.key"
    assert not result.key_reused
    assert _mode(config_path) == 0o600
    assert _mode(result.signing_key_path) == 0o600
    assert (tmp_path / "data").is_dir()


def test_generated_config_loads_and_its_key_reads_back(tmp_path: Path) -> None:
    config_path = tmp_path / "homeserver.yaml"
    result = generate("example.org", config_path, tmp_path / "data", report_stats=True)
    config = load_config(config_path)
    assert config.warnings == ()
    assert config.server_name == "example.org"
    assert config.public_baseurl == "https://example.org/"
    assert config.report_stats is True
    assert config.database.path == tmp_path / "data" / "homeserver.db"
    assert config.media_store_path == tmp_path / "data" / "media_store"
    assert config.signing_key_path == result.signing_key_path
    keys = read_signing_keys(config.signing_key_path.read_text())
    assert len(keys) == 1
    assert keys[0].alg == "ed25519"
    assert keys[0].version.startswith("a_")
    secret = config.registration_shared_secret
    assert secret is not None
    assert len(secret) >= 32


def test_generate_data_dir_defaults_to_config_folder(tmp_path: Path) -> None:
    config_path = tmp_path / "site" / "homeserver.yaml"
    generate("example.org", config_path)
    config = load_config(config_path)
    assert config.database.path == tmp_path / "site" / "homeserver.db"
    assert config.media_store_path == tmp_path / "site" / "media_store"


def test_generate_uses_public_baseurl_and_server_name_with_port(tmp_path: Path) -> None:
    config_path = tmp_path / "homeserver.yaml"
    generate("example.org:8448", config_path, public_baseurl="http://127.0.0.1:8008/")
    config = load_config(config_path)
    assert config.server_name == "example.org:8448"
    assert config.public_baseurl == "http://127.0.0.1:8008/"
    assert config.signing_key_path.exists()


def test_generate_refuses_to_overwrite_and_changes_nothing(tmp_path: Path) -> None:
    config_path = tmp_path / "homeserver.yaml"
    config_path.write_text("server_name: mine\n")
    with pytest.raises(GenerateError, match="exists"):
        generate("example.org", config_path)
    assert config_path.read_text() == "server_name: mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["homeserver.yaml"]


def test_generate_twice_keeps_the_first_files(tmp_path: Path) -> None:
    config_path = tmp_path / "homeserver.yaml"
    first = generate("example.org", config_path)
    config_text = config_path.read_text()
    key_text = first.signing_key_path.read_text()
    with pytest.raises(GenerateError):
        generate("example.org", config_path)
    assert config_path.read_text() == config_text
    assert first.signing_key_path.read_text() == key_text


def test_generate_reuses_an_existing_valid_key(tmp_path: Path) -> None:
    key_path = tmp_path / "example.org.signing.key"
    key_text = write_signing_keys([generate_signing_key("a_Keep")])
    key_path.write_text(key_text)
    result = generate("example.org", tmp_path / "homeserver.yaml")
    assert result.key_reused
    assert key_path.read_text() == key_text
    config = load_config(tmp_path / "homeserver.yaml")
    assert read_signing_keys(config.signing_key_path.read_text())[0].version == "a_Keep"


@pytest.mark.parametrize("content", ["", "garbage\n", "ed25519 a_x not-base64!!\n"])
def test_generate_rejects_an_invalid_existing_key(tmp_path: Path, content: str) -> None:
    key_path = tmp_path / "example.org.signing.key"
    key_path.write_text(content)
    with pytest.raises(GenerateError, match="signing key"):
        generate("example.org", tmp_path / "homeserver.yaml")
    assert key_path.read_text() == content
    assert not (tmp_path / "homeserver.yaml").exists()


def test_two_generations_have_different_secrets(tmp_path: Path) -> None:
    a = generate("example.org", tmp_path / "a" / "homeserver.yaml")
    b = generate("example.org", tmp_path / "b" / "homeserver.yaml")
    config_a, config_b = load_config(a.config_path), load_config(b.config_path)
    assert config_a.registration_shared_secret != config_b.registration_shared_secret
    assert a.signing_key_path.read_text() != b.signing_key_path.read_text()
    key_a = read_signing_keys(a.signing_key_path.read_text())[0]
    key_b = read_signing_keys(b.signing_key_path.read_text())[0]
    assert bytes(key_a) != bytes(key_b)


def test_login_via_existing_session() -> None:
    assert parse_config(minimal(), BASE).login_token_lifetime_ms is None
    on = parse_config(minimal(login_via_existing_session={"enabled": True}), BASE)
    assert on.login_token_lifetime_ms == 5 * 60_000
    short = {"enabled": True, "token_timeout": "30s"}
    assert (
        parse_config(minimal(login_via_existing_session=short), BASE).login_token_lifetime_ms
        == 30_000
    )
    assert "needs password_config.enabled" in config_error(
        minimal(login_via_existing_session={"enabled": True}, password_config={"enabled": False})
    )
    assert "at most 1h" in config_error(
        minimal(login_via_existing_session={"enabled": True, "token_timeout": "2h"})
    )
    assert "token_timeout" in config_error(
        minimal(login_via_existing_session={"enabled": True, "token_timeout": "0s"})
    )


def test_insecure_identity_server_tls_is_off_unless_asked_for() -> None:
    key = "use_insecure_ssl_client_just_for_testing_do_not_use"
    assert getattr(parse_config(minimal(), BASE), key) is False
    config = parse_config(minimal(**{key: True}), BASE)
    assert getattr(config, key) is True
    assert config.warnings == ()
    assert key in config_error(minimal(**{key: "sure"}))
    assert f"#{key}: false" in sample_config_text()  # documented, commented out


def test_3pid_lookups_are_on_unless_turned_off() -> None:
    assert parse_config(minimal(), BASE).enable_3pid_lookup is True
    assert parse_config(minimal(enable_3pid_lookup=False), BASE).enable_3pid_lookup is False
