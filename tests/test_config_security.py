"""Config defaults that matter for security (issue #9): open registration needs to be
asked for out loud, X-Forwarded-For is not trusted by default, and the rc_* room
limits have Synapse's keys and defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from synapse.config.ratelimiting import RatelimitConfig

from pocketserver.cli import main
from pocketserver.config import ConfigError, parse_config
from pocketserver.config.generate import generate, sample_config_text
from pocketserver.config.model import RateLimit, RoomRateLimits

BASE = Path("/srv/pocket")


def minimal(**overrides: object) -> dict[str, object]:
    return {
        "server_name": "example.org",
        "listeners": [{"port": 8008, "resources": [{"names": ["client"]}]}],
        **overrides,
    }


def test_open_registration_is_refused_unless_asked_for() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(minimal(enable_registration=True), BASE)
    message = str(e.value)
    assert "open registration without any verification" in message
    assert "enable_registration_without_verification: true" in message
    assert "registration_requires_token" in message
    with pytest.raises(ConfigError):
        parse_config(
            minimal(enable_registration=True, enable_registration_without_verification=False),
            BASE,
        )
    token = parse_config(minimal(enable_registration=True, registration_requires_token=True), BASE)
    assert token.enable_registration
    assert token.warnings == ()
    open_ = minimal(enable_registration=True, enable_registration_without_verification=True)
    config = parse_config(open_, BASE)
    assert config.enable_registration
    assert config.enable_registration_without_verification
    assert config.warnings == ()
    # Off, the other key changes nothing.
    off = parse_config(minimal(enable_registration_without_verification=True), BASE)
    assert not off.enable_registration


def test_check_config_reports_open_registration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "homeserver.yaml"
    generate("example.org", path)
    data = yaml.safe_load(path.read_text())
    data["enable_registration"] = True
    path.write_text(yaml.safe_dump(data))
    capsys.readouterr()
    assert main(["check-config", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert "enable_registration_without_verification" in err
    data["registration_requires_token"] = True
    path.write_text(yaml.safe_dump(data))
    assert main(["check-config", "-c", str(path)]) == 0


def test_generated_and_sample_configs_do_not_trust_x_forwarded_for(tmp_path: Path) -> None:
    sample = yaml.safe_load(sample_config_text())
    assert all(listener["x_forwarded"] is False for listener in sample["listeners"])
    generate("example.org", tmp_path / "homeserver.yaml")
    generated = yaml.safe_load((tmp_path / "homeserver.yaml").read_text())
    assert all(listener["x_forwarded"] is False for listener in generated["listeners"])
    assert parse_config(minimal(), BASE).listeners[0].x_forwarded is False


def _synapse_limits(data: dict[str, object]) -> RoomRateLimits:
    """What Synapse reads from the same keys, as pocketserver's dataclass."""
    c = RatelimitConfig(None)  # type: ignore[arg-type]
    c.read_config(data)

    def lim(s: object) -> RateLimit:
        return RateLimit(float(s.per_second), int(s.burst_count))  # type: ignore[attr-defined]

    return RoomRateLimits(
        joins_local=lim(c.rc_joins_local),
        joins_remote=lim(c.rc_joins_remote),
        joins_per_room=lim(c.rc_joins_per_room),
        invites_per_room=lim(c.rc_invites_per_room),
        invites_per_user=lim(c.rc_invites_per_user),
        invites_per_issuer=lim(c.rc_invites_per_issuer),
        room_creation=lim(c.rc_room_creation),
        media_create=lim(c.rc_media_create),
        presence_per_user=lim(c.rc_presence_per_user),
        admin_redaction=lim(c.rc_admin_redaction) if c.rc_admin_redaction else None,
    )


@pytest.mark.parametrize(
    "keys",
    [
        {},
        {"rc_admin_redaction": {}},
        {"rc_admin_redaction": {"per_second": 2, "burst_count": 40}},
        {
            "rc_joins": {"local": {"per_second": 0.5}, "remote": {"burst_count": 3}},
            "rc_joins_per_room": {"per_second": 4, "burst_count": 40},
            "rc_invites": {"per_user": {"per_second": 1, "burst_count": 2}},
            "rc_room_creation": {"burst_count": 1},
            "rc_media_create": {"per_second": 1},
            "rc_presence": {"per_user": {"per_second": 3, "burst_count": 7}},
        },
    ],
)
def test_room_rate_limits_read_as_synapse_reads_them(keys: dict[str, object]) -> None:
    config = parse_config(minimal(**keys), BASE)
    assert config.warnings == ()
    assert config.rate_limits == _synapse_limits(keys)


def test_sample_config_spells_out_the_room_rate_limit_defaults() -> None:
    sample = yaml.safe_load(sample_config_text())
    for key in ("rc_joins", "rc_joins_per_room", "rc_invites", "rc_room_creation"):
        assert key in sample
    assert "rc_admin_redaction" in sample_config_text()  # commented out: off by default
    assert parse_config(sample, BASE).rate_limits == RoomRateLimits()


@pytest.mark.parametrize(
    ("keys", "where"),
    [
        ({"rc_joins": {"local": {"per_second": 0}}}, "rc_joins.local.per_second"),
        ({"rc_invites": {"per_room": {"burst_count": "x"}}}, "rc_invites.per_room.burst_count"),
        ({"rc_room_creation": []}, "rc_room_creation"),
    ],
)
def test_bad_room_rate_limit_names_the_key(keys: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(minimal(**keys), BASE)
    assert where in str(e.value)


def test_unknown_key_inside_a_room_rate_limit_warns() -> None:
    config = parse_config(minimal(rc_invites={"per_rooom": {}}), BASE)
    assert config.warnings == ("unknown config key 'rc_invites.per_rooom' (ignored)",)
