"""Key backup restore with matrix-nio (issue #5): alice's first device and bob chat in an
encrypted room; alice's device backs up its megolm sessions to the server with
``m.megolm_backup.v1.curve25519-aes-sha2``; a third device of alice, knowing only the
backup decryption key, restores them and reads the whole history.

nio has no key-backup client, so the test plays that part from the spec
(:mod:`tests.e2e.backup_crypto`): backup creation with signed ``auth_data``, upload,
download, decryption, and import through nio's own key import. The first tests check
that module alone (round trip, interop with vodozemac's libolm-compatible PkEncryption,
the user-facing key form). Skipped without nio's ``e2e`` extra.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.e2e import backup_crypto as bc
from tests.harness import RunningServer

nio = pytest.importorskip("nio")
vodozemac = pytest.importorskip("vodozemac")

from nio.crypto.key_export import decrypt_and_read, encrypt_and_save  # noqa: E402

from tests.e2e.nio_crypto import encrypted_client, encrypted_room, sync_keys  # noqa: E402

V3 = "/_matrix/client/v3"
EXPORT_PASSPHRASE = "export passphrase"
EXPORT_ROUNDS = 1000  # PBKDF2 rounds of the key-export files: test speed, not strength

SESSION = {
    "algorithm": bc.MEGOLM,
    "forwarding_curve25519_key_chain": ["hPQNcabIABgGnx3/ACv/jmMmiQHoeFfuLB17tzWp6Hw"],
    "sender_key": "RF3s+E7RkTQTGF2d8Deol0FkQvgII2aJDf3/Jp5mxVU",
    "sender_claimed_keys": {"ed25519": "aj40p+aw64yPIdsxoog8jhPu9i7l7NcFRecuOQblE3Y"},
    "session_key": "AgAAAADxKHa9uFxcXzwYoNueL5Xqi69IkD4sni8Llf",
    "shared_history": False,
    "note": "ünïcödé ✓",
}


# --- backup_crypto alone --------------------------------------------------------------


def _vodozemac_decrypt(private_key: bytes, session_data: dict[str, str]) -> bytes:
    pk = vodozemac.PkDecryption.from_key(vodozemac.Curve25519SecretKey.from_bytes(private_key))
    message = vodozemac.Message(
        bc.b64decode(session_data["ciphertext"]),
        bc.b64decode(session_data["mac"]),
        bc.b64decode(session_data["ephemeral"]),
    )
    return bytes(pk.decrypt(message))


def _vodozemac_encrypt(public_key: str, plaintext: bytes) -> dict[str, str]:
    pk = vodozemac.PkEncryption.from_key(vodozemac.Curve25519PublicKey.from_base64(public_key))
    message = pk.encrypt(plaintext)
    return {
        "ephemeral": bc.b64encode(bytes(message.ephemeral_key)),
        "ciphertext": bc.b64encode(bytes(message.ciphertext)),
        "mac": bc.b64encode(bytes(message.mac)),
    }


def test_backup_crypto_round_trip() -> None:
    private = bc.generate_private_key()
    public = bc.public_key(private)
    data = bc.encrypt_session(public, SESSION)
    assert set(data) == {"ephemeral", "ciphertext", "mac"}
    assert len(bc.b64decode(data["ephemeral"])) == 32
    assert len(bc.b64decode(data["mac"])) == 8
    assert len(bc.b64decode(data["ciphertext"])) % 16 == 0
    assert not any(v.endswith("=") for v in data.values())  # unpadded base64
    assert bc.decrypt_session(private, data) == SESSION
    # A fresh ephemeral key each time.
    assert bc.encrypt_session(public, SESSION)["ephemeral"] != data["ephemeral"]


def test_backup_crypto_matches_vodozemac_both_ways() -> None:
    private = bc.generate_private_key()
    public = bc.public_key(private)
    pk = vodozemac.PkDecryption.from_key(vodozemac.Curve25519SecretKey.from_bytes(private))
    assert pk.public_key.to_base64() == public
    for size in (0, 1, 15, 16, 17, 1000):
        plaintext = bytes(range(256)) * 4
        plaintext = plaintext[:size]
        assert _vodozemac_decrypt(private, bc.encrypt(public, plaintext)) == plaintext
        assert bc.decrypt(private, _vodozemac_encrypt(public, plaintext)) == plaintext


def test_wrong_key_fails_the_mac_check() -> None:
    private, wrong = bc.generate_private_key(), bc.generate_private_key()
    data = bc.encrypt_session(bc.public_key(private), SESSION)
    with pytest.raises(bc.BackupDecryptionError, match="MAC mismatch"):
        bc.decrypt_session(wrong, data)
    with pytest.raises(vodozemac.PkDecodeException, match="MAC tag mismatch"):
        _vodozemac_decrypt(wrong, data)


def test_mac_is_over_the_empty_string_not_the_ciphertext() -> None:
    """The spec's warning on step 5: the MAC does not cover the ciphertext, so a changed
    first block passes the MAC check (in vodozemac too) and only garbles the plaintext."""
    private = bc.generate_private_key()
    plaintext = b"A" * 64
    data = bc.encrypt(bc.public_key(private), plaintext)
    raw = bytearray(bc.b64decode(data["ciphertext"]))
    raw[0] ^= 0xFF
    tampered = {**data, "ciphertext": bc.b64encode(bytes(raw))}
    for decrypt in (bc.decrypt, _vodozemac_decrypt):
        garbled = decrypt(private, tampered)
        assert len(garbled) == len(plaintext)
        assert garbled[:16] != plaintext[:16]
        assert garbled[16] == plaintext[16] ^ 0xFF
        assert garbled[17:] == plaintext[17:]


def test_recovery_key_form() -> None:
    private = bc.generate_private_key()
    text = bc.encode_recovery_key(private)
    assert re.fullmatch(r"([1-9A-HJ-NP-Za-km-z]{4} ){11}[1-9A-HJ-NP-Za-km-z]{4}", text), text
    assert bc.decode_recovery_key(text) == private
    assert bc.decode_recovery_key("  " + text.replace(" ", "\n") + " ") == private
    assert bc.decode_recovery_key(bc.encode_recovery_key(bytes(32))) == bytes(32)
    typo = text[:5] + ("2" if text[5] != "2" else "3") + text[6:]
    with pytest.raises(ValueError, match="not a backup decryption key"):
        bc.decode_recovery_key(typo)
    with pytest.raises(ValueError, match="not a backup decryption key"):
        bc.decode_recovery_key(text[:-5])
    with pytest.raises(ValueError, match="not a backup decryption key"):
        bc.decode_recovery_key("0" + text[1:])  # not in the alphabet


# --- through the server with nio ------------------------------------------------------

CONVERSATION = [
    ("a", "hello bob"),
    ("b", "hello alice"),
    ("a", "the cake is in the fridge 🎂"),
    ("b", "noted, thanks"),
]
"""Who ("a": alice, "b": bob) says what, in order; each reads the other's line."""


@dataclass
class Backup:
    version: str
    etag: str
    sessions: dict[str, dict[str, Any]]
    """Session ID -> the ``BackedUpSessionData`` the server must have kept."""


def _first_index(session_key: str) -> int:
    """The message index of a key in megolm's session-export format (version byte 1)."""
    raw = bc.b64decode(session_key)
    assert raw[0] == 1, raw[0]
    return int.from_bytes(raw[1:5], "big")


def _backed_up(exported: dict[str, Any], session_key: str | None = None) -> dict[str, Any]:
    """The ``BackedUpSessionData`` of an ``ExportedSessionData`` (room and session ID
    travel in the backup's structure instead), optionally with another export of its key."""
    fields = ("algorithm", "forwarding_curve25519_key_chain", "sender_key", "sender_claimed_keys")
    content = {k: exported[k] for k in fields}
    content["session_key"] = session_key or exported["session_key"]
    return content


def _key_data(public: str, content: dict[str, Any], *, verified: bool) -> dict[str, Any]:
    """A ``KeyBackupData``: the metadata in clear, the session encrypted for the backup."""
    return {
        "first_message_index": _first_index(content["session_key"]),
        "forwarded_count": len(content["forwarding_curve25519_key_chain"]),
        "is_verified": verified,
        "session_data": bc.encrypt_session(public, content),
    }


def _ok(r: httpx.Response) -> Any:
    assert r.status_code == 200, r.text
    return r.json()


def _http(server: RunningServer, access_token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.base_url + V3,
        timeout=30.0,
        headers={"Authorization": f"Bearer {access_token}"},
    )


def _q(s: str) -> str:
    return quote(s, safe="")


async def _send(client: nio.AsyncClient, room_id: str, body: str) -> None:
    sent = await client.room_send(
        room_id,
        "m.room.message",
        {"msgtype": "m.text", "body": body},
        ignore_unverified_devices=True,
    )
    assert isinstance(sent, nio.RoomSendResponse), sent


async def _wait_text(client: nio.AsyncClient, room_id: str, want: tuple[str, str]) -> None:
    """Sync until the (sender, body) ``want`` arrives decrypted."""
    seen: list[tuple[str, str]] = []
    for _ in range(30):
        resp = await sync_keys(client)
        room = resp.rooms.join.get(room_id)
        for event in room.timeline.events if room is not None else []:
            assert not isinstance(event, nio.MegolmEvent), f"could not decrypt {event}"
            if isinstance(event, nio.RoomMessageText):
                seen.append((event.sender, event.body))
        if want in seen:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"wanted {want}, saw {seen}")


async def _chat(a1: nio.AsyncClient, bob: nio.AsyncClient) -> str:
    """A1 makes an encrypted room with bob; they talk (``CONVERSATION``); its room ID."""
    room_id = await encrypted_room(a1, bob)
    for who, body in CONVERSATION:
        writer, reader = (a1, bob) if who == "a" else (bob, a1)
        await _send(writer, room_id, body)
        await _wait_text(reader, room_id, (writer.user_id, body))
    return room_id


async def _exported_sessions(client: nio.AsyncClient, path: Path) -> list[dict[str, Any]]:
    """The device's inbound megolm sessions, through nio's own key export."""
    await client.export_keys(str(path), EXPORT_PASSPHRASE, EXPORT_ROUNDS)
    sessions = json.loads(decrypt_and_read(str(path), EXPORT_PASSPHRASE))
    assert isinstance(sessions, list)
    return sessions


async def _back_up(
    server: RunningServer, a1: nio.AsyncClient, room_id: str, private: bytes, export: Path
) -> Backup:
    """A1 creates a signed backup version and uploads all its sessions; on the way, the
    server's replacement rules (a better key replaces, worse ones do not)."""
    public = bc.public_key(private)
    auth_data: dict[str, Any] = {"public_key": public}
    signature = a1.olm.sign_json(auth_data)
    auth_data["signatures"] = {a1.user_id: {f"ed25519:{a1.device_id}": signature}}

    sessions = await _exported_sessions(a1, export)
    own_key = a1.olm.account.identity_keys["curve25519"]
    assert {s["room_id"] for s in sessions} == {room_id}
    for s in sessions:
        stored = a1.olm.inbound_group_store.get(room_id, s["sender_key"], s["session_id"])
        assert _first_index(s["session_key"]) == stored.first_known_index == 0
    own = [s for s in sessions if s["sender_key"] == own_key]
    bobs = [s for s in sessions if s["sender_key"] != own_key]
    assert own, sessions
    assert bobs, sessions
    # Bob's session as A1 could have had it from message 1 on: it cannot decrypt message 0.
    bob0 = bobs[0]
    bob_stored = a1.olm.inbound_group_store.get(room_id, bob0["sender_key"], bob0["session_id"])
    later = _backed_up(bob0, bob_stored.export_session(1))
    assert _first_index(later["session_key"]) == 1

    def key(s: dict[str, Any], content: dict[str, Any] | None = None, **kw: Any) -> dict:
        data = _key_data(public, content or _backed_up(s), verified=s["sender_key"] == own_key)
        return {**data, **kw}

    room_path = f"/room_keys/keys/{_q(room_id)}"
    bob_path = f"{room_path}/{_q(bob0['session_id'])}"
    async with _http(server, a1.access_token) as http:
        body = {"algorithm": bc.ALGORITHM, "auth_data": auth_data}
        version = _ok(await http.post("/room_keys/version", json=body))["version"]
        q = {"version": version}
        # Everything, bob's first session only from message 1 on.
        uploads = {s["session_id"]: key(s, later if s is bob0 else None) for s in sessions}
        body = {"rooms": {room_id: {"sessions": uploads}}}
        put = _ok(await http.put("/room_keys/keys", params=q, json=body))
        assert put["count"] == len(sessions)

        # The key from message 0 is better: it replaces (same count, new etag).
        best = key(bob0)
        better = _ok(await http.put(bob_path, params=q, json=best))
        assert better["count"] == len(sessions)
        assert better["etag"] != put["etag"]
        assert _ok(await http.get(bob_path, params=q)) == best

        # Worse keys do not: a later first index, more forwards, unverified vs verified.
        for s, worse in [
            (bob0, key(bob0, later)),
            (bob0, {**best, "forwarded_count": 1}),
            (own[0], key(own[0], is_verified=False)),
        ]:
            body = {"sessions": {s["session_id"]: worse}}
            assert _ok(await http.put(room_path, params=q, json=body)) == better, worse
        assert _ok(await http.get(bob_path, params=q)) == best
        info = _ok(await http.get("/room_keys/version"))
    assert (info["version"], info["count"], info["etag"]) == (
        version,
        len(sessions),
        better["etag"],
    )
    return Backup(version, better["etag"], {s["session_id"]: _backed_up(s) for s in sessions})


async def _history(client: nio.AsyncClient, room_id: str) -> list[nio.Event]:
    """The room's messages (decrypted or not), oldest first, via ``/messages`` from the
    latest sync token back to the start."""
    events: list[nio.Event] = []
    token = client.next_batch
    for _ in range(20):
        resp = await client.room_messages(room_id, start=token, limit=20)
        assert isinstance(resp, nio.RoomMessagesResponse), resp
        events.extend(resp.chunk)
        if not resp.chunk or resp.end is None or resp.end == token:
            break
        token = resp.end
    kinds = (nio.MegolmEvent, nio.RoomMessageText)
    return [e for e in reversed(events) if isinstance(e, kinds)]


async def _download(
    server: RunningServer, a3: nio.AsyncClient, recovery_key: str, a1_device: str, backup: Backup
) -> list[dict[str, Any]]:
    """A3 checks the backup's version and trust, downloads and decrypts every session;
    returns them as ``ExportedSessionData``."""
    private = bc.decode_recovery_key(recovery_key)
    async with _http(server, a3.access_token) as http:
        info = _ok(await http.get("/room_keys/version"))
        assert _ok(await http.get(f"/room_keys/version/{backup.version}")) == info
        keys = _ok(await http.get("/room_keys/keys", params={"version": backup.version}))
    assert info["algorithm"] == bc.ALGORITHM
    assert (info["version"], info["count"], info["etag"]) == (
        backup.version,
        len(backup.sessions),
        backup.etag,
    )
    # Trusted both ways: the typed key derives its public key, and A1 signed it.
    auth_data = info["auth_data"]
    assert auth_data["public_key"] == bc.public_key(private)
    a1_device_keys = a3.device_store[a3.user_id][a1_device]
    a1_key = a1_device_keys.ed25519
    assert bc.verify_signature(auth_data, a3.user_id, a1_device, a1_key)
    forged = {**auth_data, "public_key": bc.public_key(bc.generate_private_key())}
    assert not bc.verify_signature(forged, a3.user_id, a1_device, a1_key)

    [(room_id, room)] = keys["rooms"].items()
    assert set(room["sessions"]) == set(backup.sessions)
    wrong = bc.generate_private_key()
    exported = []
    for session_id, data in room["sessions"].items():
        with pytest.raises(bc.BackupDecryptionError, match="MAC mismatch"):
            bc.decrypt_session(wrong, data["session_data"])
        content = bc.decrypt_session(private, data["session_data"])
        assert content == backup.sessions[session_id]
        assert data["first_message_index"] == _first_index(content["session_key"]) == 0
        assert data["forwarded_count"] == 0
        assert data["is_verified"] == (content["sender_key"] == a1_device_keys.curve25519)
        exported.append({**content, "room_id": room_id, "session_id": session_id})
    return exported


async def _import(client: nio.AsyncClient, sessions: list[dict[str, Any]], path: Path) -> None:
    """Import sessions the way a nio user does: a key-export file and ``import_keys``."""
    data = json.dumps(sessions).encode()
    encrypt_and_save(data, str(path), EXPORT_PASSPHRASE, EXPORT_ROUNDS)
    await client.import_keys(str(path), EXPORT_PASSPHRASE)


def test_third_device_restores_history_from_key_backup(
    server: RunningServer, new_user: str, tmp_path: Path
) -> None:
    alice_id = server.register(new_user + "a")["user_id"]
    bob_id = server.register(new_user + "b")["user_id"]
    for name in ("a1", "bob", "a3"):
        (tmp_path / name).mkdir()
    expected = [(alice_id if who == "a" else bob_id, body) for who, body in CONVERSATION]

    async def scenario() -> None:
        a1 = await encrypted_client(server, alice_id, tmp_path / "a1", "alice laptop")
        bob = await encrypted_client(server, bob_id, tmp_path / "bob", "bob phone")
        private = bc.generate_private_key()
        try:
            room_id = await _chat(a1, bob)
            backup = await _back_up(server, a1, room_id, private, tmp_path / "a1-keys.txt")
            a1_device = a1.device_id
        finally:
            # A1 and bob go quiet: A3 can get the old keys from the backup only.
            await a1.close()
            await bob.close()
        recovery_key = bc.encode_recovery_key(private)  # what alice wrote down

        a3 = await encrypted_client(server, alice_id, tmp_path / "a3", "alice new phone")
        try:
            for _ in range(3):
                await sync_keys(a3)
            before = await _history(a3, room_id)
            assert len(before) == len(expected)
            assert all(isinstance(e, nio.MegolmEvent) for e in before), before

            sessions = await _download(server, a3, recovery_key, a1_device, backup)
            await _import(a3, sessions, tmp_path / "a3-import.txt")

            after = await _history(a3, room_id)
            assert not [e for e in after if isinstance(e, nio.MegolmEvent)], after
            assert [(e.sender, e.body) for e in after] == expected
        finally:
            await a3.close()

    asyncio.run(scenario())


def test_session_ids_with_slash_and_plus(server: RunningServer, new_user: str) -> None:
    """Megolm session IDs are standard base64: the per-session routes take them escaped."""
    token = server.register(new_user)["access_token"]
    room, session_id = "!room:test.local", "ab/cd+ef/gh"
    private = bc.generate_private_key()
    content = {**SESSION, "session_key": bc.b64encode(bytes([1]) + bytes(4) + bytes(160))}
    key = _key_data(bc.public_key(private), content, verified=False)
    path = f"/room_keys/keys/{_q(room)}/{_q(session_id)}"

    async def scenario() -> None:
        async with _http(server, token) as http:
            body = {"algorithm": bc.ALGORITHM, "auth_data": {"public_key": "x"}}
            q = {"version": _ok(await http.post("/room_keys/version", json=body))["version"]}
            assert _ok(await http.put(path, params=q, json=key))["count"] == 1
            assert _ok(await http.get(path, params=q)) == key
            everything = _ok(await http.get("/room_keys/keys", params=q))
            assert everything == {"rooms": {room: {"sessions": {session_id: key}}}}
            assert _ok(await http.delete(path, params=q))["count"] == 0
            r = await http.get(path, params=q)
            assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")

    asyncio.run(scenario())
