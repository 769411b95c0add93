"""Load homeserver.yaml into :class:`Config`, naming the key of every bad value."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import yaml

from pocketserver.config.appservices import load_registrations
from pocketserver.config.keys import parse_old_signing_keys, parse_trusted_key_servers
from pocketserver.config.log_settings import log_level, parse_log_settings
from pocketserver.config.media import parse_media_config
from pocketserver.config.model import (
    DEFAULT_IP_RANGE_BLACKLIST,
    KNOWN_RESOURCES,
    Config,
    DatabaseConfig,
    ListenerConfig,
    LoginRateLimits,
    RateLimit,
)
from pocketserver.config.ratelimits import parse_room_rate_limits
from pocketserver.config.units import parse_duration_ms, parse_size
from pocketserver.core.room_versions import KNOWN_ROOM_VERSIONS

T = TypeVar("T")


# Synapse keys that people copy over and that have no meaning here; they are
# accepted silently instead of warned about.
_IGNORED_SYNAPSE_KEYS = frozenset(
    {
        "pid_file",
        "macaroon_secret_key",
        "form_secret",
        # Synapse warns when matrix.org is a notary; pocketserver never does (and has
        # no notary by default), so there is nothing to suppress.
        "suppress_key_server_warning",
    }
)


class ConfigError(Exception):
    """A value in the config is missing, of the wrong type or out of range."""


class _Section:
    """Reads typed values out of one mapping and remembers which keys were used."""

    def __init__(self, data: object, path: str, warnings: list[str]) -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path or 'config'}: expected a mapping, got {_kind(data)}")
        self._data: Mapping[object, object] = data
        self._path = path
        self._used: set[str] = set()
        self._warnings = warnings

    def _key(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def raw(self, key: str, default: object = None) -> object:
        self._used.add(key)
        return self._data.get(key, default)

    def has(self, key: str) -> bool:
        return key in self._data

    def get(self, key: str, conv: Callable[[object], T], default: object) -> T:
        """Return ``conv(value)``; ``conv`` raises ValueError with what it expected."""
        value = self.raw(key, default)
        try:
            return conv(value)
        except ValueError as e:
            raise ConfigError(f"{self._key(key)}: {e} (got {value!r})") from None

    def section(self, key: str) -> _Section:
        return _Section(self.raw(key), self._key(key), self._warnings)

    def finish(self, ignored: frozenset[str] = frozenset()) -> None:
        for key in self._data:
            if key not in self._used and key not in ignored:
                self._warnings.append(f"unknown config key {self._key(str(key))!r} (ignored)")


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _str(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


def _opt_str(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("expected a string or null")
    return value


def _any_str(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("yes", "no"):
        return value == "yes"
    raise ValueError("expected true or false")


def _int_range(lo: int, hi: int) -> Callable[[object], int]:
    def conv(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"expected a whole number from {lo} to {hi}")
        return value

    return conv


def _positive_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError("expected a positive number")
    return float(value)


def _str_list(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")
    return tuple(value)


def _ip_ranges(value: object) -> tuple[str, ...]:
    import netaddr

    ranges = _str_list(value)
    for entry in ranges:
        try:
            netaddr.IPNetwork(entry)
        except (netaddr.AddrFormatError, ValueError, TypeError):
            raise ValueError(f"{entry!r} is not an IP address or CIDR range") from None
    return ranges


def _path_list(base: Path, value: object) -> tuple[Path, ...]:
    return tuple(_path(base)(entry) for entry in _str_list(value))


def _server_name_set(value: object) -> frozenset[str] | None:
    if value is None:
        return None
    names = _str_list(value)
    for name in names:
        _server_name(name)
    return frozenset(names)


def _choice(*choices: str) -> Callable[[object], str]:
    def conv(value: object) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value.lower()

    return conv


def _server_name(value: object) -> str:
    from pocketserver.core.identifiers import is_valid_server_name

    if not isinstance(value, str) or not is_valid_server_name(value):
        raise ValueError("expected a server name such as example.com or example.com:8448")
    return value


def _base_url(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a URL such as https://matrix.example.com/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected a URL such as https://matrix.example.com/")
    return value if value.endswith("/") else value + "/"


def _rate_limit(sec: _Section, default: RateLimit) -> RateLimit:
    limit = RateLimit(
        per_second=sec.get("per_second", _positive_float, default.per_second),
        burst_count=sec.get("burst_count", _int_range(1, 1_000_000), default.burst_count),
    )
    sec.finish()
    return limit


def _listener(sec: _Section, index: int) -> ListenerConfig:
    kind = sec.get("type", _choice("http"), "http")
    port = sec.get("port", _int_range(0, 65535), None)
    binds = sec.get("bind_addresses", _str_list, None)
    if not binds:
        bind = sec.get("bind_address", _opt_str, None)
        binds = (bind,) if bind else ("127.0.0.1",)
    resources: set[str] = set()
    raw_resources = sec.raw("resources", [])
    if not isinstance(raw_resources, list) or not raw_resources:
        raise ConfigError(f"listeners[{index}].resources: expected a non-empty list")
    for j, entry in enumerate(raw_resources):
        rsec = _Section(entry, f"listeners[{index}].resources[{j}]", sec._warnings)
        names = rsec.get("names", _str_list, None)
        rsec.raw("compress")
        rsec.finish()
        unknown = set(names) - KNOWN_RESOURCES
        if unknown:
            raise ConfigError(
                f"listeners[{index}].resources[{j}].names: unknown resource(s) "
                f"{sorted(unknown)}; known: {sorted(KNOWN_RESOURCES)}"
            )
        resources.update(names)
    listener = ListenerConfig(
        port=port,
        bind_addresses=binds,
        type=kind,
        tls=sec.get("tls", _bool, False),
        x_forwarded=sec.get("x_forwarded", _bool, False),
        resources=frozenset(resources),
    )
    sec.finish()
    return listener


def _listeners(root: _Section) -> tuple[ListenerConfig, ...]:
    raw = root.raw("listeners")
    if not isinstance(raw, list) or not raw:
        raise ConfigError("listeners: expected a non-empty list of listeners")
    return tuple(
        _listener(_Section(item, f"listeners[{i}]", root._warnings), i)
        for i, item in enumerate(raw)
    )


def _path(base: Path) -> Callable[[object], Path]:
    def conv(value: object) -> Path:
        if not isinstance(value, str) or not value:
            raise ValueError("expected a path")
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p

    return conv


def _database(root: _Section, base: Path) -> DatabaseConfig:
    sec = root.section("database")
    sec.get("name", _choice("sqlite3", "sqlite"), "sqlite3")
    args = sec.section("args")
    path = args.get("database", _path(base), "homeserver.db")
    args.finish(frozenset({"cp_min", "cp_max"}))
    synchronous = sec.get("synchronous", _choice("full", "normal"), "full")
    sec.finish(frozenset({"allow_unsafe_locale", "txn_limit"}))
    return DatabaseConfig(path=path, synchronous=synchronous)


def parse_config(data: object, base_dir: Path, config_path: Path | None = None) -> Config:
    """Validate a parsed YAML document and return the frozen :class:`Config`.

    Args:
        data: The YAML document (a mapping).
        base_dir: The folder that relative paths are relative to.
        config_path: Where the document came from, if a file.

    Raises:
        ConfigError: a value is missing or invalid; the message names the key.
    """
    warnings: list[str] = []
    root = _Section(data, "", warnings)
    server_name = root.get("server_name", _server_name, None)
    listeners = _listeners(root)
    tls_cert = root.get(
        "tls_certificate_path", lambda v: None if v is None else _path(base_dir)(v), None
    )
    tls_key = root.get(
        "tls_private_key_path", lambda v: None if v is None else _path(base_dir)(v), None
    )
    if any(lst.tls for lst in listeners) and not (tls_cert and tls_key):
        raise ConfigError(
            "listeners: tls is true, so tls_certificate_path and tls_private_key_path "
            "must both be set"
        )
    public_baseurl = root.get("public_baseurl", _base_url, f"https://{server_name}/")
    password = root.section("password_config")
    pw_enabled = password.get("enabled", _bool, True)
    pepper = password.get("pepper", _any_str, "")
    password.finish(frozenset({"policy", "localdb_enabled"}))
    login = root.section("rc_login")
    slow = RateLimit(0.003, 5)
    rc_login = LoginRateLimits(
        address=_rate_limit(login.section("address"), slow),
        account=_rate_limit(login.section("account"), slow),
        failed_attempts=_rate_limit(login.section("failed_attempts"), RateLimit(0.17, 3)),
    )
    login.finish()
    presence = root.section("presence")
    presence_enabled = presence.get("enabled", _bool, True)
    presence.finish()
    url_preview_enabled = root.get("url_preview_enabled", _bool, False)
    blacklist = root.get("url_preview_ip_range_blacklist", _ip_ranges, None)
    if url_preview_enabled and not blacklist:
        raise ConfigError(
            "url_preview_enabled: true requires url_preview_ip_range_blacklist, so that "
            "previews cannot reach addresses on your own network"
        )
    default_rv = root.get("default_room_version", lambda v: str(v) if v is not None else "", "12")
    if default_rv not in KNOWN_ROOM_VERSIONS:
        raise ConfigError(
            f"default_room_version: expected one of {', '.join(KNOWN_ROOM_VERSIONS)} "
            f"(got {default_rv!r})"
        )
    config = Config(
        server_name=server_name,
        public_baseurl=public_baseurl,
        serve_server_wellknown=root.get("serve_server_wellknown", _bool, False),
        allow_device_name_lookup_over_federation=root.get(
            "allow_device_name_lookup_over_federation", _bool, False
        ),
        allow_profile_lookup_over_federation=root.get(
            "allow_profile_lookup_over_federation", _bool, True
        ),
        listeners=listeners,
        tls_certificate_path=tls_cert,
        tls_private_key_path=tls_key,
        memory_budget=root.get("memory_budget", _budget, "128M"),
        database=_database(root, base_dir),
        signing_key_path=root.get(
            "signing_key_path", _path(base_dir), f"{server_name}.signing.key"
        ),
        key_refresh_interval_ms=root.get("key_refresh_interval", _positive_duration, "1d"),
        old_signing_keys=root.get("old_signing_keys", parse_old_signing_keys, None),
        trusted_key_servers=root.get("trusted_key_servers", parse_trusted_key_servers, None),
        registration_shared_secret=root.get("registration_shared_secret", _opt_str, None),
        enable_registration=_enable_registration(root),
        registration_requires_token=root.get("registration_requires_token", _bool, False),
        enable_registration_without_verification=root.get(
            "enable_registration_without_verification", _bool, False
        ),
        allow_guest_access=root.get("allow_guest_access", _bool, False),
        allow_access_token_in_query=root.get("allow_access_token_in_query", _bool, True),
        refreshable_access_token_lifetime_ms=root.get(
            "refreshable_access_token_lifetime", _positive_duration, "5m"
        ),
        refresh_token_lifetime_ms=root.get("refresh_token_lifetime", _opt_duration, None),
        rc_registration_token_validity=_rate_limit(
            root.section("rc_registration_token_validity"), RateLimit(0.1, 5)
        ),
        bcrypt_rounds=root.get("bcrypt_rounds", _int_range(4, 31), 12),
        password_enabled=pw_enabled,
        login_token_lifetime_ms=_login_via_existing_session(root, pw_enabled),
        password_pepper=pepper,
        max_upload_size=root.get("max_upload_size", parse_size, "50M"),
        max_request_body_size=root.get("max_request_body_size", _body_size, "1M"),
        rc_message=_rate_limit(root.section("rc_message"), RateLimit(0.2, 10)),
        rc_registration=_rate_limit(root.section("rc_registration"), RateLimit(0.17, 3)),
        rc_login=rc_login,
        default_room_version=default_rv,
        redaction_retention_period_ms=root.get("redaction_retention_period", _opt_duration, "7d"),
        presence_enabled=presence_enabled,
        url_preview_enabled=url_preview_enabled,
        url_preview_ip_range_blacklist=blacklist or (),
        url_preview_ip_range_whitelist=root.get("url_preview_ip_range_whitelist", _ip_ranges, None),
        turn_uris=root.get("turn_uris", _str_list, None),
        turn_shared_secret=root.get("turn_shared_secret", _opt_str, None),
        turn_user_lifetime_ms=root.get("turn_user_lifetime", parse_duration_ms, "1h"),
        media_store_path=root.get("media_store_path", _path(base_dir), "media_store"),
        log_level=root.get("log_level", log_level, "INFO"),
        report_stats=root.get("report_stats", _bool, False),
        ip_range_blacklist=root.get(
            "ip_range_blacklist", _ip_ranges, list(DEFAULT_IP_RANGE_BLACKLIST)
        ),
        ip_range_whitelist=root.get("ip_range_whitelist", _ip_ranges, None),
        enable_3pid_lookup=root.get("enable_3pid_lookup", _bool, True),
        federation_verify_certificates=root.get("federation_verify_certificates", _bool, True),
        federation_custom_ca_list=root.get(
            "federation_custom_ca_list", partial(_path_list, base_dir), None
        ),
        federation_domain_whitelist=root.get("federation_domain_whitelist", _server_name_set, None),
        allow_public_rooms_over_federation=root.get(
            "allow_public_rooms_over_federation", _bool, False
        ),
        use_insecure_ssl_client_just_for_testing_do_not_use=root.get(
            "use_insecure_ssl_client_just_for_testing_do_not_use", _bool, False
        ),
        config_path=config_path,
        warnings=(),
    )
    config = replace(config, media=parse_media_config(root))
    config = replace(config, logs=parse_log_settings(root, base_dir))
    config = replace(config, rate_limits=parse_room_rate_limits(root))
    config = replace(
        config,
        app_services=root.get(
            "app_service_config_files", partial(load_registrations, base_dir, server_name), None
        ),
    )
    root.finish(_IGNORED_SYNAPSE_KEYS)
    return _with_warnings(config, warnings)


def _enable_registration(root: _Section) -> bool:
    """``enable_registration``, refused without a check on who registers (as Synapse's
    ``validate_config``): a registration token is the only check offered here, so open
    sign-up needs ``enable_registration_without_verification: true`` said out loud."""
    enabled = root.get("enable_registration", _bool, False)
    if (
        enabled
        and not root.get("registration_requires_token", _bool, False)
        and not root.get("enable_registration_without_verification", _bool, False)
    ):
        raise ConfigError(
            "enable_registration: you have enabled open registration without any "
            "verification. This is a known vector for spam and abuse. To let people "
            "register, set registration_requires_token: true and hand out registration "
            "tokens (email and captcha verification are not supported). If you really "
            "want anyone to be able to register, set "
            "enable_registration_without_verification: true."
        )
    return enabled


def _with_warnings(config: Config, warnings: list[str]) -> Config:
    from dataclasses import replace

    return replace(config, warnings=tuple(warnings))


def _opt_duration(value: object) -> int | None:
    return None if value is None else parse_duration_ms(value)


def _login_via_existing_session(root: _Section, password_enabled: bool) -> int | None:
    section = root.section("login_via_existing_session")
    enabled = section.get("enabled", _bool, False)
    lifetime = section.get("token_timeout", _positive_duration, "5m")
    section.finish()
    if enabled and not password_enabled:
        raise ConfigError(
            "login_via_existing_session.enabled needs password_config.enabled: the user "
            "confirms each new login token with their password"
        )
    if lifetime > 60 * 60 * 1000:
        raise ConfigError("login_via_existing_session.token_timeout: at most 1h")
    return lifetime if enabled else None


def _positive_duration(value: object) -> int:
    ms = parse_duration_ms(value)
    if ms <= 0:
        raise ValueError("expected a duration longer than zero")
    return ms


def _budget(value: object) -> int:
    size = parse_size(value)
    if size < 16 * 1024 * 1024:
        raise ValueError("memory_budget must be at least 16M")
    return size


def _body_size(value: object) -> int:
    size = parse_size(value)
    if size < 64 * 1024:
        raise ValueError("must be at least 64K (one Matrix event is up to 64K)")
    return size


def load_config(path: Path) -> Config:
    """Read and validate the config file at ``path``.

    Raises:
        ConfigError: the file is missing, not YAML, or a value is invalid.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte {e.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    return parse_config(data, path.resolve().parent, path.resolve())
