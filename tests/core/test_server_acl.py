"""Server ACL rules, table-driven, and compared with Synapse's own evaluator."""

from __future__ import annotations

import pytest

from pocketserver.core.server_acl import server_acl_from_content, server_host

CASES: list[tuple[dict[str, object], str, bool]] = [
    # (content, server name, allowed)
    ({"allow": ["*"]}, "example.org", True),
    ({"allow": ["*"]}, "example.org:8448", True),
    ({}, "example.org", False),  # allow defaults to [] : nobody
    ({"allow": ["*"], "deny": ["evil.com"]}, "evil.com", False),
    ({"allow": ["*"], "deny": ["evil.com"]}, "evil.com:1234", False),  # port ignored
    ({"allow": ["*"], "deny": ["evil.com"]}, "EVIL.com", False),  # case-insensitive
    ({"allow": ["*"], "deny": ["evil.com"]}, "notevil.com", True),
    ({"allow": ["*"], "deny": ["*.evil.com"]}, "a.evil.com", False),
    ({"allow": ["*"], "deny": ["*.evil.com"]}, "evil.com", True),
    ({"allow": ["*.example.org"]}, "matrix.example.org", True),
    ({"allow": ["*.example.org"]}, "example.org", False),
    ({"allow": ["matrix.?rg"]}, "matrix.org", True),
    ({"allow": ["matrix.?rg"]}, "matrix.orrg", False),
    ({"allow": ["*"], "deny": ["*"]}, "example.org", False),  # deny wins
    # IP literals
    ({"allow": ["*"]}, "127.0.0.2:8448", True),  # allow_ip_literals defaults to true
    ({"allow": ["*"], "allow_ip_literals": False}, "127.0.0.2:8448", False),
    ({"allow": ["*"], "allow_ip_literals": False}, "[::1]:8448", False),
    ({"allow": ["*"], "allow_ip_literals": False}, "[2001:db8::1]", False),
    ({"allow": ["*"], "allow_ip_literals": "no"}, "127.0.0.2", True),  # not a bool: true
    ({"allow": ["*"], "allow_ip_literals": 0}, "127.0.0.2", True),
    ({"allow": ["127.0.0.*"]}, "127.0.0.2:8448", True),
    ({"allow": ["[::1]"]}, "[::1]:8448", True),
    ({"allow": ["*"], "allow_ip_literals": False}, "1.2.3.4.example", True),  # a name
    # malformed lists and entries are skipped
    ({"allow": "*"}, "example.org", False),
    ({"allow": [5, None, "example.org"]}, "example.org", True),
    ({"allow": ["*"], "deny": [{"x": 1}, "evil.com"]}, "evil.com", False),
    ({"allow": ["*"], "deny": "evil.com"}, "evil.com", True),
]


@pytest.mark.parametrize(("content", "server", "allowed"), CASES)
def test_server_acl(content: dict[str, object], server: str, allowed: bool) -> None:
    acl = server_acl_from_content(content)
    assert acl is not None
    assert acl.allows(server) is allowed


def test_no_acl_event_allows_everyone() -> None:
    assert server_acl_from_content(None) is None


@pytest.mark.parametrize(
    ("name", "host"),
    [
        ("example.org", "example.org"),
        ("example.org:8448", "example.org"),
        ("[::1]:8448", "[::1]"),
        ("[::1]", "[::1]"),
        ("127.0.0.1:80", "127.0.0.1"),
    ],
)
def test_server_host(name: str, host: str) -> None:
    assert server_host(name) == host


@pytest.mark.parametrize(("content", "server", "allowed"), CASES)
def test_agrees_with_synapse(content: dict[str, object], server: str, allowed: bool) -> None:
    """Synapse's own ACL evaluator (imported, never copied) decides the same. Its
    callers strip the port first (FederationServer._check_server_acl: "server_name:
    name of server, *without any port part*"), so we hand it the host."""
    acl_module = pytest.importorskip("synapse.synapse_rust.acl")
    try:
        evaluator = acl_module.ServerAclEvaluator(
            content.get("allow_ip_literals") is not False,
            [v for v in content.get("allow", []) if isinstance(v, str)]  # type: ignore[attr-defined]
            if isinstance(content.get("allow"), list)
            else [],
            [v for v in content.get("deny", []) if isinstance(v, str)]  # type: ignore[attr-defined]
            if isinstance(content.get("deny"), list)
            else [],
        )
    except TypeError:
        pytest.skip("Synapse's evaluator signature differs")
    assert evaluator.server_matches_acl_event(server_host(server)) is allowed
