"""The keyring: other servers' signing keys, fetched, checked, stored and used.

Spec: server-server-api.md "Retrieving server keys", "Validating hashes and signatures
on received events", room version 5 "Signing key validity period".

Where a key comes from, in order: this server's own keys (from the config, never
fetched); the in-memory cache (bounded by the memory budget) and the ``server_keys``
table; the server itself (``GET /_matrix/key/v2/server``); and, only for what the
server did not give us, each of ``trusted_key_servers`` (one ``POST
/_matrix/key/v2/query`` per notary for every missing key, ``minimum_valid_until_ts``
always set). Synapse asks the notaries before the server; asking the server first
tells a notary only about servers that do not answer.

Fetches of one server are shared by concurrent callers, and one answer serves all of
that server's key IDs. HTTP goes through an injected :class:`KeyFetchClient`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import nacl.signing
import trio

from pocketserver.cache import LruCache, MemoryBudget
from pocketserver.config.model import OldSigningKey, TrustedKeyServer
from pocketserver.core.crypto import (
    SignatureError,
    decode_base64,
    encode_canonical_json,
    key_id,
    make_server_keys_response,
    sign_json,
    verify_signed_json,
)
from pocketserver.core.event_signing import required_signers
from pocketserver.core.redaction import redact
from pocketserver.core.room_versions import get_room_version
from pocketserver.core.server_keys import (
    KeyResponseError,
    ServerKey,
    is_compromised,
    named_verify_key,
    parse_key_response,
    signing_key_ids,
)
from pocketserver.storage import server_keys as store
from pocketserver.storage.db import Database

log = logging.getLogger(__name__)

KEY_FETCH_TIMEOUT_S = 15.0
"""One key request (a server's own answer or a notary's)."""
MAX_CONCURRENT_FETCHES = 8
CACHE_SHARE = 0.005
MAX_NOTARY_ENTRIES = 1000
"""Entries read from one notary answer; the rest are ignored."""
_OWN_KEY_VALIDITY = 2**62  # our current key: valid for as long as we use it


class KeyFetchClient(Protocol):
    """Outbound federation requests, as the keyring needs them.

    Either method returns the decoded JSON body of a 2xx answer and raises anything
    else on failure (an unreachable server, an error status, a timeout).
    """

    async def get_json(self, destination: str, path: str, /) -> object: ...

    async def post_json(
        self, destination: str, path: str, content: Mapping[str, object], /
    ) -> object: ...


class KeyNotFound(SignatureError):
    """No usable key of the server signed the object (unknown, unfetchable or expired)."""


@dataclass(frozen=True, slots=True)
class KeyringStatistics:
    fetches: int
    failed_fetches: int
    shared_fetches: int
    """Callers that waited for a fetch of the same server already under way."""
    in_flight: int


def _wall_clock_ms() -> int:
    return int(time.time() * 1000)


Wanted = Mapping[str, Mapping[str, int]]
"""server name -> key ID -> the time the key must be valid at (0: any time)."""


class Keyring:
    """Signing keys of every server, this one included."""

    def __init__(
        self,
        db: Database,
        budget: MemoryBudget,
        server_name: str,
        signing_key: nacl.signing.SigningKey,
        client: KeyFetchClient,
        *,
        old_signing_keys: Iterable[OldSigningKey] = (),
        trusted_key_servers: Iterable[TrustedKeyServer] = (),
        clock: Callable[[], int] = _wall_clock_ms,
        max_concurrent_fetches: int = MAX_CONCURRENT_FETCHES,
    ) -> None:
        self._db = db
        self.server_name = server_name
        self._signing_key = signing_key
        self._client = client
        self._clock = clock
        self._notaries = tuple(trusted_key_servers)
        self._old = tuple(old_signing_keys)
        own = ServerKey(key_id(signing_key), bytes(signing_key.verify_key), _OWN_KEY_VALIDITY)
        self._own = {own.key_id: own}
        for old in self._old:
            self._own.setdefault(
                old.key_id, ServerKey(old.key_id, decode_base64(old.key), old.expired_ts)
            )
        self._cache: LruCache[str, tuple[ServerKey, ...]] = budget.cache("server_keys", CACHE_SHARE)
        self._in_flight: dict[str, trio.Event] = {}
        self._limiter = trio.CapacityLimiter(max_concurrent_fetches)
        self._fetches = 0
        self._failed = 0
        self._shared = 0
        self._generation = 0  # bumped whenever stored keys change (see known_keys)

    # --- this server's keys ----------------------------------------------------------

    def own_keys_response(self, valid_until_ts: int) -> dict[str, object]:
        """This server's signed Server Keys object (keys.yaml), old keys included."""
        old = {
            k.key_id: (named_verify_key(k.key_id, decode_base64(k.key)), k.expired_ts)
            for k in self._old
            if k.key_id != key_id(self._signing_key)
        }
        return make_server_keys_response(self.server_name, self._signing_key, old, valid_until_ts)

    def sign(self, obj: Mapping[str, object]) -> dict[str, object]:
        """``obj`` with this server's signature added (a notary's countersignature)."""
        return sign_json(obj, self.server_name, self._signing_key)

    # --- looking keys up --------------------------------------------------------------

    async def known_keys(self, server: str) -> dict[str, ServerKey]:
        """What we hold for ``server`` now, without asking anyone."""
        if server == self.server_name:
            return dict(self._own)
        cached = self._cache.get(server)
        if cached is None:
            generation = self._generation
            rows = await self._db.read(store.keys_of, server)
            cached = tuple(row.key for row in rows)
            if generation == self._generation:  # no store happened while we read
                self._cache.set(server, cached)
        return {k.key_id: k for k in cached}

    async def get_keys(
        self, wanted: Wanted, *, direct_only: bool = False
    ) -> dict[str, dict[str, ServerKey]]:
        """The keys asked for, fetching those we lack or hold only too short a time.

        Returns every asked-for key we end up knowing, even one that is not valid at
        the time asked (the caller decides; an older event may still use it). Never
        raises for an unreachable server: its keys are just missing.
        """
        found: dict[str, dict[str, ServerKey]] = {}
        missing: dict[str, dict[str, int]] = {}
        for server, kids in wanted.items():
            need = await self._collect(server, kids, found)
            if need and server != self.server_name:
                missing[server] = need
        if not missing:
            return found
        async with trio.open_nursery() as nursery:
            for server in missing:
                nursery.start_soon(self._fetch_direct, server)
        still: dict[str, dict[str, int]] = {}
        for server in missing:
            need = await self._collect(server, missing[server], found)
            if need:
                still[server] = need
        if still and self._notaries and not direct_only:
            async with trio.open_nursery() as nursery:
                for notary in self._notaries:
                    if notary.server_name != self.server_name:
                        nursery.start_soon(self._fetch_from_notary, notary, still)
            for server in still:
                await self._collect(server, still[server], found)
        return found

    async def _collect(
        self, server: str, kids: Mapping[str, int], found: dict[str, dict[str, ServerKey]]
    ) -> dict[str, int]:
        """Put what we know of ``kids`` into ``found``; return those still wanted."""
        known = await self.known_keys(server)
        mine = found.setdefault(server, {})
        need = {}
        for kid, ts in kids.items():
            key = known.get(kid)
            if key is not None:
                mine[kid] = key
            if key is None or not key.usable_at(ts):
                need[kid] = ts
        return need

    # --- verifying --------------------------------------------------------------------

    async def verify_json(self, server: str, obj: Mapping[str, object], valid_at_ts: int) -> None:
        """Check ``server``'s signatures on ``obj`` with its keys valid at ``valid_at_ts``.

        Raises:
            KeyNotFound: no signature by a key of ``server`` valid at that time.
            SignatureError: a signature is wrong.
        """
        kids = signing_key_ids(obj, server)
        if not kids:
            raise SignatureError(f"not signed by {server}")
        found = await self.get_keys({server: dict.fromkeys(kids, valid_at_ts)})
        self._check(obj, server, found.get(server, {}), valid_at_ts)

    async def verify_events(
        self, events: Sequence[tuple[Mapping[str, object], str]]
    ) -> list[SignatureError | None]:
        """Check the signatures of PDUs (each with its room version), keys fetched once.

        Spec: "Validating hashes and signatures on received events": the redacted
        event must be signed by every required server; from room version 5 only keys
        valid at the event's ``origin_server_ts`` count (a current key's validity is
        capped at 7 days after we fetched it; an old key's is its ``expired_ts``).

        Returns:
            For each event, None if its signatures are good, else the error.
        """
        plans: list[tuple[dict[str, object], list[str], int] | SignatureError] = []
        wanted: dict[str, dict[str, int]] = {}
        for pdu, room_version in events:
            try:
                version = get_room_version(room_version)
                valid_at = 0
                if version.enforce_key_validity:
                    ts = pdu.get("origin_server_ts")
                    if isinstance(ts, bool) or not isinstance(ts, int):
                        raise SignatureError("event has no integer origin_server_ts")
                    valid_at = ts
                redacted = redact(dict(pdu), room_version)
                servers = sorted(required_signers(pdu, room_version))
            except (SignatureError, ValueError) as e:
                plans.append(e if isinstance(e, SignatureError) else SignatureError(str(e)))
                continue
            for server in servers:
                by_kid = wanted.setdefault(server, {})
                for kid in signing_key_ids(redacted, server):
                    by_kid[kid] = max(by_kid.get(kid, 0), valid_at)
            plans.append((redacted, servers, valid_at))
        found = await self.get_keys(wanted) if wanted else {}
        results: list[SignatureError | None] = []
        for plan in plans:
            if isinstance(plan, SignatureError):
                results.append(plan)
                continue
            redacted, servers, valid_at = plan
            try:
                for server in servers:
                    self._check(redacted, server, found.get(server, {}), valid_at)
            except SignatureError as e:
                results.append(e)
            else:
                results.append(None)
        return results

    def _check(
        self,
        obj: Mapping[str, object],
        server: str,
        keys: Mapping[str, ServerKey],
        valid_at_ts: int,
    ) -> None:
        usable = {kid: k for kid, k in keys.items() if k.usable_at(valid_at_ts)}
        for kid, key in usable.items():
            if is_compromised(key.key):
                raise SignatureError(f"key {kid} of {server} is known to be compromised")
        if not any(kid in usable for kid in signing_key_ids(obj, server)):
            raise KeyNotFound(f"no key of {server} valid at {valid_at_ts} signed this")
        verify_signed_json(obj, server, {kid: k.verify_key() for kid, k in usable.items()})

    # --- fetching ---------------------------------------------------------------------

    async def _request(
        self, destination: str, call: Callable[[], Awaitable[object]]
    ) -> object | None:
        """One outbound request, bounded in time and concurrency; None on any failure."""
        async with self._limiter:
            self._fetches += 1
            try:
                with trio.fail_after(KEY_FETCH_TIMEOUT_S):
                    return await call()
            except trio.TooSlowError:
                log.warning("key request to %s timed out", destination)
            except Exception as e:  # any failure of a remote server is just "no keys"
                log.warning("key request to %s failed: %s", destination, e)
            self._failed += 1
            return None

    async def _fetch_direct(self, server: str) -> None:
        """Ask ``server`` for its keys, sharing a request already under way."""
        pending = self._in_flight.get(server)
        if pending is not None:
            self._shared += 1
            await pending.wait()
            return
        done = self._in_flight[server] = trio.Event()
        try:
            fetched_ts = self._clock()
            response = await self._request(
                server, lambda: self._client.get_json(server, "/_matrix/key/v2/server")
            )
            if response is None:
                return
            try:
                _, keys = parse_key_response(response, fetched_ts, expected_server=server)
            except KeyResponseError as e:
                log.warning("keys of %s refused: %s", server, e)
                return
            assert isinstance(response, Mapping)
            await self._store(server, server, fetched_ts, keys, response)
        finally:
            del self._in_flight[server]
            done.set()

    async def _fetch_from_notary(
        self, notary: TrustedKeyServer, wanted: Mapping[str, Mapping[str, int]]
    ) -> None:
        query = {
            server: {kid: {"minimum_valid_until_ts": ts} for kid, ts in kids.items()}
            for server, kids in wanted.items()
        }
        name = notary.server_name
        fetched_ts = self._clock()
        response = await self._request(
            name,
            lambda: self._client.post_json(name, "/_matrix/key/v2/query", {"server_keys": query}),
        )
        entries = response.get("server_keys") if isinstance(response, Mapping) else None
        if not isinstance(entries, list):
            if response is not None:
                log.warning("notary %s answered without a server_keys list", name)
            return
        entries = [e for e in entries[:MAX_NOTARY_ENTRIES] if isinstance(e, Mapping)]
        notary_keys = await self._notary_keys(notary, entries)
        for entry in entries:
            try:
                server, keys = parse_key_response(entry, fetched_ts)
                if server not in wanted:
                    continue
                verify_signed_json(entry, name, notary_keys)
            except (KeyResponseError, SignatureError) as e:
                log.warning("notary %s: an answer was refused: %s", name, e)
                continue
            await self._store(server, name, fetched_ts, keys, entry)

    async def _notary_keys(
        self, notary: TrustedKeyServer, entries: Iterable[Mapping[str, object]]
    ) -> dict[str, nacl.signing.VerifyKey]:
        """The keys a notary's answers must be signed with: the configured ones, or
        those it publishes itself (asked of it directly, never of another notary)."""
        if notary.verify_keys:
            return {
                kid: named_verify_key(kid, decode_base64(b64)) for kid, b64 in notary.verify_keys
            }
        now = self._clock()
        kids = {kid for entry in entries for kid in signing_key_ids(entry, notary.server_name)}
        found = await self.get_keys(
            {notary.server_name: dict.fromkeys(kids, now)}, direct_only=True
        )
        return {
            kid: key.verify_key()
            for kid, key in found.get(notary.server_name, {}).items()
            if key.usable_at(now)
        }

    async def _store(
        self,
        server: str,
        from_server: str,
        fetched_ts: int,
        keys: list[ServerKey],
        response: Mapping[str, object],
    ) -> None:
        if not keys:
            return
        key_json = encode_canonical_json(response).decode("utf-8")
        await self._db.write(store.store, server, from_server, fetched_ts, keys, key_json)
        self._generation += 1
        self._cache.pop(server)

    # --- the notary's side ------------------------------------------------------------

    async def stored_keys(self, server: str) -> list[store.StoredKey]:
        """Every key stored for ``server``, with when and from whom we learnt it."""
        return await self._db.read(store.keys_of, server)

    async def stored_answers(self, server: str, key_ids: Iterable[str] | None) -> list[str]:
        """The answers we keep for ``server`` (as received, JSON text), for a notary."""
        return await self._db.read(store.answers_for, server, key_ids)

    async def refresh(self, servers: Iterable[str]) -> None:
        """Ask each server for its keys now (concurrently; failures are logged)."""
        async with trio.open_nursery() as nursery:
            for server in servers:
                if server != self.server_name:
                    nursery.start_soon(self._fetch_direct, server)

    def statistics(self) -> KeyringStatistics:
        return KeyringStatistics(self._fetches, self._failed, self._shared, len(self._in_flight))
