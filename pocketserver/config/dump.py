"""The effective config as homeserver.yaml keys (what ``check-config`` prints).

The output uses the key names and units a user writes (``password_config.pepper``,
``memory_budget: 128M``), not the model's field names, so it can be pasted back
into a config file. Secrets are replaced by :data:`MASK`.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from pocketserver.config.log_settings import LogSettings
from pocketserver.config.media import MediaConfig, UrlPattern
from pocketserver.config.model import (
    Config,
    ListenerConfig,
    LoginRateLimits,
    RateLimit,
    RoomRateLimits,
)
from pocketserver.config.units import format_size

MASK = "********"
SECRET_NOTE = "  # secret: not shown"

# Every field of Config that dump_config writes (tests check none is forgotten).
DUMPED_FIELDS = frozenset(
    {
        "server_name",
        "public_baseurl",
        "serve_server_wellknown",
        "allow_device_name_lookup_over_federation",
        "allow_profile_lookup_over_federation",
        "listeners",
        "tls_certificate_path",
        "tls_private_key_path",
        "memory_budget",
        "database",
        "signing_key_path",
        "key_refresh_interval_ms",
        "old_signing_keys",
        "trusted_key_servers",
        "registration_shared_secret",
        "enable_registration",
        "registration_requires_token",
        "enable_registration_without_verification",
        "allow_guest_access",
        "allow_access_token_in_query",
        "app_services",
        "refreshable_access_token_lifetime_ms",
        "refresh_token_lifetime_ms",
        "rc_registration_token_validity",
        "bcrypt_rounds",
        "password_enabled",
        "password_pepper",
        "login_token_lifetime_ms",
        "max_upload_size",
        "max_request_body_size",
        "rc_message",
        "rc_registration",
        "rc_login",
        "rate_limits",
        "default_room_version",
        "redaction_retention_period_ms",
        "presence_enabled",
        "url_preview_enabled",
        "url_preview_ip_range_blacklist",
        "url_preview_ip_range_whitelist",
        "turn_uris",
        "turn_shared_secret",
        "turn_user_lifetime_ms",
        "media_store_path",
        "log_level",
        "report_stats",
        "media",
        "logs",
        "ip_range_blacklist",
        "ip_range_whitelist",
        "enable_3pid_lookup",
        "use_insecure_ssl_client_just_for_testing_do_not_use",
        "federation_verify_certificates",
        "federation_custom_ca_list",
        "federation_domain_whitelist",
        "allow_public_rooms_over_federation",
    }
)

_DURATION_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000))


def format_duration(ms: int) -> str:
    """Render milliseconds the way the config writes durations (``"5m"``, ``"250ms"``)."""
    for unit, factor in _DURATION_UNITS:
        if ms >= factor and ms % factor == 0:
            return f"{ms // factor}{unit}"
    return f"{ms}ms"


def _opt_duration(ms: int | None) -> str | None:
    return None if ms is None else format_duration(ms)


def _path(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _secret(value: str | None, mask: bool) -> str | None:
    return MASK if mask and value else value


def _rate(limit: RateLimit) -> dict[str, object]:
    return {"per_second": limit.per_second, "burst_count": limit.burst_count}


def _login_rates(limits: LoginRateLimits) -> dict[str, object]:
    return {
        "address": _rate(limits.address),
        "account": _rate(limits.account),
        "failed_attempts": _rate(limits.failed_attempts),
    }


def _room_rates(limits: RoomRateLimits) -> dict[str, object]:
    keys: dict[str, object] = {
        "rc_joins": {"local": _rate(limits.joins_local), "remote": _rate(limits.joins_remote)},
        "rc_joins_per_room": _rate(limits.joins_per_room),
        "rc_invites": {
            "per_room": _rate(limits.invites_per_room),
            "per_user": _rate(limits.invites_per_user),
            "per_issuer": _rate(limits.invites_per_issuer),
        },
        "rc_room_creation": _rate(limits.room_creation),
        "rc_media_create": _rate(limits.media_create),
        "rc_presence": {"per_user": _rate(limits.presence_per_user)},
    }
    if limits.admin_redaction is not None:
        keys["rc_admin_redaction"] = _rate(limits.admin_redaction)
    return keys


def _listener(listener: ListenerConfig) -> dict[str, object]:
    return {
        "port": listener.port,
        "bind_addresses": list(listener.bind_addresses),
        "type": listener.type,
        "tls": listener.tls,
        "x_forwarded": listener.x_forwarded,
        "resources": [{"names": sorted(listener.resources)}],
    }


def _url_pattern(pattern: UrlPattern) -> dict[str, str]:
    return dict(pattern.components)


def _media(media: MediaConfig) -> dict[str, object]:
    return {
        "enable_media_repo": media.enable_media_repo,
        "enable_authenticated_media": media.enable_authenticated_media,
        "thumbnail_sizes": [
            {"width": w, "height": h, "method": m} for w, h, m in media.thumbnail_sizes
        ],
        "dynamic_thumbnails": media.dynamic_thumbnails,
        "max_image_pixels": format_size(media.max_image_pixels),
        "max_pending_media_uploads": media.max_pending_media_uploads,
        "unused_expiration_time": format_duration(media.unused_expiration_time_ms),
        "media_upload_quota_per_user": (
            None
            if media.upload_quota_per_user is None
            else format_size(media.upload_quota_per_user)
        ),
        "remote_media_cache_size": (
            None
            if media.remote_media_cache_size is None
            else format_size(media.remote_media_cache_size)
        ),
        "media_retention": {
            "local_media_lifetime": _opt_duration(media.local_media_lifetime_ms),
            "remote_media_lifetime": _opt_duration(media.remote_media_lifetime_ms),
        },
        "url_preview_url_blacklist": [_url_pattern(p) for p in media.url_preview_url_blacklist],
        "max_spider_size": format_size(media.max_spider_size),
    }


def _logs(logs: LogSettings) -> dict[str, object]:
    return {
        "log_config": _path(logs.config_file),
        "log_file": _path(logs.file),
        "log_file_max_size": format_size(logs.file_max_size),
        "log_file_backup_count": logs.file_backup_count,
        "access_log_level": logs.access_level,
        "access_log_slow_threshold": format_duration(logs.access_slow_ms),
    }


def config_as_yaml_keys(config: Config, *, mask_secrets: bool = True) -> dict[str, object]:
    """The config as a homeserver.yaml document: parsing it gives ``config`` back
    (with the secrets filled in when they were masked)."""
    c = config
    login = c.login_token_lifetime_ms
    return {
        "server_name": c.server_name,
        "public_baseurl": c.public_baseurl,
        "serve_server_wellknown": c.serve_server_wellknown,
        "allow_device_name_lookup_over_federation": c.allow_device_name_lookup_over_federation,
        "allow_profile_lookup_over_federation": c.allow_profile_lookup_over_federation,
        "listeners": [_listener(listener) for listener in c.listeners],
        "tls_certificate_path": _path(c.tls_certificate_path),
        "tls_private_key_path": _path(c.tls_private_key_path),
        "memory_budget": format_size(c.memory_budget),
        "database": {
            "name": "sqlite3",
            "args": {"database": str(c.database.path)},
            "synchronous": c.database.synchronous,
        },
        "signing_key_path": str(c.signing_key_path),
        "key_refresh_interval": format_duration(c.key_refresh_interval_ms),
        "old_signing_keys": {
            k.key_id: {"key": k.key, "expired_ts": k.expired_ts} for k in c.old_signing_keys
        },
        "trusted_key_servers": [
            {"server_name": t.server_name, "verify_keys": dict(t.verify_keys)}
            if t.verify_keys
            else {"server_name": t.server_name}
            for t in c.trusted_key_servers
        ],
        "registration_shared_secret": _secret(c.registration_shared_secret, mask_secrets),
        "enable_registration": c.enable_registration,
        "registration_requires_token": c.registration_requires_token,
        "enable_registration_without_verification": c.enable_registration_without_verification,
        "allow_guest_access": c.allow_guest_access,
        "allow_access_token_in_query": c.allow_access_token_in_query,
        # The registration files, not their contents (which hold the tokens).
        "app_service_config_files": [service.source for service in c.app_services],
        "refreshable_access_token_lifetime": format_duration(
            c.refreshable_access_token_lifetime_ms
        ),
        "refresh_token_lifetime": _opt_duration(c.refresh_token_lifetime_ms),
        "bcrypt_rounds": c.bcrypt_rounds,
        "password_config": {
            "enabled": c.password_enabled,
            "pepper": _secret(c.password_pepper, mask_secrets) or "",
        },
        "login_via_existing_session": {
            "enabled": login is not None,
            "token_timeout": format_duration(login if login is not None else 300_000),
        },
        "max_upload_size": format_size(c.max_upload_size),
        "max_request_body_size": format_size(c.max_request_body_size),
        "rc_message": _rate(c.rc_message),
        "rc_registration": _rate(c.rc_registration),
        "rc_registration_token_validity": _rate(c.rc_registration_token_validity),
        "rc_login": _login_rates(c.rc_login),
        **_room_rates(c.rate_limits),
        "default_room_version": c.default_room_version,
        "redaction_retention_period": _opt_duration(c.redaction_retention_period_ms),
        "presence": {"enabled": c.presence_enabled},
        "url_preview_enabled": c.url_preview_enabled,
        "url_preview_ip_range_blacklist": list(c.url_preview_ip_range_blacklist),
        "url_preview_ip_range_whitelist": list(c.url_preview_ip_range_whitelist),
        "ip_range_blacklist": list(c.ip_range_blacklist),
        "ip_range_whitelist": list(c.ip_range_whitelist),
        "enable_3pid_lookup": c.enable_3pid_lookup,
        "federation_verify_certificates": c.federation_verify_certificates,
        "federation_custom_ca_list": [str(p) for p in c.federation_custom_ca_list],
        "federation_domain_whitelist": (
            None if c.federation_domain_whitelist is None else sorted(c.federation_domain_whitelist)
        ),
        "allow_public_rooms_over_federation": c.allow_public_rooms_over_federation,
        "use_insecure_ssl_client_just_for_testing_do_not_use": (
            c.use_insecure_ssl_client_just_for_testing_do_not_use
        ),
        "turn_uris": list(c.turn_uris),
        "turn_shared_secret": _secret(c.turn_shared_secret, mask_secrets),
        "turn_user_lifetime": format_duration(c.turn_user_lifetime_ms),
        "media_store_path": str(c.media_store_path),
        **_media(c.media),
        "log_level": c.log_level,
        **_logs(c.logs),
        "report_stats": c.report_stats,
    }


def dump_config(config: Config) -> str:
    """The effective config as YAML with secrets masked, each marked by a comment."""
    text = yaml.safe_dump(config_as_yaml_keys(config), sort_keys=False, default_flow_style=False)
    masked = f": '{MASK}'"
    return "".join(
        line + SECRET_NOTE + "\n" if line.endswith(masked) else line + "\n"
        for line in text.splitlines()
    )
