"""The X-Matrix header: building, parsing (RFC 9110 auth-params) and what is signed."""

from __future__ import annotations

import json

import nacl.signing
import pytest

from pocketserver.core.crypto import decode_base64, generate_signing_key
from pocketserver.federation.xmatrix import (
    AuthHeaderError,
    MalformedAuthHeader,
    XMatrixAuth,
    authorization_header,
    parse_authorization,
    request_to_check,
)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        # The spec's example form.
        (
            'X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",'
            'key="ed25519:key1",sig="ABCDEF..."',
            XMatrixAuth(
                "origin.hs.example.com", "ed25519:key1", "ABCDEF...", "destination.hs.example.com"
            ),
        ),
        # Unquoted values, colons allowed unquoted (spec: for older servers).
        (
            "X-Matrix origin=a.example:8448,key=ed25519:k,sig=c2ln",
            XMatrixAuth("a.example:8448", "ed25519:k", "c2ln", None),
        ),
        # Any order, upper-case names, spaces and tabs around commas, unknown ignored.
        (
            'X-Matrix  SIG="s" ,\tKey=ed25519:k , origin="o.example", extra="x,y"',
            XMatrixAuth("o.example", "ed25519:k", "s", None),
        ),
        # Scheme case-insensitive; backslash escapes unescaped; IPv6 literal origin.
        (
            'x-matrix origin="[::1]:8448",key="ed25519:k",sig="a\\\\b\\"c",destination=d',
            XMatrixAuth("[::1]:8448", "ed25519:k", 'a\\b"c', "d"),
        ),
        # The spec's prose name for the signature parameter.
        (
            "X-Matrix origin=o,key=ed25519:k,signature=s",
            XMatrixAuth("o", "ed25519:k", "s", None),
        ),
        ("Bearer abc", None),
    ],
)
def test_parse(header: str, expected: XMatrixAuth | None) -> None:
    assert parse_authorization(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        "X-Matrix",
        "X-Matrix origin=o,key=ed25519:k",  # no sig
        'X-Matrix origin="o,key=ed25519:k,sig=s',  # unterminated quote
        "X-Matrix origin=o key=ed25519:k sig=s",  # not comma-separated
        "X-Matrix origin=,key=ed25519:k,sig=s",
        # SyTest "Non-numeric ports in server names are rejected".
        'X-Matrix origin="localhost:http",key="ed25519:1",sig="s"',
    ],
)
def test_parse_refuses(header: str) -> None:
    with pytest.raises(MalformedAuthHeader):
        parse_authorization(header)


def test_header_verifies_independently() -> None:
    """The signature covers {method, uri, origin, destination, content}, checked with
    plain pynacl and json (not pocketserver's canonical JSON)."""
    key = generate_signing_key("k1")
    content = {"b": [1, 2], "a": "é"}
    header = authorization_header("o.example", "d.example", key, "PUT", "/p?x=1", content)
    assert header.startswith(
        'X-Matrix origin="o.example",destination="d.example",key="ed25519:k1",sig="'
    )
    auth = parse_authorization(header)
    assert auth is not None
    signed = {
        "method": "PUT",
        "uri": "/p?x=1",
        "origin": "o.example",
        "destination": "d.example",
        "content": content,
    }
    raw = json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    nacl.signing.VerifyKey(bytes(key.verify_key)).verify(raw.encode(), decode_base64(auth.sig))
    origin, obj = request_to_check([auth], "PUT", "/p?x=1", "d.example", content)
    assert origin == "o.example"
    assert obj == {**signed, "signatures": {"o.example": {"ed25519:k1": auth.sig}}}


def test_request_to_check_refusals() -> None:
    a = XMatrixAuth("o", "ed25519:k", "s", "elsewhere")
    with pytest.raises(AuthHeaderError, match="not for this server"):
        request_to_check([a], "GET", "/", "us", None)
    with pytest.raises(AuthHeaderError, match="missing"):
        request_to_check([], "GET", "/", "us", None)
    b = XMatrixAuth("o2", "ed25519:k", "s", None)
    with pytest.raises(AuthHeaderError, match="different origins"):
        request_to_check([XMatrixAuth("o", "ed25519:k", "s", None), b], "GET", "/", "us", None)
    # Without a destination, the object checked names us: a signature made for
    # another server does not pass.
    _, obj = request_to_check([XMatrixAuth("o", "ed25519:k", "s", None)], "GET", "/", "us", None)
    assert obj["destination"] == "us"
    assert "content" not in obj
