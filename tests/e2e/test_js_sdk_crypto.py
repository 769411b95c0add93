"""matrix-js-sdk's Rust crypto (initRustCrypto, run with node) against the real server.

tests/js/crypto_scenario.mjs bootstraps cross-signing (with the UIA password stage),
secret storage and key backup, chats with a second user in an encrypted room, and
restores everything on a second device, which then replaces the backup. This test then
checks, with its own login and pynacl, that every signature the SDK uploaded verifies
(client-server API "Cross-signing", "Server-side key backups", "Secret storage").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from tests.e2e.js_scenarios import run_scenario, verify_signature
from tests.e2e.test_js_sdk import node_modules
from tests.harness import make_config, running_server

__all__ = ["node_modules"]  # the fixture, imported for pytest

V3 = "/_matrix/client/v3"
BACKUP_ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
SECRET_STORAGE_ALGORITHM = "m.secret_storage.v1.aes-hmac-sha2"
SCENARIO_TIMEOUT = 90.0
STEPS = (
    "alice logs in with rust crypto",
    "bootstrap cross-signing",
    "bootstrap secret storage and key backup",
    "bob logs in and bootstraps cross-signing while syncing",
    "encrypted room",
    "exchange encrypted messages",
    "room keys backed up",
    "second device restores from secret storage and backup",
    "second device decrypts history",
    "second device replaces the key backup",
    "bob sees the second device signed by alice",
)


def _only_key(cross_signing_key: dict[str, Any]) -> tuple[str, str]:
    """(key ID, public key) of a cross-signing key object's single ed25519 key."""
    ((key_id, public_key),) = cross_signing_key["keys"].items()
    assert key_id == f"ed25519:{public_key}"
    return key_id, public_key


def _check_cross_signing(c: httpx.Client, user_id: str, result: dict[str, Any]) -> None:
    a1, a2 = result["a1"], result["a2"]
    r = c.post("/keys/query", json={"device_keys": {user_id: []}})
    assert r.status_code == 200, r.text
    body = r.json()
    master = body["master_keys"][user_id]
    ssk = body["self_signing_keys"][user_id]
    usk = body["user_signing_keys"][user_id]
    devices = body["device_keys"][user_id]
    assert (master["usage"], ssk["usage"], usk["usage"]) == (
        ["master"],
        ["self_signing"],
        ["user_signing"],
    )
    master_id, master_public = _only_key(master)
    ssk_id, ssk_public = _only_key(ssk)
    _, usk_public = _only_key(usk)
    # The SDK's own view agrees with the server's.
    assert (master_public, ssk_public, usk_public) == (
        result["master"],
        result["self_signing"],
        result["user_signing"],
    )
    a1_ed25519 = devices[a1]["keys"][f"ed25519:{a1}"]
    assert a1_ed25519 == result["a1_ed25519"]
    # Master key signed by A1's device key; the others by the master key.
    verify_signature(master, user_id, f"ed25519:{a1}", a1_ed25519)
    verify_signature(ssk, user_id, master_id, master_public)
    verify_signature(usk, user_id, master_id, master_public)
    # Both devices: self-signed, and signed by the self-signing key.
    for device_id in (a1, a2):
        device = devices[device_id]
        own_key = device["keys"][f"ed25519:{device_id}"]
        verify_signature(device, user_id, f"ed25519:{device_id}", own_key)
        verify_signature(device, user_id, ssk_id, ssk_public)


def _check_other_user(c: httpx.Client, user_id: str, result: dict[str, Any]) -> None:
    """Bob's keys as Alice sees them: the same chain, without his user-signing key."""
    device_id = result["bob"]
    r = c.post("/keys/query", json={"device_keys": {user_id: []}})
    assert r.status_code == 200, r.text
    body = r.json()
    master = body["master_keys"][user_id]
    ssk = body["self_signing_keys"][user_id]
    assert user_id not in body.get("user_signing_keys", {})
    master_id, master_public = _only_key(master)
    assert master_public == result["bob_master"]
    ssk_id, ssk_public = _only_key(ssk)
    device = body["device_keys"][user_id][device_id]
    device_key = device["keys"][f"ed25519:{device_id}"]
    verify_signature(master, user_id, f"ed25519:{device_id}", device_key)
    verify_signature(ssk, user_id, master_id, master_public)
    verify_signature(device, user_id, f"ed25519:{device_id}", device_key)
    verify_signature(device, user_id, ssk_id, ssk_public)


def _check_backup_signatures(
    auth_data: dict[str, Any], user_id: str, signers: dict[str, str]
) -> None:
    """A backup's ``auth_data`` is signed by the device that made it and/or the master key."""
    assert isinstance(auth_data["public_key"], str)
    signatures = auth_data["signatures"][user_id]
    assert signatures, auth_data
    assert set(signatures) <= set(signers), signatures
    for key_id in signatures:
        verify_signature(auth_data, user_id, key_id, signers[key_id])


def _check_backup(c: httpx.Client, user_id: str, result: dict[str, Any]) -> None:
    """A1's backup as the server gave it to the SDK; the one A2 made in its place,
    holding the room's sessions again; A1's version gone."""
    master = {f"ed25519:{result['master']}": result["master"]}
    a1 = {f"ed25519:{result['a1']}": result["a1_ed25519"]}
    _check_backup_signatures(result["backup_auth_data"], user_id, {**a1, **master})
    r = c.get("/room_keys/version")
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["version"] == result["new_backup_version"] != result["backup_version"]
    assert info["algorithm"] == BACKUP_ALGORITHM
    assert info["count"] >= 2
    assert isinstance(info["etag"], str)
    assert info["auth_data"]["public_key"] != result["backup_auth_data"]["public_key"]
    a2 = {f"ed25519:{result['a2']}": _device_key(c, user_id, result["a2"])}
    _check_backup_signatures(info["auth_data"], user_id, {**a2, **master})
    r = c.get("/room_keys/keys", params={"version": info["version"]})
    assert r.status_code == 200, r.text
    sessions = r.json()["rooms"][result["room_id"]]["sessions"]
    assert set(result["backed_up_sessions"]) <= set(sessions)
    for key in sessions.values():
        assert {"ephemeral", "ciphertext", "mac"} <= set(key["session_data"])
        assert isinstance(key["first_message_index"], int)
    r = c.get(f"/room_keys/version/{result['backup_version']}")
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND"), r.text


def _device_key(c: httpx.Client, user_id: str, device_id: str) -> str:
    r = c.post("/keys/query", json={"device_keys": {user_id: [device_id]}})
    assert r.status_code == 200, r.text
    return str(r.json()["device_keys"][user_id][device_id]["keys"][f"ed25519:{device_id}"])


def _check_secret_storage(c: httpx.Client, user_id: str, result: dict[str, Any]) -> None:
    def account_data(kind: str) -> dict[str, Any]:
        r = c.get(f"/user/{quote(user_id, safe='')}/account_data/{kind}")
        assert r.status_code == 200, (kind, r.text)
        return dict(r.json())

    key_id = account_data("m.secret_storage.default_key")["key"]
    assert key_id == result["secret_storage_key"]
    description = account_data(f"m.secret_storage.key.{key_id}")
    assert description["algorithm"] == SECRET_STORAGE_ALGORITHM
    assert {"iv", "mac"} <= set(description)
    for secret in (
        "m.cross_signing.master",
        "m.cross_signing.self_signing",
        "m.cross_signing.user_signing",
        "m.megolm_backup.v1",
    ):
        encrypted = account_data(secret)["encrypted"][key_id]
        assert {"iv", "ciphertext", "mac"} <= set(encrypted), secret


def test_js_sdk_rust_crypto(node_modules: Path, tmp_path: Path) -> None:
    config = make_config(tmp_path, rc_message={"per_second": 1000, "burst_count": 1000})
    with running_server(config) as s:
        alice = s.register("cryptoalice", "pw-alice")["user_id"]
        bob = s.register("cryptobob", "pw-bob")["user_id"]
        ran = run_scenario(
            "crypto_scenario.mjs",
            {
                "baseUrl": s.base_url,
                "alice": {"user": "cryptoalice", "password": "pw-alice"},
                "bob": {"user": "cryptobob", "password": "pw-bob"},
            },
            SCENARIO_TIMEOUT,
        )
        lines = ran["stdout"].splitlines()
        assert lines[: len(STEPS)] == [f"ok {step}" for step in STEPS], ran["stdout"]
        result = ran["result"]
        token = s.login("cryptoalice", "pw-alice").json()["access_token"]
        with httpx.Client(
            base_url=s.base_url + V3,
            timeout=30.0,
            headers={"Authorization": f"Bearer {token}"},
        ) as c:
            _check_cross_signing(c, alice, result)
            _check_other_user(c, bob, result)
            _check_backup(c, alice, result)
            _check_secret_storage(c, alice, result)
        log = s.log_text()
    assert result["uia"] == ["no auth needed", "password"]
    assert " 500 " not in log
    assert "Traceback" not in log
