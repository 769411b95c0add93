"""What other servers may read of our users' keys: /user/devices, /user/keys/query and
/user/keys/claim, as service calls with the authenticated origin."""

from __future__ import annotations

import nacl.signing
import pytest

from pocketserver.e2e.cross_signing import CrossSigning
from pocketserver.errors import MatrixError
from pocketserver.federation.e2e.serving import KeyServing
from tests.e2e_keys.keys import cross_signing_key, device_keys, public, signed_otk

from .conftest import ALICE, BOB, RBOB, REMOTE, Env


async def _alice_with_keys(env: Env) -> dict[str, nacl.signing.SigningKey]:
    """Alice: device keys on A1 and A2, a one-time and a fallback key on A1, and
    master, self-signing and user-signing keys."""
    sks = {d: nacl.signing.SigningKey.generate() for d in ("A1", "A2", "msk", "ssk", "usk")}
    for d in ("A1", "A2"):
        await env.keys.upload(ALICE, d, {"device_keys": device_keys(ALICE, d, sks[d])})
    await env.keys.upload(
        ALICE,
        "A1",
        {
            "one_time_keys": {"signed_curve25519:K1": signed_otk(ALICE, "A1", sks["A1"], 1)},
            "fallback_keys": {
                "signed_curve25519:F1": signed_otk(ALICE, "A1", sks["A1"], 9, fallback=True)
            },
        },
    )
    cs = CrossSigning(env.db, env.stream)
    await cs.upload_keys(
        ALICE,
        {
            "master_key": cross_signing_key(ALICE, "master", sks["msk"], None),
            "self_signing_key": cross_signing_key(ALICE, "self_signing", sks["ssk"], sks["msk"]),
            "user_signing_key": cross_signing_key(ALICE, "user_signing", sks["usk"], sks["msk"]),
        },
    )
    return sks


async def test_user_devices_lists_devices_keys_and_public_cross_signing_keys(env: Env) -> None:
    sks = await _alice_with_keys(env)
    answer = await env.fed.serving.user_devices(REMOTE, ALICE)
    assert answer["user_id"] == ALICE
    last = env.rows(
        "SELECT max(stream_id) FROM e2e_device_list_changes"
        " WHERE user_id = ? AND device_id IS NOT NULL",
        ALICE,
    )
    assert answer["stream_id"] == last[0][0]
    devices = {d["device_id"]: d for d in answer["devices"]}  # type: ignore[union-attr]
    assert set(devices) == {"A1", "A2"}
    assert devices["A1"]["keys"]["keys"]["ed25519:A1"] == public(sks["A1"])
    # Device names stay private by default (allow_device_name_lookup_over_federation).
    assert all("device_display_name" not in d for d in devices.values())
    assert answer["master_key"]["keys"] == {f"ed25519:{public(sks['msk'])}": public(sks["msk"])}  # type: ignore[index]
    assert "self_signing_key" in answer
    assert "user_signing_key" not in answer
    assert public(sks["usk"]) not in str(answer)


async def test_device_names_only_when_allowed(env: Env) -> None:
    await _alice_with_keys(env)
    serving = KeyServing(env.keys, display_names=True)
    answer = await serving.user_devices(REMOTE, ALICE)
    names = {d["device_id"]: d.get("device_display_name") for d in answer["devices"]}  # type: ignore[union-attr]
    assert names == {"A1": "Alice's phone", "A2": None}
    query = await serving.query(REMOTE, {"device_keys": {ALICE: ["A1"]}})
    assert query["device_keys"][ALICE]["A1"]["unsigned"] == {  # type: ignore[index]
        "device_display_name": "Alice's phone"
    }
    hidden = await env.fed.serving.query(REMOTE, {"device_keys": {ALICE: ["A1"]}})
    assert hidden["device_keys"][ALICE]["A1"]["unsigned"] == {}  # type: ignore[index]


async def test_user_devices_leaves_out_devices_without_keys(env: Env) -> None:
    """Each entry needs ``keys`` (user_devices.yaml); Synapse's resync fails the whole
    key query on an entry without them (found by tests/federation/test_synapse_e2ee.py:
    a device made at registration never uploads keys)."""
    sk = nacl.signing.SigningKey.generate()
    await env.keys.upload(ALICE, "A2", {"device_keys": device_keys(ALICE, "A2", sk)})
    answer = await env.fed.serving.user_devices(REMOTE, ALICE)
    assert [d["device_id"] for d in answer["devices"]] == ["A2"]  # type: ignore[union-attr]
    assert all("keys" in d for d in answer["devices"])  # type: ignore[union-attr]
    bare = await env.fed.serving.user_devices(REMOTE, BOB)
    assert bare["devices"] == []


@pytest.mark.parametrize("user_id", [RBOB, "@nobody:local.test", "not a user"])
async def test_user_devices_of_non_local_or_unknown_users_is_404(env: Env, user_id: str) -> None:
    with pytest.raises(MatrixError) as e:
        await env.fed.serving.user_devices(REMOTE, user_id)
    assert (e.value.status, e.value.errcode) == (404, "M_NOT_FOUND")


async def test_stream_id_follows_changes_others_hear_of(env: Env) -> None:
    await _alice_with_keys(env)
    first = (await env.fed.serving.user_devices(REMOTE, ALICE))["stream_id"]
    sk = nacl.signing.SigningKey.generate()
    await env.keys.upload(ALICE, "A2", {"device_keys": device_keys(ALICE, "A2", sk)})
    second = (await env.fed.serving.user_devices(REMOTE, ALICE))["stream_id"]
    assert isinstance(first, int)
    assert isinstance(second, int)
    assert second > first


async def test_keys_query_never_gives_the_user_signing_key(env: Env) -> None:
    sks = await _alice_with_keys(env)
    answer = await env.fed.serving.query(REMOTE, {"device_keys": {ALICE: [], BOB: []}})
    assert set(answer["device_keys"][ALICE]) == {"A1", "A2"}  # type: ignore[index]
    assert answer["device_keys"][BOB] == {}  # type: ignore[index]
    assert set(answer["master_keys"]) == {ALICE}  # type: ignore[arg-type]
    assert set(answer["self_signing_keys"]) == {ALICE}  # type: ignore[arg-type]
    assert "user_signing_keys" not in answer
    assert public(sks["usk"]) not in str(answer)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"device_keys": []},
        {"device_keys": {RBOB: []}},
        {"device_keys": {ALICE: "A1"}},
        {"device_keys": {"@x:elsewhere": []}},
    ],
)
async def test_bad_key_queries(env: Env, body: dict) -> None:
    with pytest.raises(MatrixError) as e:
        await env.fed.serving.query(REMOTE, body)
    assert e.value.status == 400


async def test_claim_gives_each_one_time_key_once_then_the_fallback(env: Env) -> None:
    await _alice_with_keys(env)
    ask = {"one_time_keys": {ALICE: {"A1": "signed_curve25519"}, RBOB: {"X": "signed_curve25519"}}}
    first = await env.fed.serving.claim(REMOTE, ask)
    assert list(first["one_time_keys"][ALICE]["A1"]) == ["signed_curve25519:K1"]  # type: ignore[index]
    assert RBOB not in first["one_time_keys"]  # type: ignore[operator]
    second = await env.fed.serving.claim(REMOTE, ask)
    assert list(second["one_time_keys"][ALICE]["A1"]) == ["signed_curve25519:F1"]  # type: ignore[index]
    counts, unused = await env.keys.counts(ALICE, "A1")
    assert counts == {}
    assert unused == []


async def test_bad_claims(env: Env) -> None:
    for body in ({}, {"one_time_keys": []}, {"one_time_keys": {ALICE: {"A1": 5}}}):
        with pytest.raises(MatrixError) as e:
            await env.fed.serving.claim(REMOTE, body)
        assert e.value.status == 400
