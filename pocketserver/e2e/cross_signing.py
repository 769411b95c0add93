"""Cross-signing keys and signatures: /keys/device_signing/upload, /keys/signatures/upload.

Spec: client-server-api modules/end_to_end_encryption.md "Cross-signing" and
cross_signing.yaml. Every check runs in the write transaction that stores the keys,
so what is validated is what is replaced.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from pocketserver.core import e2e_keys as rules
from pocketserver.core.e2e_keys import ED25519, KeyRejected
from pocketserver.e2e.keys import rejected
from pocketserver.e2e.stream import DeviceListStream
from pocketserver.errors import MatrixError, bad_json, forbidden, invalid_param
from pocketserver.storage import e2e_keys as store
from pocketserver.storage.db import Database

FIELDS = {
    "master_key": "master",
    "self_signing_key": "self_signing",
    "user_signing_key": "user_signing",
}
MAX_SIGNED_OBJECTS = 1000


def parse_keys(
    body: Mapping[str, object], user_id: str
) -> dict[str, tuple[str, dict[str, object]]]:
    """usage -> (public key, key object) for the keys in a device_signing/upload body.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` for a malformed key.
    """
    out = {}
    for field, usage in FIELDS.items():
        key = body.get(field)
        if key is None:
            continue
        try:
            public_key = rules.check_cross_signing_key(key, user_id, usage)
        except KeyRejected as e:
            raise rejected(e) from None
        assert isinstance(key, dict)
        out[usage] = (public_key, key)
    return out


class CrossSigning:
    def __init__(self, db: Database, stream: DeviceListStream) -> None:
        self.db = db
        self.stream = stream

    async def needs_auth(self, user_id: str, body: Mapping[str, object]) -> bool:
        """Whether this upload needs UIA: only when it would replace a stored key.

        Spec (cross_signing.yaml, v1.11): no UIA while the user has no master key, or
        when every key in the request is exactly the one stored.
        """
        keys = parse_keys(body, user_id)
        stored = (await self.db.read(store.cross_signing_keys, [user_id])).get(user_id, {})
        if "master" not in stored:
            return False
        return any(
            usage not in stored or stored[usage].key != key for usage, (_, key) in keys.items()
        )

    async def upload_keys(self, user_id: str, body: Mapping[str, object]) -> None:
        """Validate and store cross-signing keys.

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` (malformed), ``M_MISSING_PARAM`` (no
                master key to check against), ``M_INVALID_SIGNATURE`` (not signed by the
                master key); 403 ``M_FORBIDDEN`` (a public key is one of the user's
                device IDs).
        """
        keys = parse_keys(body, user_id)
        if not keys:
            return
        position = await self.db.write(_upload_keys_txn, user_id, keys)
        if position is not None:
            self.stream.committed(position)

    async def upload_signatures(
        self, user_id: str, body: Mapping[str, object]
    ) -> dict[str, dict[str, dict[str, str]]]:
        """Verify and store signatures; return the failures per user and key ID.

        Raises:
            MatrixError: 400 ``M_BAD_JSON`` for a body that is not user -> key -> object.
        """
        count = 0
        for target, objects in body.items():
            if not isinstance(objects, dict) or not all(
                isinstance(o, dict) for o in objects.values()
            ):
                raise bad_json(f"signatures for {target[:100]} must map key IDs to objects")
            count += len(objects)
        if count > MAX_SIGNED_OBJECTS:
            raise invalid_param(f"at most {MAX_SIGNED_OBJECTS} signed objects per request")
        failures, position = await self.db.write(_signatures_txn, user_id, body)
        if position is not None:
            self.stream.committed(position)
        return failures


def _upload_keys_txn(
    conn: sqlite3.Connection, user_id: str, keys: dict[str, tuple[str, dict[str, object]]]
) -> int | None:
    stored = store.cross_signing_keys(conn, [user_id]).get(user_id, {})
    if "master" in keys:
        master_public = keys["master"][0]
    elif "master" in stored:
        master_public = stored["master"].public_key
    else:
        raise MatrixError(400, "M_MISSING_PARAM", "no master key is available")
    for usage in ("self_signing", "user_signing"):
        if usage in keys:
            try:
                rules.check_signature(
                    keys[usage][1], user_id, f"{ED25519}:{master_public}", master_public
                )
            except KeyRejected as e:
                raise rejected(e) from None
    devices = store.device_ids(conn, user_id)
    for public_key, _ in keys.values():
        if public_key in devices:
            raise forbidden("a cross-signing public key is the ID of one of your devices")
    changed: set[str] = set()
    for usage, (public_key, key) in keys.items():
        if usage in stored and stored[usage].key == key:
            continue
        store.set_cross_signing_key(conn, user_id, usage, public_key, key)
        changed.add(usage)
    if not changed:
        return None
    # Only the owner sees their user-signing key: a change of it alone is news for
    # them only (as Synapse; SyTest 08-cross-signing "Changing user-signing key
    # notifies local users" checks the others do not hear of it).
    private = changed == {"user_signing"}
    return store.record_change(conn, user_id, only_for=user_id if private else None)


def _failure(errcode: str, error: str) -> dict[str, str]:
    return {"errcode": errcode, "error": error}


def _signatures_txn(
    conn: sqlite3.Connection, user_id: str, body: Mapping[str, object]
) -> tuple[dict[str, dict[str, dict[str, str]]], int | None]:
    mine = store.cross_signing_keys(conn, [user_id]).get(user_id, {})
    failures: dict[str, dict[str, dict[str, str]]] = {}
    changed: dict[str, set[str | None]] = {}
    devices = store.device_ids(conn, user_id)
    for target, objects in body.items():
        assert isinstance(objects, dict)
        for key_id, obj in objects.items():
            try:
                if _sign_one(conn, user_id, mine, target, key_id, obj):
                    # A new signature on one of the user's devices changes that device
                    # (its keys as served now carry it); on a master key, no device.
                    device = key_id if target == user_id and key_id in devices else None
                    changed.setdefault(target, set()).add(device)
            except KeyRejected as e:
                failures.setdefault(target, {})[key_id] = _failure(e.errcode, e.error)
    position = None
    for target in sorted(changed):
        # A signature on another user's master key is made with the user-signing key:
        # only the signer sees it, so only they hear of the change.
        only_for = None if target == user_id else user_id
        for device in sorted(changed[target], key=lambda d: d or ""):
            position = store.record_change(conn, target, only_for, device_id=device)
    return failures, position


def _sign_one(
    conn: sqlite3.Connection,
    user_id: str,
    mine: Mapping[str, store.CrossSigningKey],
    target: str,
    key_id: str,
    obj: dict[str, object],
) -> bool:
    """Verify and store the new signatures by ``user_id`` on one key; True if any.

    Accepted (end_to_end_encryption.md "Cross-signing"): the user's own devices signed
    by their self-signing key, their own master key signed by one of their devices
    (or other key of theirs), another user's master key signed by their user-signing key.

    Raises:
        KeyRejected: ``M_NOT_FOUND`` for an unknown key, ``M_INVALID_SIGNATURE`` for a
            key that does not match the stored one or a missing or bad signature.
    """
    theirs = store.cross_signing_keys(conn, [target]).get(target, {})
    master = theirs.get("master")
    signers: dict[str, str]  # signer key ID -> public key
    if master is not None and key_id == master.public_key:
        stored = master.key
        if target == user_id:
            signers = _device_signing_keys(conn, user_id)
        elif "user_signing" in mine:
            usk = mine["user_signing"].public_key
            signers = {f"{ED25519}:{usk}": usk}
        else:
            raise KeyRejected("M_INVALID_SIGNATURE", "you have no user-signing key")
    elif target == user_id:
        device_keys = store.get_device_keys(conn, user_id, key_id)
        if device_keys is None:
            raise KeyRejected("M_NOT_FOUND", f"unknown key {key_id}")
        stored = device_keys
        if "self_signing" not in mine:
            raise KeyRejected("M_INVALID_SIGNATURE", "you have no self-signing key")
        ssk = mine["self_signing"].public_key
        signers = {f"{ED25519}:{ssk}": ssk}
    else:
        raise KeyRejected("M_NOT_FOUND", f"unknown master key {key_id} of {target}")
    if rules.without_signatures(obj) != rules.without_signatures(stored):
        raise KeyRejected("M_INVALID_SIGNATURE", "the signed object does not match the key")
    new = {k: v for k, v in rules.new_signatures(obj, user_id, stored).items() if k in signers}
    if not new:
        raise KeyRejected("M_INVALID_SIGNATURE", "no new signature by a key allowed to sign it")
    for signer_key_id, signature in new.items():
        signed = {**stored, "signatures": {user_id: {signer_key_id: signature}}}
        rules.check_signature(signed, user_id, signer_key_id, signers[signer_key_id])
    for signer_key_id, signature in new.items():
        store.add_signature(conn, target, key_id, user_id, signer_key_id, signature)
    return True


def _device_signing_keys(conn: sqlite3.Connection, user_id: str) -> dict[str, str]:
    """``ed25519:<device ID>`` -> public key of each of the user's devices with keys."""
    out = {}
    for row in store.device_keys_of(conn, {user_id: []}):
        keys = row.keys.get("keys")
        own = f"{ED25519}:{row.device_id}"
        if isinstance(keys, dict) and isinstance(keys.get(own), str):
            out[own] = keys[own]
    return out
