"""End-to-end encryption keys through the real server: raw HTTP for exact answers."""

from __future__ import annotations

import time
from urllib.parse import quote

import httpx
import nacl.signing
import pytest

from tests.e2e_keys.keys import cross_signing_key, device_keys, public, sign, signed_otk
from tests.harness import RunningServer

V3 = "/_matrix/client/v3"


def _auth(user: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {user['access_token']}"}


@pytest.fixture
def c(server: RunningServer):
    with server.client() as client:
        yield client


def _post(c: httpx.Client, user: dict[str, str], path: str, body: object) -> httpx.Response:
    return c.post(V3 + path, headers=_auth(user), json=body)


def _ok(r: httpx.Response) -> dict:
    assert r.status_code == 200, r.text
    return r.json()


def _err(r: httpx.Response, status: int, errcode: str) -> None:
    assert (r.status_code, r.json().get("errcode")) == (status, errcode), r.text


def _sync(
    c: httpx.Client, user: dict[str, str], since: str | None = None, timeout: int = 0
) -> dict:
    params: dict[str, str | int] = {"timeout": timeout}
    if since:
        params["since"] = since
    return _ok(c.get(f"{V3}/sync", headers=_auth(user), params=params))


def _room(c: httpx.Client, user: dict[str, str]) -> str:
    return str(_ok(_post(c, user, "/createRoom", {"preset": "public_chat"}))["room_id"])


def _join(c: httpx.Client, user: dict[str, str], room: str) -> None:
    _ok(_post(c, user, f"/rooms/{quote(room, safe='')}/join", {}))


def _leave(c: httpx.Client, user: dict[str, str], room: str) -> None:
    _ok(_post(c, user, f"/rooms/{quote(room, safe='')}/leave", {}))


def _upload_device(
    c: httpx.Client, user: dict[str, str], sk: nacl.signing.SigningKey, **extra
) -> dict:
    body = {"device_keys": device_keys(user["user_id"], user["device_id"], sk), **extra}
    return _ok(_post(c, user, "/keys/upload", body))


def test_upload_query_claim_round_trip(
    server: RunningServer, c: httpx.Client, new_user: str
) -> None:
    alice = server.register(new_user + "a")
    bob = server.register(new_user + "b")
    sk = nacl.signing.SigningKey.generate()
    uid, dev = alice["user_id"], alice["device_id"]
    otks = {f"signed_curve25519:K{i}": signed_otk(uid, dev, sk, i) for i in range(3)}
    fb = {"signed_curve25519:FB": signed_otk(uid, dev, sk, 99, fallback=True)}
    r = _upload_device(c, alice, sk, one_time_keys=otks, fallback_keys=fb)
    assert r == {"one_time_key_counts": {"signed_curve25519": 3}}
    sync = _sync(c, alice)
    assert sync["device_one_time_keys_count"] == {"signed_curve25519": 3}
    assert sync["device_unused_fallback_key_types"] == ["signed_curve25519"]

    q = _ok(_post(c, bob, "/keys/query", {"device_keys": {uid: []}, "timeout": 10000}))
    got = q["device_keys"][uid][dev]
    assert got["keys"] == device_keys(uid, dev, sk)["keys"]
    assert got["unsigned"] == {}
    assert q["failures"] == {}
    assert _ok(_post(c, bob, "/keys/query", {"device_keys": {uid: ["NOPE"]}}))["device_keys"] == {
        uid: {}
    }

    claimed = []
    for _ in range(4):
        r2 = _ok(_post(c, bob, "/keys/claim", {"one_time_keys": {uid: {dev: "signed_curve25519"}}}))
        claimed.extend(r2["one_time_keys"][uid][dev].items())
    assert [k for k, _ in claimed] == [*otks, "signed_curve25519:FB"]
    assert claimed[0][1] == otks["signed_curve25519:K0"]
    sync = _sync(c, alice)
    assert sync["device_one_time_keys_count"] == {"signed_curve25519": 0}
    assert sync["device_unused_fallback_key_types"] == []
    # r0 works too (older SDKs).
    r0 = c.post(
        "/_matrix/client/r0/keys/query", headers=_auth(bob), json={"device_keys": {uid: []}}
    )
    assert dev in r0.json()["device_keys"][uid]


def test_bad_uploads(server: RunningServer, c: httpx.Client, new_user: str) -> None:
    alice = server.register(new_user)
    sk = nacl.signing.SigningKey.generate()
    uid, dev = alice["user_id"], alice["device_id"]
    keys = device_keys(uid, dev, sk)
    _err(c.post(V3 + "/keys/upload", json={}), 401, "M_MISSING_TOKEN")
    _err(c.post(V3 + "/keys/upload", headers=_auth(alice), content=b"{"), 400, "M_NOT_JSON")
    # Shape errors are M_BAD_JSON, as Synapse (SyTest 01-upload-key "Rejects invalid
    # device keys": algorithms, keys and signatures are required), and store nothing.
    missing = {"user_id": uid, "device_id": dev}
    _err(_post(c, alice, "/keys/upload", {"device_keys": missing}), 400, "M_BAD_JSON")
    other = device_keys(uid, "OTHERDEVICE", sk)
    _err(_post(c, alice, "/keys/upload", {"device_keys": other}), 400, "M_BAD_JSON")
    foreign = {**keys, "user_id": "@someone:else.example"}
    _err(_post(c, alice, "/keys/upload", {"device_keys": foreign}), 400, "M_BAD_JSON")
    q = _ok(_post(c, alice, "/keys/query", {"device_keys": {uid: []}}))
    assert q["device_keys"][uid] == {}
    _err(
        _post(c, alice, "/keys/upload", {"one_time_keys": {"nocolon": "k"}}), 400, "M_INVALID_PARAM"
    )
    _ok(_post(c, alice, "/keys/upload", {"one_time_keys": {"signed_curve25519:A": "k1"}}))
    _err(
        _post(c, alice, "/keys/upload", {"one_time_keys": {"signed_curve25519:A": "k2"}}),
        400,
        "M_INVALID_PARAM",
    )
    _err(_post(c, alice, "/keys/query", {}), 400, "M_MISSING_PARAM")
    _err(_post(c, alice, "/keys/query", {"device_keys": {"x": []}}), 400, "M_INVALID_PARAM")
    _err(_post(c, alice, "/keys/claim", {"one_time_keys": []}), 400, "M_BAD_JSON")
    _err(c.get(V3 + "/keys/changes", headers=_auth(alice)), 400, "M_MISSING_PARAM")
    _err(
        c.get(V3 + "/keys/changes", headers=_auth(alice), params={"from": "x"}),
        400,
        "M_INVALID_PARAM",
    )
    # Nothing of the rejected uploads was stored.
    assert _sync(c, alice)["device_one_time_keys_count"] == {"signed_curve25519": 1}
    assert _ok(_post(c, alice, "/keys/query", {"device_keys": {uid: []}}))["device_keys"] == {
        uid: {}
    }


def test_device_lists_in_sync_and_changes(
    server: RunningServer, c: httpx.Client, new_user: str
) -> None:
    alice = server.register(new_user + "a")
    bob = server.register(new_user + "b")
    carol = server.register(new_user + "c")
    room = _room(c, alice)
    _join(c, bob, room)
    token = _sync(c, bob)["next_batch"]
    assert _sync(c, bob)["device_lists"] == {"changed": [], "left": []}  # initial sync
    # Alice uploads keys: Bob hears of it, even in a long-poll.
    started = time.monotonic()
    _upload_device(c, alice, nacl.signing.SigningKey.generate())
    s = _sync(c, bob, token, timeout=5000)
    assert s["device_lists"]["changed"] == [alice["user_id"]]
    assert time.monotonic() - started < 4
    token2 = s["next_batch"]
    assert _sync(c, bob, token2)["device_lists"] == {"changed": [], "left": []}
    # Carol joins: Bob must fetch her devices; Carol must fetch everyone's.
    carol_token = _sync(c, carol)["next_batch"]
    _join(c, carol, room)
    s = _sync(c, bob, token2)
    assert s["device_lists"]["changed"] == [carol["user_id"]]
    token3 = s["next_batch"]
    s = _sync(c, carol, carol_token)
    assert s["device_lists"]["changed"] == sorted([alice["user_id"], bob["user_id"]])
    # Carol leaves: she shares no room with Bob any more.
    _leave(c, carol, room)
    s = _sync(c, bob, token3)
    assert s["device_lists"] == {"changed": [], "left": [carol["user_id"]]}
    changes = _ok(
        c.get(
            V3 + "/keys/changes", headers=_auth(bob), params={"from": token, "to": s["next_batch"]}
        )
    )
    assert changes == {"changed": [alice["user_id"]], "left": [carol["user_id"]]}
    # Logging out a device (with keys) changes the user's device list and drops the keys.
    second = server.login(alice["user_id"]).json()
    _upload_device(c, second, nacl.signing.SigningKey.generate())
    token4 = _sync(c, bob)["next_batch"]
    _ok(_post(c, second, "/logout", {}))
    deadline = time.monotonic() + 5
    while True:
        s = _sync(c, bob, token4, timeout=1000)
        if s["device_lists"]["changed"] or time.monotonic() > deadline:
            break
    assert s["device_lists"]["changed"] == [alice["user_id"]]
    q = _ok(_post(c, bob, "/keys/query", {"device_keys": {alice["user_id"]: []}}))
    assert list(q["device_keys"][alice["user_id"]]) == [alice["device_id"]]


def _wait_changed(c: httpx.Client, user: dict[str, str], since: str) -> dict:
    """Long-poll until ``device_lists.changed`` is not empty (or 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        s = _sync(c, user, since, timeout=1000)
        if s["device_lists"]["changed"] or time.monotonic() > deadline:
            return s


def test_new_and_renamed_devices_change_device_lists(
    server: RunningServer, c: httpx.Client, new_user: str
) -> None:
    """As Synapse (SyTest 06-device-lists "Local new/update device changes appear in v2
    /sync", "Users receive device_list updates for their own devices")."""
    alice = server.register(new_user + "a")
    bob = server.register(new_user + "b")
    dave = server.register(new_user + "d")  # shares no room with Alice
    _join(c, bob, _room(c, alice))
    bob_token, alice_token = _sync(c, bob)["next_batch"], _sync(c, alice)["next_batch"]
    dave_token = _sync(c, dave)["next_batch"]
    second = server.login(alice["user_id"]).json()
    assert _wait_changed(c, bob, bob_token)["device_lists"]["changed"] == [alice["user_id"]]
    s = _wait_changed(c, alice, alice_token)
    assert s["device_lists"]["changed"] == [alice["user_id"]]
    bob_token, alice_token = _sync(c, bob)["next_batch"], s["next_batch"]
    r = c.put(
        f"{V3}/devices/{quote(second['device_id'])}",
        headers=_auth(alice),
        json={"display_name": "Phone"},
    )
    assert r.status_code == 200, r.text
    assert _wait_changed(c, bob, bob_token)["device_lists"]["changed"] == [alice["user_id"]]
    # The same name again is no change.
    bob_token = _sync(c, bob)["next_batch"]
    c.put(
        f"{V3}/devices/{quote(second['device_id'])}",
        headers=_auth(alice),
        json={"display_name": "Phone"},
    )
    assert _sync(c, bob, bob_token)["device_lists"]["changed"] == []
    assert _sync(c, dave, dave_token)["device_lists"]["changed"] == []


def test_user_signing_key_is_news_for_its_owner_only(
    server: RunningServer, c: httpx.Client, new_user: str
) -> None:
    """SyTest 08-cross-signing "Changing user-signing key notifies local users": a new
    user-signing key alone, and signatures made with it, are private to their owner."""
    alice = server.register(new_user + "a")
    bob = server.register(new_user + "b")
    uid = alice["user_id"]
    _join(c, bob, _room(c, alice))
    master, ssk, usk = (nacl.signing.SigningKey.generate() for _ in range(3))
    keys = {
        "master_key": cross_signing_key(uid, "master", master, None),
        "self_signing_key": cross_signing_key(uid, "self_signing", ssk, master),
    }
    _ok(_post(c, alice, "/keys/device_signing/upload", keys))
    bob_token, alice_token = _sync(c, bob)["next_batch"], _sync(c, alice)["next_batch"]
    usk_only = {"user_signing_key": cross_signing_key(uid, "user_signing", usk, master)}
    r = _post(c, alice, "/keys/device_signing/upload", usk_only)
    if r.status_code == 401:  # replacing keys may need the password
        auth = {
            "type": "m.login.password",
            "session": r.json()["session"],
            "identifier": {"type": "m.id.user", "user": uid},
            "password": "correct horse",
        }
        r = _post(c, alice, "/keys/device_signing/upload", {**usk_only, "auth": auth})
    _ok(r)
    assert _wait_changed(c, alice, alice_token)["device_lists"]["changed"] == [uid]
    assert _sync(c, bob, bob_token)["device_lists"]["changed"] == []
    # Alice signs Bob's master key with it: Alice hears of Bob, Bob and others do not.
    bob_master = nacl.signing.SigningKey.generate()
    bob_keys = {"master_key": cross_signing_key(bob["user_id"], "master", bob_master, None)}
    _ok(_post(c, bob, "/keys/device_signing/upload", bob_keys))
    bob_token, alice_token = _sync(c, bob)["next_batch"], _sync(c, alice)["next_batch"]
    signed = sign(bob_keys["master_key"], uid, f"ed25519:{public(usk)}", usk)
    r = _ok(
        _post(c, alice, "/keys/signatures/upload", {bob["user_id"]: {public(bob_master): signed}})
    )
    assert r == {"failures": {}}
    assert _wait_changed(c, alice, alice_token)["device_lists"]["changed"] == [bob["user_id"]]
    assert _sync(c, bob, bob_token)["device_lists"]["changed"] == []


def test_opaque_device_keys_as_synapse(
    server: RunningServer, c: httpx.Client, new_user: str
) -> None:
    """SyTest 01-upload-key "Can upload device keys": placeholder keys and a
    placeholder self-signature are stored and served as uploaded (as Synapse; the
    clients that fetch them verify signatures), and keys/changes and /sync see them."""
    alice = server.register(new_user + "a")
    bob = server.register(new_user + "b")
    uid, dev = alice["user_id"], alice["device_id"]
    since = _sync(c, alice)["next_batch"]
    keys = {
        "user_id": uid,
        "device_id": dev,
        "algorithms": ["m.olm.curve25519-aes-sha256", "m.megolm.v1.aes-sha"],
        "keys": {f"curve25519:{dev}": "curve25519+key", f"ed25519:{dev}": "ed25519+key"},
        "signatures": {uid: {f"ed25519:{dev}": "self+signature"}},
    }
    r = _ok(
        _post(
            c,
            alice,
            "/keys/upload",
            {"device_keys": keys, "one_time_keys": {"my_algorithm:my_id_1": "KIhHVk"}},
        )
    )
    assert r == {"one_time_key_counts": {"my_algorithm": 1}}
    got = _ok(_post(c, bob, "/keys/query", {"device_keys": {uid: [dev]}}))
    served = got["device_keys"][uid][dev]
    assert {k: served[k] for k in keys} == keys
    changes = _ok(
        c.get(
            f"{V3}/keys/changes",
            headers=_auth(alice),
            params={"from": since, "to": _sync(c, alice)["next_batch"]},
        )
    )
    assert uid in changes["changed"]


def test_cross_signing(server: RunningServer, c: httpx.Client, new_user: str) -> None:
    alice = server.register(new_user + "a")
    bob = server.register(new_user + "b")
    uid = alice["user_id"]
    sk = nacl.signing.SigningKey.generate()
    _upload_device(c, alice, sk)
    master, ssk, usk = (nacl.signing.SigningKey.generate() for _ in range(3))
    body = {
        "master_key": cross_signing_key(uid, "master", master, None),
        "self_signing_key": cross_signing_key(uid, "self_signing", ssk, master),
        "user_signing_key": cross_signing_key(uid, "user_signing", usk, master),
    }
    bad = {**body, "self_signing_key": cross_signing_key(uid, "self_signing", ssk, usk)}
    _err(_post(c, alice, "/keys/device_signing/upload", bad), 400, "M_INVALID_SIGNATURE")
    # The first upload needs no UIA; the same keys again neither (also at MSC1756's
    # unstable path, which Synapse serves and SyTest 08-cross-signing calls).
    assert _ok(_post(c, alice, "/keys/device_signing/upload", body)) == {}
    unstable = "/_matrix/client/unstable/keys/device_signing/upload"
    assert _ok(c.post(unstable, headers=_auth(alice), json=body)) == {}
    r = c.post("/_matrix/client/unstable/keys/signatures/upload", headers=_auth(alice), json={})
    assert _ok(r) == {"failures": {}}
    # Replacing them does.
    new_master = nacl.signing.SigningKey.generate()
    replace = {"master_key": cross_signing_key(uid, "master", new_master, None)}
    r = _post(c, alice, "/keys/device_signing/upload", replace)
    assert r.status_code == 401
    assert r.json()["flows"] == [{"stages": ["m.login.password"]}]
    auth = {
        "type": "m.login.password",
        "session": r.json()["session"],
        "identifier": {"type": "m.id.user", "user": uid},
        "password": "correct horse",
    }
    q = _ok(_post(c, bob, "/keys/query", {"device_keys": {uid: []}}))
    assert q["master_keys"][uid]["keys"] == body["master_key"]["keys"]
    assert q["self_signing_keys"][uid] == body["self_signing_key"]
    assert q["user_signing_keys"] == {}
    # Signatures: Alice's device by her self-signing key; a bad one is a failure.
    signed_device = sign(
        device_keys(uid, alice["device_id"], sk), uid, f"ed25519:{public(ssk)}", ssk
    )
    forged = sign(device_keys(uid, alice["device_id"], sk), uid, f"ed25519:{public(ssk)}", usk)
    r = _ok(_post(c, alice, "/keys/signatures/upload", {uid: {alice["device_id"]: forged}}))
    assert r["failures"][uid][alice["device_id"]]["errcode"] == "M_INVALID_SIGNATURE"
    r = _ok(_post(c, alice, "/keys/signatures/upload", {uid: {alice["device_id"]: signed_device}}))
    assert r == {"failures": {}}
    q = _ok(_post(c, bob, "/keys/query", {"device_keys": {uid: []}}))
    sigs = q["device_keys"][uid][alice["device_id"]]["signatures"][uid]
    assert set(sigs) == {f"ed25519:{alice['device_id']}", f"ed25519:{public(ssk)}"}
    _err(_post(c, alice, "/keys/signatures/upload", {uid: []}), 400, "M_BAD_JSON")
    # Now replace the master key with the password.
    assert _ok(_post(c, alice, "/keys/device_signing/upload", {**replace, "auth": auth})) == {}
    q = _ok(_post(c, alice, "/keys/query", {"device_keys": {uid: []}}))
    assert q["master_keys"][uid]["keys"] == replace["master_key"]["keys"]
    assert uid in q["user_signing_keys"]
