"""Device keys, one-time and fallback keys: /keys/upload, /keys/query, /keys/claim.

Spec: client-server-api modules/end_to_end_encryption.md "Key Distribution" and
keys.yaml. Local users' keys are read here; remote users' go to a :class:`RemoteKeys`
(federation: the device list cache, else the user's server), which answers their
servers as ``failures`` when it cannot reach them. Without federation every remote
server is a failure.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pocketserver.core import e2e_keys as rules
from pocketserver.core.e2e_keys import KeyRejected
from pocketserver.core.identifiers import get_domain, is_valid_user_id
from pocketserver.core.locality import Locality
from pocketserver.e2e.stream import DeviceListStream
from pocketserver.errors import MatrixError, bad_json, invalid_param
from pocketserver.storage import device_lists
from pocketserver.storage import e2e_keys as store
from pocketserver.storage.db import Database
from pocketserver.streams.token import SyncToken

MAX_KEYS_PER_UPLOAD = 1000
MAX_ONE_TIME_KEYS_PER_DEVICE = 10_000
"""Clients keep about 50 (half of what vodozemac's account holds); room for far more."""
MAX_USERS_PER_QUERY = 10_000
MAX_DEVICES_PER_QUERY = 50_000
MAX_CLAIMS = 10_000
FEDERATION_FAILURE = {"status": 503, "message": "federation is not available"}
DEFAULT_TIMEOUT_MS = 10_000
"""How long /keys/query and /keys/claim wait for other servers (the spec's default)."""
MAX_TIMEOUT_MS = 60_000

Parts = dict[str, dict[str, object]]
"""Parts of an answer: e.g. ``device_keys`` -> user ID -> what to answer for them."""
Failures = dict[str, object]
"""Server name -> why it could not be asked (``{"status": ..., "message": ...}``)."""


class RemoteKeys(Protocol):
    """The federation side of /keys/query and /keys/claim
    (:class:`pocketserver.federation.e2e.remote_keys.RemoteKeyClient`)."""

    async def query(
        self, requester: str, wanted: dict[str, dict[str, list[str]]], timeout_s: float
    ) -> tuple[Parts, Failures]:
        """Keys of remote users: ``wanted`` is server -> user ID -> device IDs."""
        ...

    async def claim(
        self, wanted: dict[str, dict[str, dict[str, str]]], timeout_s: float
    ) -> tuple[Parts, Failures]:
        """One-time keys of remote devices: server -> user -> device -> algorithm."""
        ...


class NoFederation:
    """Every remote server is a failure (federation is not set up)."""

    async def query(
        self, requester: str, wanted: dict[str, dict[str, list[str]]], timeout_s: float
    ) -> tuple[Parts, Failures]:
        return {}, _unavailable(wanted)

    async def claim(
        self, wanted: dict[str, dict[str, dict[str, str]]], timeout_s: float
    ) -> tuple[Parts, Failures]:
        return {}, _unavailable(wanted)


def _unavailable(servers: Collection[str]) -> Failures:
    return {server: dict(FEDERATION_FAILURE) for server in sorted(servers)}


def parse_timeout(body: Mapping[str, object]) -> float:
    """The request's ``timeout`` (milliseconds, default 10 s) in seconds, capped.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` for a timeout that is not a number >= 0.
    """
    value = body.get("timeout")
    if value is None:
        value = DEFAULT_TIMEOUT_MS
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise invalid_param("timeout must be a number of milliseconds")
    return min(float(value), MAX_TIMEOUT_MS) / 1000


def rejected(e: KeyRejected) -> MatrixError:
    return MatrixError(400, e.errcode, e.error)


def _user_id(value: str) -> str:
    if not is_valid_user_id(value):
        raise invalid_param(f"not a user ID: {value[:100]}")
    return value


@dataclass(frozen=True, slots=True)
class Upload:
    device_keys: dict[str, object] | None
    one_time_keys: list[tuple[str, str, str]]
    fallback_keys: list[tuple[str, str, str]]


def parse_upload(body: Mapping[str, object], user_id: str, device_id: str) -> Upload:
    """Validate a /keys/upload body.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` / ``M_INVALID_SIGNATURE``.
    """
    try:
        device_keys = None
        if body.get("device_keys") is not None:
            device_keys = rules.check_device_keys(body["device_keys"], user_id, device_id)
        otks = rules.check_one_time_keys(body.get("one_time_keys"))
        fallback = rules.check_one_time_keys(body.get("fallback_keys"), "fallback_keys")
    except KeyRejected as e:
        raise rejected(e) from None
    if len(otks) + len(fallback) > MAX_KEYS_PER_UPLOAD:
        raise invalid_param(f"at most {MAX_KEYS_PER_UPLOAD} keys per upload")
    per_algorithm = [k.algorithm for k in fallback]
    if len(set(per_algorithm)) != len(per_algorithm):
        raise invalid_param("at most one fallback key per algorithm")
    return Upload(
        device_keys,
        [(k.algorithm, k.key_id, store.encode(k.key)) for k in otks],
        [(k.algorithm, k.key_id, store.encode(k.key)) for k in fallback],
    )


class E2eKeys:
    """Uploads, queries and claims of device, one-time and fallback keys."""

    def __init__(
        self,
        db: Database,
        stream: DeviceListStream,
        server_name: str,
        remote: RemoteKeys | None = None,
    ) -> None:
        self.db = db
        self.stream = stream
        self.server_name = server_name
        self.locality = Locality(server_name)
        self.remote: RemoteKeys = remote if remote is not None else NoFederation()
        self.key_count_listeners: list[Callable[[str, str], None]] = []
        """Called with (user ID, device ID) after a write that may have changed the
        device's one-time or fallback keys (/sync caches their counts)."""

    def _key_counts_changed(self, user_id: str, device_id: str) -> None:
        for listener in self.key_count_listeners:
            listener(user_id, device_id)

    async def upload(
        self, user_id: str, device_id: str, body: Mapping[str, object]
    ) -> dict[str, int]:
        """Store the device's keys; return its one-time key counts per algorithm.

        Raises:
            MatrixError: 400 for bad keys or a one-time key ID reused with other content.
        """
        upload = parse_upload(body, user_id, device_id)
        try:
            counts, position = await self.db.write(_upload_txn, user_id, device_id, upload)
        except store.KeyConflictError as e:
            raise invalid_param(str(e)) from None
        except store.KeyLimitError as e:
            raise MatrixError(400, "M_LIMIT_EXCEEDED", str(e)) from None
        self._key_counts_changed(user_id, device_id)
        if position is not None:
            self.stream.committed(position)
        return counts

    async def counts(self, user_id: str, device_id: str) -> tuple[dict[str, int], list[str]]:
        """The device's one-time key counts and its unused fallback key algorithms."""
        return await self.db.read(_counts_txn, user_id, device_id)

    async def query(self, requester: str, body: Mapping[str, object]) -> dict[str, object]:
        """Answer /keys/query for ``requester``.

        Raises:
            MatrixError: 400 ``M_BAD_JSON`` / ``M_INVALID_PARAM`` for a bad request.
        """
        wanted = body.get("device_keys")
        if not isinstance(wanted, dict):
            raise MatrixError(
                400,
                "M_BAD_JSON" if "device_keys" in body else "M_MISSING_PARAM",
                "device_keys must be an object of user IDs",
            )
        if len(wanted) > MAX_USERS_PER_QUERY:
            raise invalid_param(f"at most {MAX_USERS_PER_QUERY} users per query")
        timeout_s = parse_timeout(body)
        local: dict[str, list[str]] = {}
        remote: dict[str, dict[str, list[str]]] = {}
        devices = 0
        for user_id, device_ids in wanted.items():
            _user_id(user_id)
            if not isinstance(device_ids, list) or not all(isinstance(d, str) for d in device_ids):
                raise bad_json("device_keys values must be lists of device IDs")
            devices += len(device_ids)
            if self.locality.is_mine(user_id):
                local[user_id] = device_ids
            else:
                remote.setdefault(get_domain(user_id), {})[user_id] = device_ids
        if devices > MAX_DEVICES_PER_QUERY:
            raise invalid_param(f"at most {MAX_DEVICES_PER_QUERY} devices per query")
        result = await self.db.read(keys_answer_txn, requester, local)
        failures: Failures = {}
        if remote:
            parts, failures = await self.remote.query(requester, remote, timeout_s)
            for name, part in parts.items():
                merged = result.setdefault(name, {})
                assert isinstance(merged, dict)
                merged.update(part)
        result["failures"] = failures
        return result

    async def claim(self, body: Mapping[str, object]) -> dict[str, object]:
        """Answer /keys/claim: one key per requested device and algorithm, atomically.

        Raises:
            MatrixError: 400 for a bad request.
        """
        wanted = body.get("one_time_keys")
        if not isinstance(wanted, dict):
            raise MatrixError(
                400,
                "M_BAD_JSON" if "one_time_keys" in body else "M_MISSING_PARAM",
                "one_time_keys must be an object of user IDs",
            )
        timeout_s = parse_timeout(body)
        claims: list[tuple[str, str, str]] = []
        remote: dict[str, dict[str, dict[str, str]]] = {}
        for user_id, per_device in wanted.items():
            _user_id(user_id)
            if not isinstance(per_device, dict) or not all(
                isinstance(a, str) for a in per_device.values()
            ):
                raise bad_json("one_time_keys values must map device IDs to algorithms")
            if not self.locality.is_mine(user_id):
                remote.setdefault(get_domain(user_id), {})[user_id] = dict(per_device)
                continue
            claims.extend((user_id, d, a) for d, a in per_device.items())
        remote_count = sum(len(d) for users in remote.values() for d in users.values())
        if len(claims) + remote_count > MAX_CLAIMS:
            raise invalid_param(f"at most {MAX_CLAIMS} keys per claim")
        claimed = await self.claim_local(claims)
        failures: Failures = {}
        if remote:
            parts, failures = await self.remote.claim(remote, timeout_s)
            for user_id, devices in parts.get("one_time_keys", {}).items():
                if isinstance(devices, dict):
                    claimed[user_id] = devices
        return {"one_time_keys": claimed, "failures": failures}

    async def claim_local(self, claims: list[tuple[str, str, str]]) -> store.Claimed:
        """Claim ``(user, device, algorithm)`` keys of local devices (a client's
        /keys/claim, or another server's /user/keys/claim)."""
        claimed = await self.db.write(store.claim_keys, claims) if claims else {}
        for user_id, device_id, _ in claims:
            self._key_counts_changed(user_id, device_id)
        return claimed

    async def query_local(
        self, requester: str, wanted: dict[str, list[str]], *, display_names: bool = True
    ) -> dict[str, object]:
        """/keys/query's answer for local users (``requester`` decides which
        signatures and user-signing keys are seen; "" for another server)."""
        return await self.db.read(keys_answer_txn, requester, wanted, display_names)


def _upload_txn(
    conn: sqlite3.Connection, user_id: str, device_id: str, upload: Upload
) -> tuple[dict[str, int], int | None]:
    position = None
    if not store.device_exists(conn, user_id, device_id):
        raise MatrixError(401, "M_UNKNOWN_TOKEN", "the device was deleted", soft_logout=False)
    if upload.device_keys is not None and store.set_device_keys(
        conn, user_id, device_id, upload.device_keys
    ):
        position = store.record_change(conn, user_id, device_id=device_id)
    store.add_one_time_keys(
        conn, user_id, device_id, upload.one_time_keys, MAX_ONE_TIME_KEYS_PER_DEVICE
    )
    store.set_fallback_keys(conn, user_id, device_id, upload.fallback_keys)
    return store.one_time_key_counts(conn, user_id, device_id), position


def _counts_txn(
    conn: sqlite3.Connection, user_id: str, device_id: str
) -> tuple[dict[str, int], list[str]]:
    return (
        store.one_time_key_counts(conn, user_id, device_id),
        store.unused_fallback_algorithms(conn, user_id, device_id),
    )


def with_signatures(
    key: dict[str, object], extra: Mapping[str, Mapping[str, str]] | None
) -> dict[str, object]:
    if not extra:
        return key
    sigs = key.get("signatures")
    merged: dict[str, object] = dict(sigs) if isinstance(sigs, dict) else {}
    for signer, by_key in extra.items():
        old = merged.get(signer)
        merged[signer] = {**(old if isinstance(old, dict) else {}), **by_key}
    return {**key, "signatures": merged}


def keys_answer_txn(
    conn: sqlite3.Connection,
    requester: str,
    wanted: dict[str, list[str]],
    display_names: bool = True,
    rows: Sequence[store.DeviceKeysRow] | None = None,
) -> dict[str, object]:
    """The answer for ``wanted``; ``rows`` are the device keys (default: local ones)."""
    signatures = store.signatures_for(conn, list(wanted), requester)
    device_keys: dict[str, dict[str, object]] = {user_id: {} for user_id in wanted}
    for row in store.device_keys_of(conn, wanted) if rows is None else rows:
        key = with_signatures(row.keys, signatures.get((row.user_id, row.device_id)))
        name = row.display_name if display_names else None
        unsigned = {"device_display_name": name} if name else {}
        device_keys[row.user_id][row.device_id] = {**key, "unsigned": unsigned}
    master: dict[str, object] = {}
    self_signing: dict[str, object] = {}
    user_signing: dict[str, object] = {}
    for user_id, keys in store.cross_signing_keys(conn, list(wanted)).items():
        if "master" in keys:
            k = keys["master"]
            master[user_id] = with_signatures(k.key, signatures.get((user_id, k.public_key)))
        if "self_signing" in keys:
            self_signing[user_id] = keys["self_signing"].key
        if "user_signing" in keys and user_id == requester:
            user_signing[user_id] = keys["user_signing"].key
    return {
        "device_keys": device_keys,
        "master_keys": master,
        "self_signing_keys": self_signing,
        "user_signing_keys": user_signing,
    }


async def key_changes(
    keys: E2eKeys, user_id: str, since: SyncToken, upto: SyncToken | None
) -> dict[str, object]:
    """/keys/changes: the device list changes ``user_id`` should hear of between two
    sync tokens (``upto`` defaults to now; neither side goes past what is committed)."""
    events_now = keys.stream.notifier.position
    lists_now = keys.stream.position()
    events_upto = events_now if upto is None else min(upto.events, events_now)
    lists_upto = lists_now if upto is None else min(upto.device_lists, lists_now)
    found = await keys.db.read(
        device_lists.delta,
        user_id,
        min(since.events, events_upto),
        events_upto,
        min(since.device_lists, lists_upto),
        lists_upto,
    )
    return {"changed": found.changed, "left": found.left}
