"""The federation and TLS config keys: parsed, checked, dumped and refused when bad."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import trustme
import yaml

from pocketserver.cli import main as run
from pocketserver.config.dump import config_as_yaml_keys
from pocketserver.config.generate import generate
from pocketserver.config.loader import ConfigError, parse_config
from pocketserver.config.log_settings import LogSettings
from pocketserver.preflight import federation_ca_problems

BASE = Path("/srv/pocket")
MINIMAL: dict[str, object] = {
    "server_name": "example.org",
    "listeners": [{"port": 8008, "resources": [{"names": ["client", "federation"]}]}],
}


def parsed(**keys: object):  # type: ignore[no-untyped-def]
    data = copy.deepcopy(MINIMAL)
    data.update(keys)
    return parse_config(data, BASE)


def test_defaults_are_synapses() -> None:
    config = parsed()
    assert config.federation_verify_certificates is True
    assert config.federation_custom_ca_list == ()
    assert config.federation_domain_whitelist is None
    assert config.allow_public_rooms_over_federation is False
    assert config.serve_server_wellknown is False
    assert config.warnings == ()


def test_keys_are_read_and_dumped_back() -> None:
    config = parsed(
        federation_verify_certificates=False,
        federation_custom_ca_list=["ca.pem", "/etc/other.pem"],
        federation_domain_whitelist=["a.example", "b.example:8448", "[::1]:8448"],
        allow_public_rooms_over_federation=True,
    )
    assert config.federation_custom_ca_list == (BASE / "ca.pem", Path("/etc/other.pem"))
    assert config.federation_domain_whitelist == {"a.example", "b.example:8448", "[::1]:8448"}
    keys = config_as_yaml_keys(config)
    assert keys["federation_verify_certificates"] is False
    assert keys["federation_custom_ca_list"] == [str(BASE / "ca.pem"), "/etc/other.pem"]
    assert keys["federation_domain_whitelist"] == ["[::1]:8448", "a.example", "b.example:8448"]
    assert keys["allow_public_rooms_over_federation"] is True
    assert parse_config(keys, BASE) == config


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("federation_verify_certificates", "maybe"),
        ("federation_custom_ca_list", "ca.pem"),
        ("federation_domain_whitelist", ["not a server name"]),
        ("federation_domain_whitelist", "example.org"),
        ("allow_public_rooms_over_federation", 1),
    ],
)
def test_bad_values_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        parsed(**{key: value})


def test_ca_files_that_do_not_load_are_named(tmp_path: Path) -> None:
    good = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(good))
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    missing = tmp_path / "missing.pem"
    config = parsed(federation_custom_ca_list=[str(good), str(bad), str(missing)])
    problems = federation_ca_problems(config)
    assert len(problems) == 2
    assert str(bad) in problems[0]
    assert str(missing) in problems[1]
    assert "does not exist" in problems[1]


def test_check_config_names_a_bad_ca_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "homeserver.yaml"
    generate("example.org", path, tmp_path / "data")
    data = yaml.safe_load(path.read_text())
    data["federation_custom_ca_list"] = [str(tmp_path / "nope.pem")]
    path.write_text(yaml.safe_dump(data))
    assert run(["check-config", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"federation CA file {tmp_path / 'nope.pem'} does not exist" in err


def test_generated_config_serves_the_well_known_and_keeps_8448_commented(tmp_path: Path) -> None:
    path = tmp_path / "homeserver.yaml"
    generate("example.org", path, tmp_path / "data")
    text = path.read_text()
    data = yaml.safe_load(text)
    assert data["serve_server_wellknown"] is True
    assert [listener["port"] for listener in data["listeners"]] == [8008]
    assert "#- port: 8448" in text
    assert "#  tls: true" in text


class _Config:
    max_request_body_size = 1_000_000
    logs = LogSettings()


class _Services:
    config = _Config()


@pytest.mark.parametrize(
    ("resources", "served"),
    [
        (("client",), True),
        (("federation",), True),
        (("client", "federation"), True),
        (("media",), False),
        (("keys",), False),
    ],
)
def test_server_well_known_route_on_client_and_federation_listeners(
    resources: tuple[str, ...], served: bool
) -> None:
    """Synapse serves /.well-known/matrix/server with the client resource: a reverse
    proxy on 443 forwards it to the client listener."""
    from pocketserver.app import create_app

    app = create_app(_Services(), resources)  # type: ignore[arg-type]
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    assert ("/.well-known/matrix/server" in rules) is served
