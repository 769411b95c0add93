"""The typed, frozen configuration that the rest of pocketserver reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pocketserver.appservice.registration import AppService
from pocketserver.config.log_settings import LogSettings
from pocketserver.config.media import MediaConfig

KNOWN_RESOURCES = frozenset({"client", "federation", "keys", "media", "health", "openid"})

# The default of ip_range_blacklist: the same ranges as the sample config's
# url_preview_ip_range_blacklist (loopback, private, CGNAT, link-local, ULA,
# multicast, documentation, benchmarking, 0.0.0.0/8, ::).
DEFAULT_IP_RANGE_BLACKLIST: tuple[str, ...] = (
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "169.254.0.0/16",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "0.0.0.0/8",
    "::1/128",
    "::/128",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
    "ff00::/8",
    "fec0::/10",
)


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    port: int
    bind_addresses: tuple[str, ...]
    type: str
    tls: bool
    x_forwarded: bool
    resources: frozenset[str]


@dataclass(frozen=True, slots=True)
class OldSigningKey:
    """A retired signing key of this server (Synapse's ``old_signing_keys``), still
    published in ``old_verify_keys`` so that the events it signed can be checked."""

    key_id: str
    key: str
    """The public key, unpadded base64."""
    expired_ts: int
    """When it stopped being used (POSIX ms)."""


@dataclass(frozen=True, slots=True)
class TrustedKeyServer:
    """A notary asked for other servers' keys (Synapse's ``trusted_key_servers``)."""

    server_name: str
    verify_keys: tuple[tuple[str, str], ...] = ()
    """``(key_id, unpadded base64)`` the notary's answers must be signed with; empty:
    the notary's own keys, fetched from it like any server's."""


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    path: Path
    synchronous: str  # "full" or "normal"


@dataclass(frozen=True, slots=True)
class RateLimit:
    per_second: float
    burst_count: int


@dataclass(frozen=True, slots=True)
class LoginRateLimits:
    address: RateLimit
    account: RateLimit
    failed_attempts: RateLimit


@dataclass(frozen=True, slots=True)
class RoomRateLimits:
    """Synapse's rc_* limits on room actions, with Synapse's defaults
    (synapse/config/ratelimiting.py); read by config/ratelimits.py."""

    joins_local: RateLimit = RateLimit(0.1, 10)
    joins_remote: RateLimit = RateLimit(0.01, 10)
    joins_per_room: RateLimit = RateLimit(1.0, 10)
    invites_per_room: RateLimit = RateLimit(0.3, 10)
    invites_per_user: RateLimit = RateLimit(0.003, 5)
    invites_per_issuer: RateLimit = RateLimit(0.3, 10)
    room_creation: RateLimit = RateLimit(0.016, 10)
    media_create: RateLimit = RateLimit(10.0, 50)
    presence_per_user: RateLimit = RateLimit(0.1, 1)
    admin_redaction: RateLimit | None = None
    """None: moderators' redactions of others' events count under rc_message."""


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the server reads from homeserver.yaml, validated."""

    server_name: str
    public_baseurl: str
    serve_server_wellknown: bool
    listeners: tuple[ListenerConfig, ...]
    tls_certificate_path: Path | None
    tls_private_key_path: Path | None
    memory_budget: int
    database: DatabaseConfig
    signing_key_path: Path
    key_refresh_interval_ms: int
    registration_shared_secret: str | None
    enable_registration: bool
    registration_requires_token: bool
    allow_guest_access: bool
    refreshable_access_token_lifetime_ms: int
    refresh_token_lifetime_ms: int | None
    rc_registration_token_validity: RateLimit
    bcrypt_rounds: int
    password_enabled: bool
    password_pepper: str
    max_upload_size: int
    max_request_body_size: int
    rc_message: RateLimit
    rc_registration: RateLimit
    rc_login: LoginRateLimits
    default_room_version: str
    redaction_retention_period_ms: int | None
    presence_enabled: bool
    url_preview_enabled: bool
    url_preview_ip_range_blacklist: tuple[str, ...]
    url_preview_ip_range_whitelist: tuple[str, ...]
    turn_uris: tuple[str, ...]
    turn_shared_secret: str | None
    turn_user_lifetime_ms: int
    media_store_path: Path
    log_level: str
    report_stats: bool
    config_path: Path | None = None
    warnings: tuple[str, ...] = field(default=(), compare=False)
    media: MediaConfig = field(default_factory=MediaConfig)
    logs: LogSettings = field(default_factory=LogSettings)
    # Outgoing requests on a user's behalf (push gateways); see homeserver.yaml.in.
    ip_range_blacklist: tuple[str, ...] = DEFAULT_IP_RANGE_BLACKLIST
    ip_range_whitelist: tuple[str, ...] = ()
    federation_verify_certificates: bool = True
    """Other servers' TLS certificates are checked (Synapse's key)."""
    federation_custom_ca_list: tuple[Path, ...] = ()
    """PEM files of the CAs trusted for federation instead of the system's."""
    federation_domain_whitelist: frozenset[str] | None = None
    """If set, the only server names federation talks to."""
    allow_public_rooms_over_federation: bool = False
    """Other servers may read this server's room directory (Synapse's key and default)."""
    allow_access_token_in_query: bool = True
    """Accept ``?access_token=`` (deprecated by the spec; Synapse always accepts it)."""
    enable_3pid_lookup: bool = True
    """Invites by email address may ask the client's identity server (Synapse's key)."""
    use_insecure_ssl_client_just_for_testing_do_not_use: bool = False
    """Identity server requests accept any TLS certificate (test rigs such as SyTest)."""
    login_token_lifetime_ms: int | None = None
    """``login_via_existing_session``: how long a ``POST /login/get_token`` token lasts;
    None when the endpoint is off."""
    enable_registration_without_verification: bool = False
    """Open registration (no token) was asked for knowingly; see the loader's check."""
    rate_limits: RoomRateLimits = field(default_factory=lambda: RoomRateLimits())
    """The rc_* limits on joins, invites, room creation, media IDs, presence and
    moderators' redactions (config/ratelimits.py)."""
    app_services: tuple[AppService, ...] = ()
    """The registrations named by ``app_service_config_files``, validated."""
    old_signing_keys: tuple[OldSigningKey, ...] = ()
    trusted_key_servers: tuple[TrustedKeyServer, ...] = ()
    """Empty by default (Synapse's default is matrix.org): see homeserver.yaml.in."""
    allow_device_name_lookup_over_federation: bool = False
    """Other servers see our users' device display names (Synapse's key and default)."""
    allow_profile_lookup_over_federation: bool = True
    """Other servers may read our users' profiles (``/query/profile``; Synapse's key and
    default)."""

    def client_base_url(self) -> str:
        """The base URL of the first client listener, for tools on this host."""
        for listener in self.listeners:
            if "client" in listener.resources:
                host = listener.bind_addresses[0] if listener.bind_addresses else "127.0.0.1"
                if host in ("0.0.0.0", ""):
                    host = "127.0.0.1"
                elif host == "::":
                    host = "::1"
                if ":" in host:
                    host = f"[{host}]"
                scheme = "https" if listener.tls else "http"
                return f"{scheme}://{host}:{listener.port}"
        raise ValueError("no listener serves the client resource")
