"""Registration files of application services: parsing, validation and matching
(pocketserver/appservice/registration.py) and ``app_service_config_files``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pocketserver.appservice.registration import (
    RegistrationError,
    check_registrations,
    parse_registration,
)
from pocketserver.config import ConfigError, parse_config


def registration(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "id": "irc",
        "url": "http://127.0.0.1:9999",
        "as_token": "as1",
        "hs_token": "hs1",
        "sender_localpart": "ircbot",
        "namespaces": {
            "users": [
                {"regex": "@irc_.*:example.org", "exclusive": True},
                {"regex": "@_shared.*", "exclusive": False},
            ],
            "aliases": [{"regex": "#irc_.*", "exclusive": True}],
            "rooms": [{"regex": "!bridged:example.org", "exclusive": False}],
        },
        "protocols": ["irc"],
    }
    data.update(overrides)
    return data


def test_parses_and_matches() -> None:
    s = parse_registration(registration(), "example.org", "irc.yaml")
    assert s.sender == "@ircbot:example.org"
    assert s.rate_limited
    assert s.protocols == ("irc",)
    assert s.is_interested_in_user("@irc_bob:example.org")
    assert s.claims_user_exclusively("@irc_bob:example.org")
    assert s.claims_user_exclusively("@ircbot:example.org")  # its sender
    assert s.is_interested_in_user("@_shared_x:example.org")
    assert not s.claims_user_exclusively("@_shared_x:example.org")
    assert not s.is_interested_in_user("@alice:example.org")
    assert s.claims_alias_exclusively("#irc_chan:example.org")
    assert not s.is_interested_in_alias("#other:example.org")
    assert s.is_interested_in_room_id("!bridged:example.org")


@pytest.mark.parametrize(
    ("pdu", "aliases", "members", "expected"),
    [
        ({"type": "m.room.message", "sender": "@irc_bob:example.org"}, [], [], True),
        (
            {"type": "m.room.member", "sender": "@a:x", "state_key": "@irc_b:example.org"},
            [],
            [],
            True,
        ),
        ({"type": "m.room.message", "sender": "@a:x"}, ["#irc_chan:example.org"], [], True),
        ({"type": "m.room.message", "sender": "@a:x"}, [], ["@irc_c:example.org"], True),
        (
            {"type": "m.room.message", "sender": "@a:x", "room_id": "!bridged:example.org"},
            [],
            [],
            True,
        ),
        (
            {"type": "m.room.message", "sender": "@a:x", "room_id": "!r:x"},
            ["#o:x"],
            ["@a:x"],
            False,
        ),
        # A state_key that is a namespace user only counts for membership events.
        (
            {"type": "m.room.topic", "sender": "@a:x", "state_key": "@irc_b:example.org"},
            [],
            [],
            False,
        ),
    ],
)
def test_interest_in_events(
    pdu: dict[str, object], aliases: list[str], members: list[str], expected: bool
) -> None:
    s = parse_registration(registration(), "example.org")
    assert s.is_interested_in_event(pdu, aliases, members) is expected


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": None}, "id must be a non-empty string"),
        ({"as_token": 5}, "as_token"),
        ({"url": "ftp://x"}, "url must be an http"),
        ({"namespaces": {"users": [{"regex": "@(", "exclusive": True}]}}, "not a valid regular"),
        ({"namespaces": {"users": [{"regex": "@a.*"}]}}, "exclusive must be true or false"),
        ({"namespaces": {"users": "@a.*"}}, "namespaces.users must be a list"),
        ({"rate_limited": "no"}, "rate_limited"),
        ({"protocols": "irc"}, "protocols"),
    ],
)
def test_invalid_registrations_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(RegistrationError, match=message):
        parse_registration(registration(**change), "example.org", "irc.yaml")


def test_url_is_required_but_may_be_null() -> None:
    data = registration()
    del data["url"]
    with pytest.raises(RegistrationError, match="url is required"):
        parse_registration(data, "example.org")
    assert parse_registration(registration(url=None), "example.org").url is None


@pytest.mark.parametrize(
    ("other", "message"),
    [
        ({"id": "irc", "as_token": "as2", "sender_localpart": "b2"}, "same id"),
        ({"id": "two", "as_token": "as1", "sender_localpart": "b2"}, "same as_token"),
        ({"id": "two", "as_token": "as2", "sender_localpart": "ircbot"}, "same sender"),
        ({"id": "two", "as_token": "hs1", "sender_localpart": "b2"}, "equals the hs_token"),
    ],
)
def test_clashing_registrations_are_refused(other: dict[str, object], message: str) -> None:
    first = parse_registration(registration(), "example.org", "a.yaml")
    second = parse_registration(registration(**other), "example.org", "b.yaml")
    with pytest.raises(RegistrationError, match=message):
        check_registrations([first, second])


def _config(tmp_path: Path, files: object) -> object:
    return parse_config(
        {
            "server_name": "example.org",
            "listeners": [{"port": 8008, "resources": [{"names": ["client"]}]}],
            "app_service_config_files": files,
        },
        tmp_path,
    )


def test_config_key_reads_the_files(tmp_path: Path) -> None:
    (tmp_path / "irc.yaml").write_text(yaml.safe_dump(registration()))
    config = _config(tmp_path, ["irc.yaml"])
    services = config.app_services  # type: ignore[attr-defined]
    assert [s.id for s in services] == ["irc"]
    assert services[0].source == str(tmp_path / "irc.yaml")


@pytest.mark.parametrize(
    ("files", "content", "message"),
    [
        (["missing.yaml"], None, "cannot read"),
        (["bad.yaml"], "id: [unclosed", "not valid YAML"),
        (["bad.yaml"], yaml.safe_dump(registration(hs_token="")), "hs_token"),
        ("irc.yaml", None, "expected a list"),
        (["bad.yaml", "bad.yaml"], yaml.safe_dump(registration()), "same id"),
    ],
)
def test_config_errors_name_the_key_and_file(
    tmp_path: Path, files: object, content: str | None, message: str
) -> None:
    if content is not None:
        (tmp_path / "bad.yaml").write_text(content)
    with pytest.raises(ConfigError, match=message) as e:
        _config(tmp_path, files)
    assert "app_service_config_files" in str(e.value)
