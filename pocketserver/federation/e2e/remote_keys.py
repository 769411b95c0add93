"""Our clients' ``/keys/query`` and ``/keys/claim`` for users of other servers.

Spec: client-server-api modules/end_to_end_encryption.md "Tracking the device list
for a user" and keys.yaml; server-server-api.md "End-to-End Encryption". A query is
answered from the device list cache for users whose cached list is fresh (tracked and
not stale). A user asked for whole (no device IDs) who shares a room with our users
and whose list is not fresh is resynced first (``GET /user/devices``, as Synapse), and
answered from the cache it fills. The others are asked of their servers (``POST
/user/keys/query``, one request per server, all at once), and those that share a room
with our users start being tracked (a resync in the background). Claims always go to
the servers (``POST /user/keys/claim``): one-time keys are handed out once, by their
owner's server. Every request gets the client's ``timeout``; a server that fails or does not
answer in time is listed in ``failures``.

What a server answers is kept only for its own users and for the users and devices
asked; key objects must not name another user or device than they are filed under.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from pocketserver.e2e.keys import Failures, Parts, keys_answer_txn, with_signatures
from pocketserver.federation.e2e import parsing
from pocketserver.federation.e2e.device_lists import RemoteDeviceLists
from pocketserver.federation.e2e.requests import (
    USER_KEYS_CLAIM,
    USER_KEYS_QUERY,
    FederationRequests,
    failure,
)
from pocketserver.storage import e2e_keys as key_store
from pocketserver.storage import remote_devices as store
from pocketserver.storage.db import Database

log = logging.getLogger(__name__)

GRACE_S = 0.5
"""Past the request's timeout, how long to wait for a client that overran it."""
MIN_TIMEOUT_S = 1.0
"""What is left of a query's timeout for ``/user/keys/query`` after resyncs, at least."""


class RemoteKeyClient:
    """:class:`pocketserver.e2e.keys.RemoteKeys` over federation."""

    def __init__(
        self, db: Database, lists: RemoteDeviceLists, client: FederationRequests | None
    ) -> None:
        self.db = db
        self.lists = lists
        self.client = client

    async def query(
        self, requester: str, wanted: dict[str, dict[str, list[str]]], timeout_s: float
    ) -> tuple[Parts, Failures]:
        every = [user for users in wanted.values() for user in users]
        fresh = await self.db.read(store.fresh_users, every)
        whole = [
            u for users in wanted.values() for u, d in users.items() if not d and u not in fresh
        ]
        remaining = timeout_s
        if whole and self.client is not None:
            started = trio.current_time()
            fresh |= await self.lists.resync_now(whole, timeout_s)
            elapsed = trio.current_time() - started
            remaining = max(timeout_s - elapsed, min(timeout_s, MIN_TIMEOUT_S))
        cached = {u: d for users in wanted.values() for u, d in users.items() if u in fresh}
        parts: Parts = {"device_keys": {}, "master_keys": {}, "self_signing_keys": {}}
        if cached:
            answer = await self.db.read(_cached_txn, requester, cached)
            for name in parts:
                part = answer.get(name)
                if isinstance(part, dict):
                    parts[name].update(part)
        to_ask = {
            server: {u: d for u, d in users.items() if u not in fresh}
            for server, users in wanted.items()
        }
        to_ask = {server: users for server, users in to_ask.items() if users}
        if not to_ask:
            return parts, {}
        await self.lists.track([u for users in to_ask.values() for u in users])
        answers, failures = await self._gather(
            {
                server: _bind_post(self.client, server, USER_KEYS_QUERY, {"device_keys": users})
                for server, users in to_ask.items()
            },
            remaining,
        )
        asked_masters: list[str] = []
        for server, answer in answers.items():
            for name, part in _query_answer(server, to_ask[server], answer).items():
                parts[name].update(part)
            asked_masters.extend(u for u in to_ask[server] if u in parts["master_keys"])
        if asked_masters:
            mine = await self.db.read(key_store.signatures_for, asked_masters, requester)
            for user_id in asked_masters:
                key = parts["master_keys"][user_id]
                assert isinstance(key, dict)
                public = parsing.cross_signing_key(user_id, "master", key)
                if public is not None:
                    parts["master_keys"][user_id] = with_signatures(
                        key, mine.get((user_id, public[0]))
                    )
        return parts, failures

    async def claim(
        self, wanted: dict[str, dict[str, dict[str, str]]], timeout_s: float
    ) -> tuple[Parts, Failures]:
        answers, failures = await self._gather(
            {
                server: _bind_post(self.client, server, USER_KEYS_CLAIM, {"one_time_keys": users})
                for server, users in wanted.items()
            },
            timeout_s,
        )
        claimed: dict[str, object] = {}
        for server, answer in answers.items():
            claimed.update(_claim_answer(server, wanted[server], answer))
        return {"one_time_keys": claimed}, failures

    async def _gather(
        self, calls: Mapping[str, Callable[[float], Awaitable[Any]] | None], timeout_s: float
    ) -> tuple[dict[str, Any], Failures]:
        """Run one call per server at once, each with ``timeout_s``; the answers and
        the failures (errors, and servers that did not answer in time)."""
        answers: dict[str, Any] = {}
        failures: Failures = {}

        async def one(server: str, call: Callable[[float], Awaitable[Any]]) -> None:
            try:
                answers[server] = await call(timeout_s)
            except Exception as e:
                log.info("key request to %s failed: %s", server, e)
                failures[server] = failure(server, e)

        with trio.move_on_after(timeout_s + GRACE_S):
            async with trio.open_nursery() as nursery:
                for server, call in calls.items():
                    if call is None:
                        failures[server] = {"status": 503, "message": "federation is not available"}
                    else:
                        nursery.start_soon(one, server, call)
        for server in calls:
            if server not in answers and server not in failures:
                failures[server] = failure(server, None)
        return answers, failures


def _bind_post(
    client: FederationRequests | None, server: str, path: str, body: object
) -> Callable[[float], Awaitable[Any]] | None:
    if client is None:
        return None

    async def call(timeout_s: float) -> Any:
        return await client.post_json(server, path, body, timeout_s=timeout_s)

    return call


def _cached_txn(
    conn: sqlite3.Connection, requester: str, wanted: dict[str, list[str]]
) -> dict[str, object]:
    rows = store.device_keys_of(conn, wanted)
    return keys_answer_txn(conn, requester, wanted, True, rows)


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def _query_answer(
    server: str, asked: Mapping[str, list[str]], answer: object
) -> dict[str, dict[str, object]]:
    """The parts of a ``/user/keys/query`` answer we keep (see the module docstring)."""
    out: dict[str, dict[str, object]] = {
        "device_keys": {},
        "master_keys": {},
        "self_signing_keys": {},
    }
    body = _mapping(answer)
    device_keys = _mapping(body.get("device_keys"))
    for user_id, device_ids in asked.items():
        if parsing.user_of(server, user_id) is None:
            continue
        only = set(device_ids)
        kept: dict[str, object] = {}
        for device_id, keys in _mapping(device_keys.get(user_id)).items():
            if only and device_id not in only:
                continue
            checked = parsing.device_keys(user_id, device_id, keys)  # as for the cache
            if checked is None:
                continue
            unsigned = _mapping(_mapping(keys).get("unsigned"))
            kept[device_id] = {**checked, "unsigned": dict(unsigned)}
        if user_id in device_keys:
            out["device_keys"][user_id] = kept
        for usage, name in (("master", "master_keys"), ("self_signing", "self_signing_keys")):
            key = parsing.cross_signing_key(user_id, usage, _mapping(body.get(name)).get(user_id))
            if key is not None:
                out[name][user_id] = key[1]
    return out


def _claim_answer(
    server: str, asked: Mapping[str, Mapping[str, str]], answer: object
) -> dict[str, object]:
    """The one-time keys of a ``/user/keys/claim`` answer that were asked for."""
    claimed = _mapping(_mapping(answer).get("one_time_keys"))
    out: dict[str, object] = {}
    for user_id, devices in asked.items():
        if parsing.user_of(server, user_id) is None:
            continue
        for device_id, algorithm in devices.items():
            keys = _mapping(_mapping(claimed.get(user_id)).get(device_id))
            kept = {
                key_id: key
                for key_id, key in keys.items()
                if key_id.startswith(f"{algorithm}:") and isinstance(key, str | dict)
            }
            if kept:
                per_user = out.setdefault(user_id, {})
                assert isinstance(per_user, dict)
                per_user[device_id] = kept
    return out
