"""core/locality.py: the one "is this ours?" (appendices.md "Common Identifier Format")."""

from __future__ import annotations

import pytest

from pocketserver.core.locality import Locality, server_of

V12_ROOM_ID = "!" + "A" * 43

SERVER_OF = [
    ("@alice:example.org", "example.org"),
    ("#room:example.org", "example.org"),
    ("!opaque:example.org", "example.org"),
    ("$event:example.org", "example.org"),
    ("@a:example.org:8448", "example.org:8448"),
    ("@a:[::1]:8448", "[::1]:8448"),
    ("@a:[::1]", "[::1]"),
    ("#x:127.0.0.1:8008", "127.0.0.1:8008"),
    ("example.org", "example.org"),
    ("[::1]:8448", "[::1]:8448"),
    ("127.0.0.1", "127.0.0.1"),
    # no domain, or not a valid one
    (V12_ROOM_ID, None),
    ("$" + "A" * 43, None),
    ("@alice", None),
    ("@alice:", None),
    ("@a:exa mple.org", None),
    ("@a:[::1", None),
    ("@a:example.org:99999", None),
    ("@a:256.1.1.1", None),
    ("", None),
    ("@" + "a" * 250 + ":example.org", None),  # over 255 bytes
    ("@\ud800:example.org", None),
    ("not a server", None),
]


@pytest.mark.parametrize(("identifier", "server"), SERVER_OF)
def test_server_of(identifier: str, server: str | None) -> None:
    assert server_of(identifier) == server


def test_server_of_non_string() -> None:
    assert server_of(None) is None  # type: ignore[arg-type]
    assert server_of(42) is None  # type: ignore[arg-type]


IS_MINE = [
    ("example.org", "@alice:example.org", True),
    ("example.org", "#room:example.org", True),
    ("example.org", "!room:example.org", True),
    ("example.org", "example.org", True),
    ("example.org", "@alice:other.org", False),
    ("example.org", "#room:example.org:8448", False),  # a port makes another name
    ("example.org", "@alice:EXAMPLE.org", False),  # exact, as Synapse
    ("example.org", "@alice:example.org.evil", False),
    ("example.org", "@example.org:evil.org", False),
    ("example.org", V12_ROOM_ID, False),
    ("example.org", "@alice", False),
    ("[::1]:8448", "@a:[::1]:8448", True),
    ("[::1]:8448", "@a:[::1]", False),
    ("[::1]:8448", "#r:[::1]:8448", True),
    ("[::1]:8448", "[::1]:8448", True),
    ("localhost:8008", "@a:localhost:8008", True),
    ("localhost:8008", "@a:localhost", False),
]


@pytest.mark.parametrize(("ours", "identifier", "mine"), IS_MINE)
def test_is_mine(ours: str, identifier: str, mine: bool) -> None:
    locality = Locality(ours)
    assert locality.is_mine(identifier) is mine
    assert locality.is_remote(identifier) is (not mine and server_of(identifier) is not None)


def test_is_remote_of_invalid_is_false() -> None:
    assert Locality("example.org").is_remote("@nodomain") is False
    assert Locality("example.org").is_remote(V12_ROOM_ID) is False
