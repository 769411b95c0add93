"""The pure validation of device, one-time and cross-signing keys (core/e2e_keys.py)."""

from __future__ import annotations

import nacl.signing
import pytest

from pocketserver.core import e2e_keys as rules
from pocketserver.core.e2e_keys import KeyRejected
from tests.e2e_keys.keys import cross_signing_key, device_keys, public, sign, signed_otk

ALICE = "@alice:test.local"
DEV = "DEVICEA"


@pytest.fixture
def key() -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey.generate()


def test_device_keys_signed_by_own_key_pass(key: nacl.signing.SigningKey) -> None:
    obj = {**device_keys(ALICE, DEV, key), "unsigned": {"x": 1}}
    stored = rules.check_device_keys(obj, ALICE, DEV)
    assert "unsigned" not in stored
    assert stored["keys"] == obj["keys"]


@pytest.mark.parametrize(
    "change",
    [
        lambda o: {**o, "user_id": "@bob:test.local"},
        lambda o: {**o, "device_id": "OTHER"},
        lambda o: {**o, "algorithms": "m.olm"},
        lambda o: {**o, "algorithms": [1]},
        lambda o: {k: v for k, v in o.items() if k != "algorithms"},
        lambda o: {k: v for k, v in o.items() if k != "keys"},
        lambda o: {k: v for k, v in o.items() if k != "signatures"},
        lambda o: {**o, "keys": {"ed25519:DEVICEA": 5}},
        lambda o: {**o, "signatures": {ALICE: {"ed25519:DEVICEA": 5}}},
        lambda o: {**o, "signatures": None},
        lambda o: "not an object",
    ],
)
def test_bad_device_keys_rejected(key: nacl.signing.SigningKey, change) -> None:
    """Shape errors are M_BAD_JSON, as Synapse (SyTest 01-upload-key "Rejects invalid
    device keys")."""
    with pytest.raises(KeyRejected) as e:
        rules.check_device_keys(change(device_keys(ALICE, DEV, key)), ALICE, DEV)
    assert e.value.errcode == "M_BAD_JSON"


def test_device_keys_are_not_verified(key: nacl.signing.SigningKey) -> None:
    """Keys and self-signatures are the device's own claims, verified by the clients
    that receive them (as Synapse): opaque keys, a forged or missing self-signature and
    no ed25519 key of the device's own all pass the server."""
    other = nacl.signing.SigningKey.generate()
    obj = device_keys(ALICE, DEV, key)
    forged = sign({**obj, "signatures": {}}, ALICE, f"ed25519:{DEV}", other)
    for keys in (
        forged,
        {**obj, "signatures": {}},
        {**obj, "keys": {"curve25519:DEVICEA": "curve25519+key"}},
        {**obj, "keys": {"ed25519:DEVICEA": "ed25519+key"}},
    ):
        assert rules.check_device_keys(keys, ALICE, DEV)["keys"] == keys["keys"]


def test_one_time_keys_strings_and_objects(key: nacl.signing.SigningKey) -> None:
    keys = rules.check_one_time_keys(
        {"curve25519:AAAA": "abc", "signed_curve25519:AAAB": signed_otk(ALICE, DEV, key, 1)}
    )
    assert [(k.algorithm, k.key_id) for k in keys] == [
        ("curve25519", "AAAA"),
        ("signed_curve25519", "AAAB"),
    ]
    assert rules.check_one_time_keys(None) == []


@pytest.mark.parametrize(
    "keys",
    [
        [],
        {"nocolon": "abc"},
        {":AAAA": "abc"},
        {"signed_curve25519:": "abc"},
        {"signed_curve25519:A": 5},
        {"signed_curve25519:A": {"signatures": {}}},
        {"signed_curve25519:A": {"key": "k", "fallback": "yes"}},
        {"signed_curve25519:A": {"key": "k", "signatures": []}},
        {"signed_curve25519:" + "A" * 300: "k"},
    ],
)
def test_bad_one_time_keys_rejected(keys: object) -> None:
    with pytest.raises(KeyRejected) as e:
        rules.check_one_time_keys(keys)
    assert e.value.errcode == "M_INVALID_PARAM"


def test_cross_signing_key_shape(key: nacl.signing.SigningKey) -> None:
    master = cross_signing_key(ALICE, "master", key, None)
    assert rules.check_cross_signing_key(master, ALICE, "master") == public(key)


@pytest.mark.parametrize(
    "change",
    [
        lambda o: {**o, "user_id": "@bob:test.local"},
        lambda o: {**o, "usage": ["self_signing"]},
        lambda o: {**o, "usage": "master"},
        lambda o: {**o, "keys": {}},
        lambda o: {**o, "keys": {**o["keys"], "ed25519:other": "other"}},
        lambda o: {**o, "keys": {"ed25519:abc": "abd"}},
        lambda o: {**o, "keys": {"ed25519:abc": "abc"}},
        lambda o: {**o, "keys": {"curve25519:" + v: v for v in o["keys"].values()}},
        lambda o: [],
    ],
)
def test_bad_cross_signing_keys_rejected(key: nacl.signing.SigningKey, change) -> None:
    with pytest.raises(KeyRejected) as e:
        rules.check_cross_signing_key(
            change(cross_signing_key(ALICE, "master", key, None)), ALICE, "master"
        )
    assert e.value.errcode == "M_INVALID_PARAM"


def test_check_signature(key: nacl.signing.SigningKey) -> None:
    master = nacl.signing.SigningKey.generate()
    ssk = cross_signing_key(ALICE, "self_signing", key, master)
    kid = f"ed25519:{public(master)}"
    rules.check_signature(ssk, ALICE, kid, public(master))
    with pytest.raises(KeyRejected) as e:
        rules.check_signature(ssk, ALICE, kid, public(key))
    assert e.value.errcode == "M_INVALID_SIGNATURE"
    with pytest.raises(KeyRejected):
        rules.check_signature(ssk, "@bob:test.local", kid, public(master))


def test_new_signatures() -> None:
    stored = {"k": 1, "signatures": {ALICE: {"ed25519:A": "s1"}}}
    obj = {
        "k": 1,
        "signatures": {ALICE: {"ed25519:A": "s1", "ed25519:B": "s2"}, "@x:y": {"a": "b"}},
    }
    assert rules.new_signatures(obj, ALICE, stored) == {"ed25519:B": "s2"}
    assert rules.new_signatures({"k": 1}, ALICE, stored) == {}
    assert rules.without_signatures(obj) == {"k": 1}
