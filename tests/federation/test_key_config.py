"""``key_refresh_interval``, ``old_signing_keys`` and ``trusted_key_servers``."""

from __future__ import annotations

import pytest
import yaml

from pocketserver.config import parse_config
from pocketserver.config.dump import config_as_yaml_keys
from pocketserver.config.model import OldSigningKey, TrustedKeyServer
from pocketserver.core.crypto import encode_verify_key_base64, generate_signing_key, get_verify_key
from tests.test_config import BASE, config_error, minimal

KEY = encode_verify_key_base64(get_verify_key(generate_signing_key("x")))
COMPROMISED = "l/O9hxMVKB6Lg+3Hqf0FQQZhVESQcMzbPN1Cz2nM3og"


def test_defaults() -> None:
    config = parse_config(minimal(), BASE)
    assert config.key_refresh_interval_ms == 86_400_000
    assert config.old_signing_keys == ()
    assert config.trusted_key_servers == ()  # no notary unless asked for


def test_values_and_round_trip_through_dump() -> None:
    config = parse_config(
        minimal(
            old_signing_keys={"ed25519:old": {"key": KEY, "expired_ts": 5}},
            trusted_key_servers=[
                {"server_name": "notary.example", "verify_keys": {"ed25519:n": KEY}},
                {"server_name": "other.example:8448"},
            ],
            suppress_key_server_warning=True,
        ),
        BASE,
    )
    assert config.old_signing_keys == (OldSigningKey("ed25519:old", KEY, 5),)
    assert config.trusted_key_servers == (
        TrustedKeyServer("notary.example", (("ed25519:n", KEY),)),
        TrustedKeyServer("other.example:8448"),
    )
    assert config.warnings == ()  # suppress_key_server_warning is a known Synapse key
    dumped = yaml.safe_load(yaml.safe_dump(config_as_yaml_keys(config, mask_secrets=False)))
    assert parse_config(dumped, BASE) == config


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"key_refresh_interval": "0s"}, "key_refresh_interval"),
        ({"old_signing_keys": ["x"]}, "old_signing_keys"),
        ({"old_signing_keys": {"ed25519:o": {"key": KEY}}}, "expired_ts"),
        ({"old_signing_keys": {"ed25519:o": {"key": "abc", "expired_ts": 1}}}, "ed25519:o"),
        ({"old_signing_keys": {"rsa:o": {"key": KEY, "expired_ts": 1}}}, "rsa:o"),
        ({"trusted_key_servers": {"server_name": "a"}}, "trusted_key_servers"),
        ({"trusted_key_servers": [{"verify_keys": {}}]}, "server_name"),
        ({"trusted_key_servers": [{"server_name": "bad name"}]}, "server_name"),
        (
            {"trusted_key_servers": [{"server_name": "a.example", "verify_keys": ["k"]}]},
            "verify_keys",
        ),
        (
            {
                "trusted_key_servers": [
                    {"server_name": "a.example", "verify_keys": {"ed25519:c": COMPROMISED}}
                ]
            },
            "compromised",
        ),
    ],
)
def test_errors_name_the_key(overrides: dict[str, object], needle: str) -> None:
    message = config_error(minimal(**overrides))
    assert needle in message
