"""The keyring in process: fetch, check, store, validity rules, batching, notaries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from pocketserver.cache import MemoryBudget
from pocketserver.config.model import OldSigningKey, TrustedKeyServer
from pocketserver.core.crypto import (
    SignatureError,
    add_hashes_and_signatures,
    encode_verify_key_base64,
    generate_signing_key,
    get_verify_key,
)
from pocketserver.core.server_keys import KEY_VALIDITY_CAP_MS, ServerKey
from pocketserver.federation.keyring import KeyNotFound, Keyring
from pocketserver.storage import server_keys as store
from pocketserver.storage.db import Database
from tests.federation.peers import DAY_MS, FakeNetwork, FakeNotary, FakePeer

NOW = 1_700_000_000_000
US = "us.example"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "keys.db", memory_bytes=16 << 20, synchronous="normal")
    yield database
    database.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def net() -> FakeNetwork:
    return FakeNetwork()


@pytest.fixture
def peer(net: FakeNetwork, clock: Clock) -> FakePeer:
    return net.add(FakePeer("peer.example", clock))


OUR_KEY = generate_signing_key("ours")


def make_keyring(db: Database, net: FakeNetwork, clock: Clock, **kw: object) -> Keyring:
    return Keyring(db, MemoryBudget(64 << 20), US, OUR_KEY, net, clock=clock, **kw)  # type: ignore[arg-type]


def event(peer: FakePeer, ts: int, room_version: str = "10", body: str = "hi") -> dict:
    pdu = {
        "type": "m.room.message",
        "room_id": "!room:peer.example",
        "sender": f"@alice:{peer.name}",
        "content": {"body": body},
        "origin_server_ts": ts,
        "depth": 3,
        "prev_events": [],
        "auth_events": [],
    }
    return add_hashes_and_signatures(pdu, room_version, peer.name, peer.key)


async def test_fetches_checks_and_stores_keys(
    db: Database, net: FakeNetwork, clock: Clock, peer: FakePeer
) -> None:
    keyring = make_keyring(db, net, clock)
    obj = peer.sign({"hello": "world"})
    await keyring.verify_json(peer.name, obj, NOW)
    await keyring.verify_json(peer.name, obj, NOW)
    assert net.count(peer.name) == 1  # the second check is answered from memory
    # A new keyring on the same database (a restart) asks nobody.
    again = make_keyring(db, net, clock)
    await again.verify_json(peer.name, obj, NOW)
    assert net.count(peer.name) == 1
    rows = db.read_sync(store.keys_of, peer.name)
    assert [(r.key.key_id, r.from_server, r.added_ts) for r in rows] == [
        (peer.key_id, peer.name, NOW)
    ]
    # A forged object is refused with the right key in hand.
    forged = dict(obj, hello="mars")
    with pytest.raises(SignatureError):
        await again.verify_json(peer.name, forged, NOW)


@pytest.mark.parametrize("fault", ["tamper", "wrong_name", "down"])
async def test_bad_or_missing_answers_store_nothing(
    db: Database, net: FakeNetwork, clock: Clock, peer: FakePeer, fault: str
) -> None:
    if fault == "tamper":
        peer.tamper = True  # self-signature no longer matches
    elif fault == "wrong_name":
        peer.answer_as = "other.example"
    else:
        peer.up = False
    keyring = make_keyring(db, net, clock)
    with pytest.raises(KeyNotFound):
        await keyring.verify_json(peer.name, peer.sign({"a": 1}), NOW)
    assert db.read_sync(store.keys_of, peer.name) == []
    assert db.read_sync(store.keys_of, "other.example") == []


async def test_room_v5_uses_keys_only_within_their_validity(
    db: Database, net: FakeNetwork, clock: Clock, peer: FakePeer
) -> None:
    """rooms v5 "Signing key validity period": valid_until_ts >= origin_server_ts."""
    keyring = make_keyring(db, net, clock)
    inside = event(peer, NOW + DAY_MS - 1)
    after = event(peer, NOW + DAY_MS + 1)
    results = await keyring.verify_events([(inside, "10"), (after, "10")])
    assert results[0] is None
    assert isinstance(results[1], KeyNotFound)
    assert net.count(peer.name) == 1  # one answer for both events
    # Asked again, the key known for too short a time is fetched again (the server
    # may have extended it), and still refused.
    assert isinstance((await keyring.verify_events([(after, "10")]))[0], KeyNotFound)
    assert net.count(peer.name) == 2
    # Room versions 1-4 ignore valid_until_ts.
    assert await keyring.verify_events([(event(peer, NOW + 30 * DAY_MS, "4"), "4")]) == [None]


async def test_validity_capped_at_seven_days(
    db: Database, net: FakeNetwork, clock: Clock, peer: FakePeer
) -> None:
    """keys.yaml: "the lesser of this field and 7 days into the future"."""
    peer.valid_for_ms = 365 * DAY_MS
    keyring = make_keyring(db, net, clock)
    (stored,) = (await keyring.get_keys({peer.name: {peer.key_id: NOW}}))[peer.name].values()
    assert stored.valid_until_ts == NOW + KEY_VALIDITY_CAP_MS
    ok = event(peer, NOW + KEY_VALIDITY_CAP_MS)
    too_late = event(peer, NOW + KEY_VALIDITY_CAP_MS + 1)
    results = await keyring.verify_events([(ok, "5"), (too_late, "5")])
    assert results[0] is None
    assert isinstance(results[1], KeyNotFound)


async def test_old_verify_keys_sign_events_before_their_expiry_only(
    db: Database, net: FakeNetwork, clock: Clock, peer: FakePeer
) -> None:
    before = event(peer, NOW - 10)
    at_expiry = event(peer, NOW)
    late = event(peer, NOW + 10)  # signed with the old key after it was retired
    peer.rotate("peer2", expired_ts=NOW)
    keyring = make_keyring(db, net, clock)
    results = await keyring.verify_events([(before, "10"), (at_expiry, "10"), (late, "10")])
    assert results[:2] == [None, None]
    assert isinstance(results[2], KeyNotFound)
    # An old key never authenticates a request made now.
    clock.now = NOW + 1
    old_signed = {"x": 1, "signatures": before["signatures"]}
    with pytest.raises(KeyNotFound):
        await keyring.verify_json(peer.name, old_signed, clock.now)


async def test_many_key_ids_one_request_and_concurrent_callers_share_it(
    db: Database, net: FakeNetwork, clock: Clock, peer: FakePeer
) -> None:
    events = []
    for i in range(3):
        events.append((event(peer, NOW - 100 + i, body=str(i)), "10"))
        peer.rotate(f"k{i}", expired_ts=NOW)
    events.append((event(peer, NOW - 50), "10"))
    keyring = make_keyring(db, net, clock)
    net.gate = trio.Event()
    results: list[object] = []

    async def check() -> None:
        results.append(await keyring.verify_events(events))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(check)
        nursery.start_soon(check)
        with trio.fail_after(10):  # both callers are waiting for the one request
            while keyring.statistics().shared_fetches < 1:  # noqa: ASYNC110
                await trio.sleep(0.01)
        net.gate.set()
    assert results == [[None] * 4, [None] * 4]
    assert net.count(peer.name) == 1  # four key IDs, two callers: one request


async def test_notary_is_asked_only_for_what_the_server_did_not_give(
    db: Database, net: FakeNetwork, clock: Clock, peer: FakePeer
) -> None:
    notary = net.add(FakeNotary("notary.example", clock))
    notary.remember(peer)
    obj = peer.sign({"a": 1})
    trusted = TrustedKeyServer(
        notary.name, ((notary.key_id, encode_verify_key_base64(get_verify_key(notary.key))),)
    )
    keyring = make_keyring(db, net, clock, trusted_key_servers=[trusted])
    await keyring.verify_json(peer.name, obj, NOW)
    assert net.count(notary.name, "POST") == 0  # the server answered itself
    peer.up = False
    gone = net.add(FakePeer("gone.example", clock))
    notary.remember(gone)
    gone.up = False
    await keyring.verify_json(gone.name, gone.sign({"b": 2}), NOW)
    assert net.count(notary.name, "POST") == 1
    (query,) = notary.queries
    # minimum_valid_until_ts is always sent (room v5 requirement on /query).
    assert query == {"server_keys": {gone.name: {gone.key_id: {"minimum_valid_until_ts": NOW}}}}
    (row,) = db.read_sync(store.keys_of, gone.name)
    assert row.from_server == notary.name


@pytest.mark.parametrize("configured", [True, False])
async def test_notary_answers_must_carry_the_notary_signature(
    db: Database, net: FakeNetwork, clock: Clock, configured: bool
) -> None:
    notary = net.add(FakeNotary("notary.example", clock))
    gone = net.add(FakePeer("gone.example", clock))
    notary.remember(gone)
    gone.up = False
    impostor = generate_signing_key("notary1")  # same key ID, another key
    pinned = impostor if configured else notary.key
    keys = ((notary.key_id, encode_verify_key_base64(get_verify_key(pinned))),)
    trusted = TrustedKeyServer(notary.name, keys if configured else ())
    keyring = make_keyring(db, net, clock, trusted_key_servers=[trusted])
    obj = gone.sign({"b": 2})
    if configured:  # the notary signed with a key other than the pinned one: refused
        with pytest.raises(KeyNotFound):
            await keyring.verify_json(gone.name, obj, NOW)
        assert db.read_sync(store.keys_of, gone.name) == []
    else:  # no pinned keys: the notary's own published keys, fetched from it
        await keyring.verify_json(gone.name, obj, NOW)
        assert net.count(notary.name, "GET") == 1


def synapse_banned_keys() -> tuple[str, ...]:
    """Synapse's BANNED_SERVER_SIGNING_KEYS, read from its source (importing its
    keyring would import Twisted's web server)."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("synapse")
    assert spec is not None
    assert spec.submodule_search_locations
    source = Path(spec.submodule_search_locations[0], "crypto", "keyring.py").read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "BANNED_SERVER_SIGNING_KEYS" for t in node.targets
        ):
            return tuple(ast.literal_eval(node.value))
    raise AssertionError("BANNED_SERVER_SIGNING_KEYS not found in Synapse")


async def test_compromised_keys_are_never_used(
    db: Database, net: FakeNetwork, clock: Clock
) -> None:
    """The key Synapse bans (BANNED_SERVER_SIGNING_KEYS) is refused even if stored."""
    from pocketserver.core.crypto import decode_base64
    from pocketserver.core.server_keys import COMPROMISED_VERIFY_KEYS

    assert {decode_base64(k) for k in synapse_banned_keys()} == COMPROMISED_VERIFY_KEYS
    (bad,) = COMPROMISED_VERIFY_KEYS
    db.write_sync(
        store.store,
        "bad.example",
        "bad.example",
        NOW,
        [ServerKey("ed25519:x", bad, NOW + DAY_MS)],
        "{}",
    )
    keyring = make_keyring(db, net, clock)
    obj = {"a": 1, "signatures": {"bad.example": {"ed25519:x": "A" * 86}}}
    with pytest.raises(SignatureError, match="compromised"):
        await keyring.verify_json("bad.example", obj, NOW)


async def test_own_keys_come_from_the_config(db: Database, net: FakeNetwork, clock: Clock) -> None:
    old = generate_signing_key("retired")
    retired = OldSigningKey("ed25519:retired", encode_verify_key_base64(get_verify_key(old)), NOW)
    keyring = make_keyring(db, net, clock, old_signing_keys=[retired])
    from pocketserver.core.crypto import sign_json

    await keyring.verify_json(US, sign_json({"a": 1}, US, OUR_KEY), NOW)
    await keyring.verify_json(US, sign_json({"a": 1}, US, old), NOW)
    with pytest.raises(KeyNotFound):
        await keyring.verify_json(US, sign_json({"a": 1}, US, old), NOW + 1)
    assert net.requests == []
    response = keyring.own_keys_response(NOW + DAY_MS)
    assert response["old_verify_keys"] == {
        "ed25519:retired": {"key": retired.key, "expired_ts": NOW}
    }


async def test_cache_is_bounded(db: Database, net: FakeNetwork, clock: Clock) -> None:
    keyring = Keyring(db, MemoryBudget(16 << 20), US, OUR_KEY, net, clock=clock)
    cache = keyring._cache
    for i in range(400):
        peer = net.add(FakePeer(f"p{i}.example", clock))
        await keyring.get_keys({peer.name: {peer.key_id: NOW}})
    stats = cache.statistics()
    assert stats.size_bytes <= stats.max_bytes
    assert stats.evictions > 0


async def test_notary_query_answers_in_time_when_servers_hang(
    db: Database, net: FakeNetwork, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notary query that makes us ask hanging servers still answers (with what we
    hold) before the asking server would give up."""
    from pocketserver.federation import notary

    monkeypatch.setattr(notary, "REFRESH_TIMEOUT_S", 0.3)
    keyring = make_keyring(db, net, clock)
    stored = net.add(FakePeer("stored.example", clock))
    await keyring.get_keys({stored.name: {stored.key_id: NOW}})
    net.gate = trio.Event()  # from now on every server hangs
    query = {f"s{i}.example": {} for i in range(20)}
    query[stored.name] = {stored.key_id: NOW + 2 * DAY_MS}  # too short: asked again
    start = trio.current_time()
    answer = await notary.answer_query(keyring, query, NOW, NOW + DAY_MS)
    assert trio.current_time() - start < 5
    assert [entry["server_name"] for entry in answer] == [stored.name]
