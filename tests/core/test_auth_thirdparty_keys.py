"""Which keys of an ``m.room.third_party_invite`` sign a ``third_party_invite.signed``
block (the keys whose ``key_validity_url`` the accepting server must then check)."""

from __future__ import annotations

import base64

import canonicaljson
from nacl.signing import SigningKey

from pocketserver.core.auth_thirdparty import (
    signing_public_keys,
    third_party_key_entries,
    third_party_public_keys,
)

URL = "https://id.example/_matrix/identity/v2/pubkey/isvalid"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _pub(key: SigningKey) -> str:
    return _b64(bytes(key.verify_key))


def _signed(key: SigningKey, **fields: object) -> dict:
    body = {"mxid": "@bob:hs", "token": "abc", **fields}
    sig = key.sign(canonicaljson.encode_canonical_json(body)).signature
    return {**body, "signatures": {"id.example": {"ed25519:0": _b64(sig)}}}


def test_entries_read_the_single_key_and_the_list() -> None:
    content = {
        "public_key": "AAA",
        "key_validity_url": URL,
        "public_keys": [
            {"public_key": "BBB", "key_validity_url": URL + "2"},
            {"public_key": "CCC"},
            {"key_validity_url": URL},
            "junk",
        ],
    }
    assert third_party_key_entries(content) == [("AAA", URL), ("BBB", URL + "2"), ("CCC", None)]
    assert third_party_public_keys(content) == ["AAA", "BBB", "CCC"]
    assert third_party_key_entries({"public_key": 5, "public_keys": "x"}) == []


def test_only_the_keys_that_sign_are_returned_once_each() -> None:
    long_term, ephemeral, other = (
        SigningKey.generate(),
        SigningKey.generate(),
        SigningKey.generate(),
    )
    content = {
        "public_key": _pub(long_term),
        "key_validity_url": URL,
        "public_keys": [
            {"public_key": _pub(long_term), "key_validity_url": URL},
            {"public_key": _pub(ephemeral), "key_validity_url": URL + "/e"},
        ],
    }
    assert signing_public_keys(_signed(long_term), content) == [(_pub(long_term), URL)]
    assert signing_public_keys(_signed(ephemeral), content) == [(_pub(ephemeral), URL + "/e")]
    assert signing_public_keys(_signed(other), content) == []


def test_a_changed_block_or_bad_keys_match_nothing() -> None:
    key = SigningKey.generate()
    signed = _signed(key)
    content = {"public_keys": [{"public_key": _pub(key), "key_validity_url": URL}]}
    assert signing_public_keys({**signed, "mxid": "@mallory:hs"}, content) == []
    assert signing_public_keys(signed, {"public_keys": [{"public_key": "!!not base64"}]}) == []
    assert signing_public_keys({**signed, "signatures": "x"}, content) == []
    assert signing_public_keys({**signed, "bad": float("nan")}, content) == []
    # Only ed25519 signatures count.
    sigs = signed["signatures"]["id.example"]
    other_alg = {**signed, "signatures": {"id.example": {"curve25519:0": sigs["ed25519:0"]}}}
    assert signing_public_keys(other_alg, content) == []
