"""Tests for pocketserver.core.crypto against the spec's test vectors.

Vectors: appendices.md "Unpadded Base64" and "Cryptographic Test Vectors".
"""

from __future__ import annotations

import copy
import hashlib
import json

import nacl.signing
import pytest

from pocketserver.core import crypto
from pocketserver.core.crypto import SignatureError

# appendices.md "Cryptographic Test Vectors" / "Signing Key"
SEED_B64 = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
SERVER = "domain"


@pytest.fixture
def key() -> crypto.NamedSigningKey:
    return crypto.decode_signing_key_base64("ed25519", "1", SEED_B64)


# --- base64 -------------------------------------------------------------------

# appendices.md "Unpadded Base64" examples
B64_VECTORS = [
    (b"", ""),
    (b"f", "Zg"),
    (b"fo", "Zm8"),
    (b"foo", "Zm9v"),
    (b"foob", "Zm9vYg"),
    (b"fooba", "Zm9vYmE"),
    (b"foobar", "Zm9vYmFy"),
]


@pytest.mark.parametrize(("raw", "encoded"), B64_VECTORS)
def test_unpadded_base64_vectors(raw: bytes, encoded: str) -> None:
    assert crypto.encode_base64(raw) == encoded
    assert crypto.decode_base64(encoded) == raw
    padded = encoded + "=" * (-len(encoded) % 4)
    assert crypto.decode_base64(padded) == raw


def test_base64_urlsafe_alphabet() -> None:
    data = bytes([0xFB, 0xFF, 0xBF])  # encodes to "+/+/" in the standard alphabet
    assert crypto.encode_base64(data) == "+/+/"
    assert crypto.encode_base64(data, urlsafe=True) == "-_-_"
    assert crypto.decode_base64("-_-_") == data
    assert crypto.decode_base64("+/+/") == data


@pytest.mark.parametrize("bad", ["Z", "Zm9v!", "Zg===", "Z=g", "é", "Zm 9v", "Zm9vY"])
def test_decode_base64_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        crypto.decode_base64(bad)


# --- canonical JSON ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # appendices.md "Canonical JSON" examples
        ({}, b"{}"),
        ({"one": 1, "two": "Two"}, b'{"one":1,"two":"Two"}'),
        ({"b": "2", "a": "1"}, b'{"a":"1","b":"2"}'),
        (
            {"auth": {"success": True, "mxid": "@john.doe:example.com"}},
            b'{"auth":{"mxid":"@john.doe:example.com","success":true}}',
        ),
        ({"a": "日本語"}, '{"a":"日本語"}'.encode()),
        ({"本": 2, "日": 1}, '{"日":1,"本":2}'.encode()),
        ({"a": "\u65e5"}, '{"a":"日"}'.encode()),
        ({"a": None}, b'{"a":null}'),
        ({"a": -0}, b'{"a":0}'),
        ({"a": "\u0000"}, b'{"a":"\\u0000"}'),
    ],
)
def test_canonical_json(value: object, expected: bytes) -> None:
    assert crypto.encode_canonical_json(value) == expected


# --- keys ---------------------------------------------------------------------------


def test_key_ids_and_public_key(key: crypto.NamedSigningKey) -> None:
    assert crypto.key_id(key) == "ed25519:1"
    vk = crypto.get_verify_key(key)
    assert isinstance(vk, nacl.signing.VerifyKey)
    assert crypto.key_id(vk) == "ed25519:1"
    assert bytes(vk) == bytes(nacl.signing.SigningKey(crypto.decode_base64(SEED_B64)).verify_key)
    encoded = crypto.encode_verify_key_base64(vk)
    decoded = crypto.decode_verify_key_base64("ed25519", "1", encoded)
    assert bytes(decoded) == bytes(vk)
    assert crypto.key_id(decoded) == "ed25519:1"


def test_generate_signing_key_is_random_and_named() -> None:
    a = crypto.generate_signing_key("a_AbCd")
    b = crypto.generate_signing_key("a_AbCd")
    assert crypto.key_id(a) == "ed25519:a_AbCd"
    assert bytes(a) != bytes(b)
    assert len(bytes(a)) == 32


@pytest.mark.parametrize(
    ("version", "ok"),
    [("1", True), ("a_AbCd", True), ("0ldK3y", True), ("", False), ("a:b", False), ("a-b", False)],
)
def test_key_version_grammar(version: str, ok: bool) -> None:
    assert crypto.is_valid_key_version(version) is ok
    if not ok:
        with pytest.raises(ValueError, match="version"):
            crypto.generate_signing_key(version)


def test_key_file_round_trip() -> None:
    keys = [crypto.generate_signing_key("a_AbCd"), crypto.generate_signing_key("b_2")]
    text = crypto.write_signing_keys(keys)
    lines = text.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("ed25519 a_AbCd ")
    assert "=" not in text
    back = crypto.read_signing_keys(text)
    assert [crypto.key_id(k) for k in back] == ["ed25519:a_AbCd", "ed25519:b_2"]
    assert [bytes(k) for k in back] == [bytes(k) for k in keys]


def test_read_synapse_key_file_line() -> None:
    (k,) = crypto.read_signing_keys(f"\ned25519 1 {SEED_B64}\n\n")
    assert bytes(k) == crypto.decode_base64(SEED_B64)


@pytest.mark.parametrize(
    "text",
    [
        "ed25519 1",
        f"rsa 1 {SEED_B64}",
        "ed25519 1 Zm9v",  # wrong length
        "ed25519 1 !!!!",
        f"ed25519 a:b {SEED_B64}",
        f"ed25519 1 {SEED_B64} extra",
    ],
)
def test_read_signing_keys_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match="line 1"):
        crypto.read_signing_keys(text)


# --- JSON signing (appendices.md "JSON Signing") ---------------------------------

EMPTY_SIG = "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
DATA_SIG = "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"


@pytest.mark.parametrize(
    ("obj", "signature"),
    [({}, EMPTY_SIG), ({"one": 1, "two": "Two"}, DATA_SIG)],
)
def test_sign_json_vectors(key: crypto.NamedSigningKey, obj: dict, signature: str) -> None:
    before = copy.deepcopy(obj)
    signed = crypto.sign_json(obj, SERVER, key)
    assert obj == before  # not mutated
    assert signed == {**obj, "signatures": {SERVER: {"ed25519:1": signature}}}
    vk = crypto.get_verify_key(key)
    crypto.verify_signed_json(signed, SERVER, {"ed25519:1": vk})
    # Independent check with plain pynacl.
    raw_vk = nacl.signing.SigningKey(crypto.decode_base64(SEED_B64)).verify_key
    raw_vk.verify(
        json.dumps(obj, sort_keys=True, separators=(",", ":")).encode(),
        crypto.decode_base64(signature),
    )


def test_sign_json_ignores_unsigned_and_keeps_other_signatures(
    key: crypto.NamedSigningKey,
) -> None:
    obj = {
        "one": 1,
        "two": "Two",
        "unsigned": {"age_ts": 5},
        "signatures": {"other.org": {"ed25519:x": "abc"}, SERVER: {"ed25519:old": "def"}},
    }
    signed = crypto.sign_json(obj, SERVER, key)
    assert signed["unsigned"] == {"age_ts": 5}
    assert signed["signatures"] == {
        "other.org": {"ed25519:x": "abc"},
        SERVER: {"ed25519:old": "def", "ed25519:1": DATA_SIG},
    }
    assert obj["signatures"] == {"other.org": {"ed25519:x": "abc"}, SERVER: {"ed25519:old": "def"}}


def test_signing_details_example_structure(key: crypto.NamedSigningKey) -> None:
    # appendices.md "Signing Details": unsigned and signatures are added back.
    obj = {"name": "example.org", "signing_keys": {"ed25519:1": "XSl0"}, "unsigned": {"age_ts": 1}}
    signed = crypto.sign_json(obj, "example.org", key)
    assert set(signed) == {"name", "signing_keys", "unsigned", "signatures"}
    crypto.verify_signed_json(signed, "example.org", {"ed25519:1": crypto.get_verify_key(key)})


def _signed(key: crypto.NamedSigningKey) -> dict:
    return crypto.sign_json({"one": 1, "two": "Two"}, SERVER, key)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda o: o.update(one=2), id="changed-value"),
        pytest.param(lambda o: o.update(three=3), id="added-key"),
        pytest.param(lambda o: o.pop("two"), id="removed-key"),
        pytest.param(lambda o: o.pop("signatures"), id="no-signatures"),
        pytest.param(lambda o: o.update(signatures="x"), id="signatures-not-object"),
        pytest.param(lambda o: o.update(signatures={}), id="no-entry-for-server"),
        pytest.param(lambda o: o.update(signatures={SERVER: "x"}), id="entry-not-object"),
        pytest.param(lambda o: o.update(signatures={SERVER: {}}), id="entry-empty"),
        pytest.param(
            lambda o: o.update(signatures={SERVER: {"ed25519:unknown": EMPTY_SIG}}),
            id="unknown-key-only",
        ),
        pytest.param(
            lambda o: o.update(signatures={SERVER: {"curve25519:1": DATA_SIG}}),
            id="unknown-algorithm",
        ),
        pytest.param(lambda o: o.update(signatures={SERVER: {"ed25519:1": "!!"}}), id="bad-b64"),
        pytest.param(lambda o: o.update(signatures={SERVER: {"ed25519:1": 5}}), id="sig-not-str"),
        pytest.param(lambda o: o.update(signatures={SERVER: {"ed25519:1": "Zm9v"}}), id="short"),
        pytest.param(
            lambda o: o.update(signatures={SERVER: {"ed25519:1": EMPTY_SIG}}), id="other-object"
        ),
        pytest.param(
            lambda o: o["signatures"][SERVER].update(
                {"ed25519:1": DATA_SIG[:10] + "A" + DATA_SIG[11:]}
            ),
            id="flipped-bits",
        ),
        pytest.param(lambda o: o.update(bad={1, 2}), id="not-json"),
        pytest.param(lambda o: o.update(bad=float("nan")), id="nan"),
    ],
)
def test_verify_rejects_tampered(key: crypto.NamedSigningKey, tamper) -> None:
    obj = _signed(key)
    tamper(obj)
    with pytest.raises(SignatureError):
        crypto.verify_signed_json(obj, SERVER, {"ed25519:1": crypto.get_verify_key(key)})


def test_verify_wrong_server_and_wrong_key(key: crypto.NamedSigningKey) -> None:
    obj = _signed(key)
    vk = crypto.get_verify_key(key)
    with pytest.raises(SignatureError):
        crypto.verify_signed_json(obj, "other", {"ed25519:1": vk})
    other = crypto.get_verify_key(crypto.generate_signing_key("1"))
    with pytest.raises(SignatureError):
        crypto.verify_signed_json(obj, SERVER, {"ed25519:1": other})


def test_verify_ignores_unknown_keys_but_checks_all_known(key: crypto.NamedSigningKey) -> None:
    obj = _signed(key)
    vk = crypto.get_verify_key(key)
    obj["signatures"][SERVER]["ed25519:unknown"] = "garbage!"
    obj["unsigned"] = {"age": 1}  # unsigned is not covered
    crypto.verify_signed_json(obj, SERVER, {"ed25519:1": vk})
    k2 = crypto.generate_signing_key("k2")
    obj2 = crypto.sign_json(obj, SERVER, k2)
    keys = {"ed25519:1": vk, "ed25519:k2": crypto.get_verify_key(k2)}
    crypto.verify_signed_json(obj2, SERVER, keys)
    obj2["signatures"][SERVER]["ed25519:k2"] = EMPTY_SIG
    with pytest.raises(SignatureError):
        crypto.verify_signed_json(obj2, SERVER, keys)


def test_plain_pynacl_keys_with_attributes_are_accepted() -> None:
    # signedjson style: a plain SigningKey with alg/version set on it.
    plain = nacl.signing.SigningKey(crypto.decode_base64(SEED_B64))
    plain.alg = "ed25519"  # type: ignore[attr-defined]
    plain.version = "1"  # type: ignore[attr-defined]
    assert crypto.sign_json({}, SERVER, plain)["signatures"] == {SERVER: {"ed25519:1": EMPTY_SIG}}
    with pytest.raises(ValueError, match="alg"):
        crypto.key_id(nacl.signing.SigningKey(crypto.decode_base64(SEED_B64)))


# --- event hashing and signing (appendices.md "Event Signing") ---------------------

MINIMAL_EVENT = {
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "signatures": {},
    "hashes": {},
    "type": "X",
    "content": {},
    "prev_events": [],
    "auth_events": [],
    "depth": 3,
    "unsigned": {"age_ts": 1000000},
}
MINIMAL_SIGNED = {
    "auth_events": [],
    "content": {},
    "depth": 3,
    "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
    "origin": "domain",
    "origin_server_ts": 1000000,
    "prev_events": [],
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KL"
            "jAWbOoMszkwsQma+lYAg"
        }
    },
    "type": "X",
    "unsigned": {"age_ts": 1000000},
}
MESSAGE_EVENT = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {},
    "unsigned": {"age_ts": 1000000},
}
MESSAGE_SIGNED = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241"
            "eYHYMGCA5McEiVPdhzBA"
        }
    },
    "unsigned": {"age_ts": 1000000},
}


@pytest.mark.parametrize(
    ("event", "expected"),
    [(MINIMAL_EVENT, MINIMAL_SIGNED), (MESSAGE_EVENT, MESSAGE_SIGNED)],
    ids=["minimal", "message"],
)
def test_event_signing_vectors(key: crypto.NamedSigningKey, event: dict, expected: dict) -> None:
    # The vectors predate v11 (they keep ``origin``); any v1-v10 rule set applies.
    before = copy.deepcopy(event)
    signed = crypto.add_hashes_and_signatures(event, "1", SERVER, key)
    assert event == before
    assert signed == expected
    assert crypto.compute_content_hash(event) == expected["hashes"]["sha256"]
    assert crypto.check_content_hash(signed)
    vk = crypto.get_verify_key(key)
    from pocketserver.core.redaction import redact

    crypto.verify_signed_json(redact(signed, "1"), SERVER, {"ed25519:1": vk})
    # A redacted copy still verifies but fails the content hash.
    redacted = redact(signed, "1")
    crypto.verify_signed_json(redacted, SERVER, {"ed25519:1": vk})


def test_content_hash_independent() -> None:
    event = {**MESSAGE_EVENT, "hashes": {"sha256": "x"}}
    body = {k: v for k, v in event.items() if k not in ("unsigned", "signatures", "hashes")}
    digest = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).digest()
    assert crypto.compute_content_hash(event) == crypto.encode_base64(digest)


@pytest.mark.parametrize(
    "hashes",
    [None, "x", {}, {"sha256": 5}, {"sha256": "!!"}, {"sha256": "AAAA"}],
)
def test_check_content_hash_rejects(hashes: object) -> None:
    event = dict(MESSAGE_SIGNED)
    if hashes is None:
        del event["hashes"]
    else:
        event["hashes"] = hashes
    assert crypto.check_content_hash(event) is False


def test_check_content_hash_detects_redaction() -> None:
    event = copy.deepcopy(MESSAGE_SIGNED)
    event["content"] = {}
    assert crypto.check_content_hash(event) is False
    event["content"] = {"body": "Here is the message content"}
    event["unsigned"] = {"other": 1}  # not covered
    assert crypto.check_content_hash(event) is True


def test_reference_hash_covers_redacted_form_only() -> None:
    event = {
        "type": "m.room.message",
        "room_id": "!r:domain",
        "sender": "@u:domain",
        "content": {"body": "hi"},
        "hashes": {"sha256": "abc"},
        "origin_server_ts": 1,
        "depth": 1,
        "prev_events": [],
        "auth_events": [],
        "signatures": {"domain": {"ed25519:1": "sig"}},
        "unsigned": {"age_ts": 3},
    }
    ref = crypto.compute_reference_hash(event, "11")
    # content is redacted, signatures/unsigned are dropped: these don't matter.
    other = {**event, "content": {"body": "bye"}, "signatures": {}, "unsigned": {}}
    assert crypto.compute_reference_hash(other, "11") == ref
    # Independent computation from the spec steps.
    expected_obj = {k: v for k, v in event.items() if k not in ("signatures", "unsigned")}
    expected_obj["content"] = {}
    digest = hashlib.sha256(
        json.dumps(expected_obj, sort_keys=True, separators=(",", ":")).encode()
    ).digest()
    assert ref == crypto.encode_base64(digest)
    # hashes are covered.
    assert crypto.compute_reference_hash({**event, "hashes": {"sha256": "x"}}, "11") != ref
    # v1 keeps origin; v11 drops it.
    assert crypto.compute_reference_hash({**event, "origin": "o"}, "11") == ref
    assert crypto.compute_reference_hash({**event, "origin": "o"}, "1") != (
        crypto.compute_reference_hash(event, "1")
    )


# --- server keys (server-server-api.md "Publishing Keys") ---------------------------


def test_make_server_keys_response(key: crypto.NamedSigningKey) -> None:
    old_key = crypto.generate_signing_key("0ldK3y")
    old_vk = crypto.get_verify_key(old_key)
    body = crypto.make_server_keys_response(
        "domain", key, {"ed25519:0ldK3y": (old_vk, 1532645052628)}, 1052262000000
    )
    vk = crypto.get_verify_key(key)
    assert body["server_name"] == "domain"
    assert body["valid_until_ts"] == 1052262000000
    assert body["verify_keys"] == {"ed25519:1": {"key": crypto.encode_verify_key_base64(vk)}}
    assert body["old_verify_keys"] == {
        "ed25519:0ldK3y": {
            "key": crypto.encode_verify_key_base64(old_vk),
            "expired_ts": 1532645052628,
        }
    }
    assert set(body["signatures"]) == {"domain"}
    # A peer verifies with the key it just read from the body.
    published = body["verify_keys"]["ed25519:1"]["key"]
    peer_vk = crypto.decode_verify_key_base64("ed25519", "1", published)
    crypto.verify_signed_json(body, "domain", {"ed25519:1": peer_vk})
    assert crypto.make_server_keys_response("d", key, None, 1)["old_verify_keys"] == {}


def test_verify_rejects_non_objects_and_non_keys(key: crypto.NamedSigningKey) -> None:
    with pytest.raises(SignatureError):
        crypto.verify_signed_json([], SERVER, {})  # type: ignore[arg-type]
    with pytest.raises(SignatureError):
        crypto.verify_signed_json(_signed(key), SERVER, {"ed25519:1": None})  # type: ignore[dict-item]


def _independent_hash(event: dict[str, object], dropped: tuple[str, ...]) -> str:
    body = {k: v for k, v in event.items() if k not in dropped}
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return crypto.encode_base64(hashlib.sha256(raw).digest())


_LEGACY = ("unsigned", "signatures", "hashes", "age_ts", "outlier", "destinations")


@pytest.mark.parametrize(
    ("extra", "matches_when_hashed_without"),
    [
        # An old event hashed by its server without the legacy keys it still carries:
        # accepted (Synapse's compute_content_hash drops them too).
        ({"age_ts": 1400000000000}, _LEGACY),
        ({"outlier": False}, _LEGACY),
        ({"destinations": {"other.example": 1}}, _LEGACY),
        ({"age_ts": 5, "outlier": True, "destinations": []}, _LEGACY),
        # Keys the rule does not name stay covered: hashed without them, refused.
        ({"age": 5}, None),
        ({"origin": "elsewhere"}, ("unsigned", "signatures", "hashes")),
    ],
)
def test_content_hash_drops_legacy_top_level_keys(
    extra: dict[str, object], matches_when_hashed_without: tuple[str, ...] | None
) -> None:
    """server-server-api "Calculating the content hash for an event", plus Synapse's
    legacy keys ``age_ts``, ``outlier`` and ``destinations``."""
    from synapse.crypto.event_signing import compute_content_hash as synapse_hash

    base = {k: v for k, v in MESSAGE_EVENT.items() if k not in ("hashes", "signatures")}
    claimed = _independent_hash(base, _LEGACY)  # what the old server put in hashes
    event = {**base, **extra, "hashes": {"sha256": claimed}}
    if matches_when_hashed_without is _LEGACY:
        assert crypto.check_content_hash(event) is True
        assert crypto.compute_content_hash(event) == claimed
    else:
        assert crypto.check_content_hash(event) is False
        if matches_when_hashed_without is not None:
            assert crypto.compute_content_hash(event) == _independent_hash(
                event, matches_when_hashed_without
            )
    # The same answer as Synapse's own rule, for every row.
    _, digest = synapse_hash(dict(event), hashlib.sha256)
    assert crypto.compute_content_hash(event) == crypto.encode_base64(digest)
