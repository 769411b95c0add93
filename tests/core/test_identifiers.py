"""Tests for pocketserver.core.identifiers (appendices.md "Identifier Grammar")."""

from __future__ import annotations

import pytest

from pocketserver.core import identifiers as ids

H43 = "CD66HAED5npg6074c6pDtLKalHjVfYb2q4Q3LZgrW6o"  # rooms/v3.md example (std alphabet)
H43_URL = "Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"  # fragments/v4-event-ids.md example
H43_STD_ONLY = "Rqnc+F+dvnEYJTyHq/iKxU2bZ1CI92+kuZq3a5lr5Zg"

# --- server names ---------------------------------------------------------------------

SERVER_NAMES = [
    # appendices.md "Server Name" examples
    ("matrix.org", ("matrix.org", None)),
    ("matrix.org:8888", ("matrix.org", 8888)),
    ("1.2.3.4", ("1.2.3.4", None)),
    ("1.2.3.4:1234", ("1.2.3.4", 1234)),
    ("[1234:5678::abcd]", ("[1234:5678::abcd]", None)),
    ("[1234:5678::abcd]:5678", ("[1234:5678::abcd]", 5678)),
    # more from the grammar
    ("localhost", ("localhost", None)),
    ("MATRIX.ORG", ("MATRIX.ORG", None)),
    ("a-b.example", ("a-b.example", None)),
    ("[::1]:8448", ("[::1]", 8448)),
    ("[::ffff:1.2.3.4]", ("[::ffff:1.2.3.4]", None)),
    ("x:65535", ("x", 65535)),
    ("x:00001", ("x", 1)),
    ("a" * 255, ("a" * 255, None)),
]

BAD_SERVER_NAMES = [
    "",
    ":8448",
    "matrix.org:",
    "matrix.org:abc",
    "matrix.org:123456",  # more than 5 digits
    "matrix.org:65536",
    "matrix.org:-1",
    "matrix.org:80:80",
    "matrix_org",
    "mätrix.org",
    "matrix .org",
    "matrix.org.",
    ".matrix.org",
    "matrix..org",
    "1.2.3.256",  # "IPv4 literals must be ... in the range 0 to 255"
    "[1234:5678::abcd",
    "1234:5678::abcd",
    "[1234:5678::abcg]",
    "[::1]x",
    "[::1]:",
    "[]",
    "[:::]",
    "[fe80::1%eth0]",
    "a" * 256,
    "example.org/x",
    "\u0661.org",  # Arabic-Indic digit: not DIGIT
]


@pytest.mark.parametrize(("name", "parsed"), SERVER_NAMES)
def test_valid_server_names(name: str, parsed: tuple[str, int | None]) -> None:
    assert ids.is_valid_server_name(name)
    assert ids.parse_server_name(name) == parsed


@pytest.mark.parametrize("name", BAD_SERVER_NAMES)
def test_invalid_server_names(name: str) -> None:
    assert not ids.is_valid_server_name(name)
    with pytest.raises(ValueError, match="server name"):
        ids.parse_server_name(name)


def test_server_name_non_string() -> None:
    assert not ids.is_valid_server_name(None)  # type: ignore[arg-type]


# --- user IDs ---------------------------------------------------------------------------

USER_IDS = [
    # (user id, valid for new users, valid historically)
    ("@alice:example.org", True, True),
    ("@a.b_c=d-e/f+g:example.org", True, True),
    ("@0:1.2.3.4:8448", True, True),
    ("@bob:[::1]:8448", True, True),
    ("@Alice:example.org", False, True),  # upper case: historical only
    ("@al ice:example.org", False, True),
    ("@al!ce:example.org", False, True),
    ("@:example.org", False, True),  # historical: "including ... the empty string"
    ("@\u00e9:example.org", False, True),  # any non-surrogate code point
    ("@a\u0007b:example.org", False, True),  # "including other control characters"
    ("@a\x00b:example.org", False, False),  # NUL never
    ("@a\ud800:example.org", False, False),  # surrogate never
    ("alice:example.org", False, False),  # no sigil
    ("#alice:example.org", False, False),
    ("@alice", False, False),  # no domain
    ("@alice:", False, False),
    ("@alice:bad_domain", False, False),
    ("@alice:example.org:99999", False, False),
    ("", False, False),
]


@pytest.mark.parametrize(("uid", "strict_ok", "historical_ok"), USER_IDS)
def test_user_ids(uid: str, strict_ok: bool, historical_ok: bool) -> None:
    assert ids.is_valid_user_id(uid, historical=False) is strict_ok
    assert ids.is_valid_user_id(uid, historical=True) is historical_ok
    assert ids.is_valid_user_id(uid) is historical_ok


def test_user_id_length_limit_is_in_bytes() -> None:
    domain = ":example.org"
    ok = "@" + "a" * (255 - 1 - len(domain)) + domain
    assert len(ok) == 255
    assert ids.is_valid_user_id(ok, historical=False)
    assert not ids.is_valid_user_id("@a" + ok[1:], historical=False)
    # 2-byte characters count twice (historical grammar).
    wide = "@" + "\u00e9" * 121 + domain  # 1 + 242 + 12 = 255 bytes
    assert ids.is_valid_user_id(wide)
    assert not ids.is_valid_user_id("@\u00e9" + wide[1:])


@pytest.mark.parametrize(
    ("localpart", "strict", "ok"),
    [
        ("alice", True, True),
        ("a.b_c=d-e/f+g", True, True),
        ("", True, False),
        ("Alice", True, False),
        ("a:b", True, False),
        ("a*b", True, False),
        ("Alice", False, True),
        ("", False, True),
        ("a:b", False, False),
        ("a\x00", False, False),
    ],
)
def test_localparts(localpart: str, strict: bool, ok: bool) -> None:
    assert ids.is_valid_localpart(localpart, strict=strict) is ok


# --- room IDs -------------------------------------------------------------------------

ROOM_IDS = [
    # (room id, valid for v1..v11, valid for v12)
    ("!abc:example.org", True, False),
    ("!AbC123:matrix.org:8448", True, False),
    ("!\u00e9\u0007:example.org", True, False),  # any code point except ':' and NUL
    ("!" + H43_URL, False, True),
    ("!" + H43, False, True),  # no '+' or '/' in it: valid in both alphabets
    ("!" + H43_STD_ONLY, False, False),
    ("!" + H43_URL[:-1], False, False),
    ("!" + H43_URL + "A", False, False),
    ("!" + H43_URL + ":example.org", True, False),  # any opaque localpart before v12
    ("!:example.org", False, False),
    ("!abc", False, False),
    ("!abc:", False, False),
    ("!a\x00c:example.org", False, False),
    ("$abc:example.org", False, False),
    ("abc:example.org", False, False),
    ("", False, False),
]


@pytest.mark.parametrize(("rid", "old_ok", "v12_ok"), ROOM_IDS)
def test_room_ids(rid: str, old_ok: bool, v12_ok: bool) -> None:
    for v in ("1", "2", "3", "6", "10", "11"):
        assert ids.is_valid_room_id(rid, v) is old_ok
    assert ids.is_valid_room_id(rid, "12") is v12_ok
    assert ids.is_valid_room_id(rid) is (old_ok or v12_ok)


def test_room_id_length_and_unknown_version() -> None:
    long_id = "!" + "a" * (255 - 1 - len(":example.org")) + ":example.org"
    assert ids.is_valid_room_id(long_id, "1")
    assert not ids.is_valid_room_id("!a" + long_id[1:], "1")
    assert not ids.is_valid_room_id("!abc:example.org", "999")
    assert not ids.is_valid_room_id(5)  # type: ignore[arg-type]


# --- event IDs ------------------------------------------------------------------------

EVENT_IDS = [
    # (event id, v1/v2, v3, v4+)
    ("$abc:example.org", True, False, False),
    ("$0:domain", True, False, False),
    ("$" + H43, False, True, True),  # no '+' or '/' in it: valid in both alphabets
    ("$" + H43_URL, False, False, True),
    ("$" + H43_STD_ONLY, False, True, False),
    ("$" + "A" * 43, False, True, True),  # in both alphabets
    ("$" + H43[:-1], False, False, False),
    ("$" + H43 + "=", False, False, False),
    ("$:example.org", False, False, False),
    ("$abc", False, False, False),
    ("!" + H43_URL, False, False, False),
    ("", False, False, False),
]


@pytest.mark.parametrize(("eid", "v1", "v3", "v4"), EVENT_IDS)
def test_event_ids(eid: str, v1: bool, v3: bool, v4: bool) -> None:
    assert ids.is_valid_event_id(eid, "1") is v1
    assert ids.is_valid_event_id(eid, "2") is v1
    assert ids.is_valid_event_id(eid, "3") is v3
    for v in ("4", "5", "9", "11", "12"):
        assert ids.is_valid_event_id(eid, v) is v4
    assert ids.is_valid_event_id(eid) is (v1 or v3 or v4)


def test_event_id_length_limit() -> None:
    eid = "$" + "x" * (255 - 1 - len(":example.org")) + ":example.org"
    assert ids.is_valid_event_id(eid, "1")
    assert not ids.is_valid_event_id("$x" + eid[1:], "1")
    assert not ids.is_valid_event_id("$" + H43, "nope")


# --- room aliases -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "ok"),
    [
        ("#room:example.org", True),
        ("#Room With Spaces:example.org", True),
        ("#\u00e9t\u00e9:example.org:8448", True),
        ("#:example.org", False),
        ("#room", False),
        ("#room:bad_domain", False),
        ("#r\x00:example.org", False),
        ("!room:example.org", False),
        ("#" + "a" * (255 - 1 - len(":example.org")) + ":example.org", True),
        ("#" + "a" * (256 - 1 - len(":example.org")) + ":example.org", False),
    ],
)
def test_room_aliases(alias: str, ok: bool) -> None:
    assert ids.is_valid_room_alias(alias) is ok


# --- get_domain -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identifier", "domain"),
    [
        ("@alice:example.org", "example.org"),
        ("!abc:example.org:8448", "example.org:8448"),
        ("#room:[::1]:8448", "[::1]:8448"),
        ("$abc:domain", "domain"),
    ],
)
def test_get_domain(identifier: str, domain: str) -> None:
    assert ids.get_domain(identifier) == domain


@pytest.mark.parametrize("identifier", ["!" + H43_URL, "$" + H43, "@alice:", "@alice", ""])
def test_get_domain_none(identifier: str) -> None:
    with pytest.raises(ValueError, match="domain"):
        ids.get_domain(identifier)
