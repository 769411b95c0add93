"""Federation routes in process: X-Matrix on /_matrix/federation/*, the notary,
and the 404/405 M_UNRECOGNIZED answers. Remote servers are fake peers with real keys."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from quart import g

from pocketserver.api.federation.auth import federation_origin
from pocketserver.app import create_app
from pocketserver.cache import MemoryBudget
from pocketserver.config import load_config
from pocketserver.core.crypto import (
    add_hashes_and_signatures,
    generate_signing_key,
    verify_signed_json,
)
from pocketserver.core.events import compute_event_id
from pocketserver.core.server_keys import named_verify_key
from pocketserver.federation.keyring import Keyring
from pocketserver.federation.xmatrix import authorization_header
from pocketserver.rooms.create import RoomSettings, create_room
from pocketserver.services import build_services
from pocketserver.storage import users as user_store
from tests.federation.peers import DAY_MS, FakeNetwork, FakePeer
from tests.harness import make_config

US = "test.local"


@pytest.fixture
async def env(tmp_path: Path):
    services = await build_services(load_config(make_config(tmp_path, server_name=US)))
    net = FakeNetwork()
    keyring = Keyring(
        services.db,
        MemoryBudget(32 << 20),
        US,
        services.signing_key,
        net,
        clock=lambda: int(time.time() * 1000),
    )
    services = dataclasses.replace(services, keyring=keyring)
    app = create_app(services, ["client", "federation"])

    @app.route("/_matrix/federation/v1/test_whoami", methods=["GET", "PUT"])
    async def whoami() -> dict[str, object]:
        return {"origin": federation_origin(), "logged_as": g.user_id}

    peer = net.add(FakePeer("peer.example", lambda: int(time.time() * 1000)))
    services.db.write_sync(user_store.insert_user, f"@alice:{US}", None, 0)
    yield app, net, peer, services
    services.db.close()


def signed(peer: FakePeer, method: str, uri: str, content=None, destination: str = US, key=None):
    header = authorization_header(peer.name, destination, key or peer.key, method, uri, content)
    return {"Authorization": header}


async def test_signed_request_reaches_the_route_with_its_origin(env) -> None:
    app, net, peer, _ = env
    client = app.test_client()
    r = await client.get(
        "/_matrix/federation/v1/test_whoami",
        headers=signed(peer, "GET", "/_matrix/federation/v1/test_whoami"),
    )
    assert r.status_code == 200, await r.get_data()
    assert await r.get_json() == {"origin": peer.name, "logged_as": peer.name}
    body = {"some": ["content"]}
    uri = "/_matrix/federation/v1/test_whoami?x=1&y=%2F"
    r = await client.put(uri, json=body, headers=signed(peer, "PUT", uri, body))
    assert r.status_code == 200, await r.get_data()
    # The real profile query, with the user ID in the signed query string.
    uri = f"/_matrix/federation/v1/query/profile?user_id=%40alice%3A{US}"
    r = await client.get(uri, headers=signed(peer, "GET", uri))
    assert r.status_code == 200, await r.get_data()
    assert net.count(peer.name) == 1  # the key was fetched once


async def _status(client, method: str, uri: str, headers: dict, **kw) -> tuple[int, str]:
    r = await getattr(client, method.lower())(uri, headers=headers, **kw)
    return r.status_code, (await r.get_json() or {}).get("errcode")


async def test_refusals_are_401_m_unauthorized(env) -> None:
    app, net, peer, _ = env
    client = app.test_client()
    uri = "/_matrix/federation/v1/test_whoami"
    stranger = generate_signing_key("peer1")  # the peer's key ID, another key
    cases = {
        "no header": {},
        "bearer": {"Authorization": "Bearer abc"},
        "wrong destination": signed(peer, "GET", uri, destination="other.example"),
        "signed for another uri": signed(peer, "GET", uri + "?x=1"),
        "signed for another method": signed(peer, "PUT", uri),
        "wrong key": signed(peer, "GET", uri, key=stranger),
        "unknown key id": signed(peer, "GET", uri, key=generate_signing_key("nope")),
    }
    for name, headers in cases.items():
        assert await _status(client, "GET", uri, headers) == (401, "M_UNAUTHORIZED"), name
    # Headers that cannot be read are 400 M_UNAUTHORIZED, as Synapse (SyTest checks it).
    for header in (
        'X-Matrix origin="peer.example',
        'X-Matrix origin="localhost:http",key="ed25519:1",sig="c2ln"',
        'X-Matrix origin="peer.example",key="ed25519:1"',
    ):
        headers = {"Authorization": header}
        assert await _status(client, "GET", uri, headers) == (400, "M_UNAUTHORIZED"), header
    # A body that differs from the signed one.
    headers = signed(peer, "PUT", uri, {"a": 1})
    assert await _status(client, "PUT", uri, headers, json={"a": 2}) == (401, "M_UNAUTHORIZED")
    # An unreachable origin: its key cannot be found.
    peer.up = False
    other = net.add(FakePeer("down.example", peer.clock))
    other.up = False
    assert await _status(client, "GET", uri, signed(other, "GET", uri)) == (401, "M_UNAUTHORIZED")


async def test_missing_destination_accepted_when_signed_for_us(env) -> None:
    """Spec: recipients should accept requests without ``destination`` (older
    servers); the signature must still cover our name."""
    app, _, peer, _ = env
    uri = "/_matrix/federation/v1/test_whoami"
    header = signed(peer, "GET", uri)["Authorization"]
    no_dest = ",".join(p for p in header.split(",") if not p.startswith("destination="))
    r = await app.test_client().get(uri, headers={"Authorization": no_dest})
    assert r.status_code == 200
    wrong = signed(peer, "GET", uri, destination="other.example")["Authorization"]
    no_dest = ",".join(p for p in wrong.split(",") if not p.startswith("destination="))
    r = await app.test_client().get(uri, headers={"Authorization": no_dest})
    assert r.status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/_matrix/federation/v1/no_such_thing", 404),
        ("PUT", "/_matrix/federation/v1/send_knock_v0/!r:x/$e", 404),
        ("GET", "/_matrix/federation/v1/send_join/!r:x/$e", 405),
        ("GET", "/_matrix/federation/v2/send_join/!r:x/$e", 405),
        ("GET", "/_matrix/key/v2/nothing", 404),
        ("GET", "/_matrix/key/v3/server", 404),
        ("DELETE", "/_matrix/federation/v1/query/profile", 405),
        ("POST", "/_matrix/federation/v1/version", 405),
        ("PUT", "/_matrix/key/v2/server", 405),
        ("GET", "/_matrix/key/v2/query", 405),
    ],
)
async def test_unknown_endpoints_are_m_unrecognized_even_unsigned(
    env, method, path, status
) -> None:
    app, _, _, _ = env
    r = await app.test_client().open(path, method=method)
    assert r.status_code == status
    assert r.content_type == "application/json"
    assert (await r.get_json())["errcode"] == "M_UNRECOGNIZED"


async def test_public_federation_routes_need_no_signature(env) -> None:
    app, _, _, _ = env
    client = app.test_client()
    assert (await client.get("/_matrix/federation/v1/version")).status_code == 200
    r = await client.get("/_matrix/federation/v1/openid/userinfo")
    assert (await r.get_json())["errcode"] == "M_MISSING_TOKEN"  # its own check, not X-Matrix
    r = await client.post("/_matrix/federation/v1/3pid/onbind", json={})
    assert (await r.get_json()).get("errcode") != "M_UNAUTHORIZED"


async def test_profile_query_errors(env) -> None:
    app, _, peer, _ = env
    client = app.test_client()
    for uri, expected in [
        ("/_matrix/federation/v1/query/profile", (400, "M_MISSING_PARAM")),
        (
            "/_matrix/federation/v1/query/profile?user_id=%40bob%3Aelsewhere",
            (400, "M_INVALID_PARAM"),
        ),
        (f"/_matrix/federation/v1/query/profile?user_id=%40nobody%3A{US}", (404, "M_NOT_FOUND")),
    ]:
        assert await _status(client, "GET", uri, signed(peer, "GET", uri)) == expected


# --- the notary -------------------------------------------------------------------


def _check_notary_entry(entry: dict, peer: FakePeer, services) -> None:
    verify_signed_json(
        entry, peer.name, {peer.key_id: named_verify_key(peer.key_id, bytes(peer.key.verify_key))}
    )
    ours = named_verify_key(
        f"ed25519:{services.signing_key.version}", bytes(services.signing_key.verify_key)
    )
    verify_signed_json(entry, US, {ours.alg + ":" + ours.version: ours})


async def test_notary_get_and_post(env) -> None:
    app, net, peer, services = env
    client = app.test_client()
    r = await client.get(f"/_matrix/key/v2/query/{peer.name}")
    assert r.status_code == 200
    (entry,) = (await r.get_json())["server_keys"]
    _check_notary_entry(entry, peer, services)
    r = await client.post(
        "/_matrix/key/v2/query",
        json={"server_keys": {peer.name: {peer.key_id: {"minimum_valid_until_ts": 0}}, US: {}}},
    )
    entries = (await r.get_json())["server_keys"]
    assert {e["server_name"] for e in entries} == {peer.name, US}
    assert net.count(peer.name) == 1  # the stored answer served the second query
    own = next(e for e in entries if e["server_name"] == US)
    assert (
        own["verify_keys"]
        == (await (await client.get("/_matrix/key/v2/server")).get_json())["verify_keys"]
    )


async def test_notary_serves_an_expired_key_when_the_server_is_gone(env) -> None:
    """SyTest "Key notary server should return an expired key if it can't find any others"."""
    app, net, peer, services = env
    client = app.test_client()
    peer.valid_for_ms = -DAY_MS  # published already expired
    expiry = int(time.time() * 1000) - DAY_MS

    async def ask(minimum: int) -> list[dict]:
        body = {"server_keys": {peer.name: {peer.key_id: {"minimum_valid_until_ts": minimum}}}}
        r = await client.post("/_matrix/key/v2/query", json=body)
        assert r.status_code == 200
        return (await r.get_json())["server_keys"]

    assert len(await ask(0)) == 1
    assert net.count(peer.name) == 1
    (entry,) = await ask(expiry + 10_000)  # too short: asked again
    assert net.count(peer.name) == 2
    peer.up = False
    (entry,) = await ask(expiry + 10_000)  # asked again, unreachable: the stored answer
    assert net.count(peer.name) == 3
    assert entry["verify_keys"].keys() == {peer.key_id}
    assert abs(entry["valid_until_ts"] - expiry) < 60_000
    _check_notary_entry(entry, peer, services)


async def test_notary_keeps_a_key_the_server_no_longer_lists(env) -> None:
    """SyTest "Key notary server must not overwrite a valid key with a spurious result"."""
    app, _net, peer, _ = env
    client = app.test_client()
    first = peer.key_id
    await client.get(f"/_matrix/key/v2/query/{peer.name}")
    peer.key = generate_signing_key("peer2")  # forgets peer1 entirely
    now = int(time.time() * 1000)
    body = {"server_keys": {peer.name: {first: {"minimum_valid_until_ts": now + 2 * DAY_MS}}}}
    await client.post("/_matrix/key/v2/query", json=body)
    body = {"server_keys": {peer.name: {first: {"minimum_valid_until_ts": 0}}}}
    entries = (await (await client.post("/_matrix/key/v2/query", json=body)).get_json())[
        "server_keys"
    ]
    assert [list(e["verify_keys"]) for e in entries] == [[first]]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"server_keys": []},
        {"server_keys": {"a.example": []}},
        {"server_keys": {"a.example": {"ed25519:x": 5}}},
        {"server_keys": {"a.example": {"ed25519:x": {"minimum_valid_until_ts": "soon"}}}},
        {"server_keys": {"a.example": {"ed25519:x": {"minimum_valid_until_ts": True}}}},
    ],
)
async def test_notary_bad_queries(env, body) -> None:
    app, net, _, _ = env
    r = await app.test_client().post("/_matrix/key/v2/query", json=body)
    assert r.status_code == 400
    assert (await r.get_json())["errcode"] == "M_BAD_JSON"
    assert net.requests == []


async def test_notary_limits(env) -> None:
    app, net, _, _ = env
    client = app.test_client()
    many = {"server_keys": {f"s{i}.example": {} for i in range(101)}}
    r = await client.post("/_matrix/key/v2/query", json=many)
    assert (r.status_code, (await r.get_json())["errcode"]) == (400, "M_INVALID_PARAM")
    r = await client.get("/_matrix/key/v2/query/peer.example?minimum_valid_until_ts=x")
    assert r.status_code == 400
    # Names that are not server names are never asked.
    r = await client.post("/_matrix/key/v2/query", json={"server_keys": {"bad name!": {}, "": {}}})
    assert (await r.get_json()) == {"server_keys": []}
    assert net.requests == []
    assert r.status_code == 200


async def test_directory_query(env) -> None:
    """``/query/directory``: our alias's room and the servers in it, ours first."""
    from pocketserver.rooms.create import RoomSettings, create_room

    app, _, peer, services = env
    client = app.test_client()
    room_id = await create_room(
        services.rooms, f"@alice:{US}", RoomSettings(room_version="10", preset="public_chat")
    )
    await services.directory.create_alias(f"#pi:{US}", room_id, f"@alice:{US}")
    uri = f"/_matrix/federation/v1/query/directory?room_alias=%23pi%3A{US}"
    r = await client.get(uri, headers=signed(peer, "GET", uri))
    assert r.status_code == 200, await r.get_data()
    assert await r.get_json() == {"room_id": room_id, "servers": [US]}
    for uri, expected in [
        ("/_matrix/federation/v1/query/directory", (400, "M_MISSING_PARAM")),
        (
            "/_matrix/federation/v1/query/directory?room_alias=%23pi%3Aelsewhere",
            (400, "M_INVALID_PARAM"),
        ),
        (f"/_matrix/federation/v1/query/directory?room_alias=%23no%3A{US}", (404, "M_NOT_FOUND")),
    ]:
        assert await _status(client, "GET", uri, signed(peer, "GET", uri)) == expected
    # Unsigned: refused before anything is looked up.
    assert await _status(client, "GET", uri, {}) == (401, "M_UNAUTHORIZED")


def _q(part: str) -> str:
    """A path part as a peer writes it (the test client does not re-encode)."""
    return quote(part, safe="!:@$")


async def test_v1_send_join_and_send_leave_answer_in_a_status_pair(env) -> None:
    """v1 send_join/send_leave (no longer in the spec, still served by Synapse and
    called by old servers): the v2 answer inside ``[200, ...]``, the auth chain whole."""
    app, _, peer, services = env
    client = app.test_client()
    alice = f"@alice:{US}"
    room_id = await create_room(
        services.resident_memberships.writer,
        alice,
        RoomSettings(room_version="10", preset="public_chat"),
    )
    joiner = f"@bob:{peer.name}"

    async def signed_event(membership: str) -> tuple[str, dict[str, object]]:
        uri = f"/_matrix/federation/v1/make_{membership}/{_q(room_id)}/{_q(joiner)}"
        if membership == "join":
            uri += "?ver=10"
        r = await client.get(uri, headers=signed(peer, "GET", uri))
        assert r.status_code == 200, await r.get_data()
        template = (await r.get_json())["event"]
        pdu = add_hashes_and_signatures(template, "10", peer.name, peer.key)
        return compute_event_id(pdu, "10"), pdu

    event_id, pdu = await signed_event("join")
    uri = f"/_matrix/federation/v1/send_join/{_q(room_id)}/{_q(event_id)}"
    r = await client.put(uri, json=pdu, headers=signed(peer, "PUT", uri, pdu))
    assert r.status_code == 200, await r.get_data()
    status, answer = await r.get_json()
    assert status == 200
    state_ids = {compute_event_id(e, "10") for e in answer["state"]}
    chain_ids = {compute_event_id(e, "10") for e in answer["auth_chain"]}
    assert len(state_ids) >= 5
    assert state_ids & chain_ids  # the create event is in both
    assert "members_omitted" not in answer
    assert answer["event"]["type"] == "m.room.member"
    state = await services.resident_memberships.store.current_state_ids(room_id)
    assert state[("m.room.member", joiner)] == event_id

    event_id, pdu = await signed_event("leave")
    uri = f"/_matrix/federation/v1/send_leave/{_q(room_id)}/{_q(event_id)}"
    r = await client.put(uri, json=pdu, headers=signed(peer, "PUT", uri, pdu))
    assert r.status_code == 200, await r.get_data()
    assert await r.get_json() == [200, {}]
    state = await services.resident_memberships.store.current_state_ids(room_id)
    assert state[("m.room.member", joiner)] == event_id
    # A leave the peer signs for a user of another server is refused; nothing changes.
    forged = add_hashes_and_signatures(
        {**pdu, "sender": alice, "state_key": alice, "origin_server_ts": 1},
        "10",
        peer.name,
        peer.key,
    )
    forged_id = compute_event_id(forged, "10")
    uri = f"/_matrix/federation/v1/send_leave/{_q(room_id)}/{_q(forged_id)}"
    r = await client.put(uri, json=forged, headers=signed(peer, "PUT", uri, forged))
    assert r.status_code in (400, 403)
    state = await services.resident_memberships.store.current_state_ids(room_id)
    assert state[("m.room.member", alice)] != forged_id


def _invite_pdu(sender: str, target: str, room_id: str = "!r:peer.example") -> dict:
    return {
        "type": "m.room.member",
        "room_id": room_id,
        "sender": sender,
        "state_key": target,
        "content": {"membership": "invite"},
        "origin_server_ts": 1,
        "depth": 3,
        "prev_events": [],
        "auth_events": [],
        "hashes": {"sha256": "x"},
        "signatures": {},
    }


async def test_invite_route_refusals_store_nothing(env) -> None:
    """PUT /v2/invite through the routes: the attacker's cases answer the spec's errors
    (JSON with errcode) and alice is shown no invite afterwards."""
    from pocketserver.core.events import compute_event_id
    from pocketserver.storage import stream as stream_store

    app, _net, peer, services = env
    client = app.test_client()
    alice = f"@alice:{US}"

    async def put(pdu: dict, version: object = "10", event_id: str | None = None) -> tuple:
        eid = event_id or compute_event_id(pdu, "10")
        uri = f"/_matrix/federation/v2/invite/{pdu['room_id']}/{eid}"
        body = {"room_version": version, "event": pdu, "invite_room_state": []}
        r = await client.put(uri, json=body, headers=signed(peer, "PUT", uri, body))
        return r.status_code, await r.get_json()

    # Another server's user, sent by peer.example.
    status, answer = await put(_invite_pdu("@mallory:evil.example", alice))
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN"), answer
    # A user of another server invited through us.
    status, answer = await put(_invite_pdu("@mallory:peer.example", "@bob:else.example"))
    assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")
    # A room version we do not know: the answer names it.
    status, answer = await put(_invite_pdu("@mallory:peer.example", alice), version="99")
    assert (status, answer["errcode"], answer["room_version"]) == (
        400,
        "M_INCOMPATIBLE_ROOM_VERSION",
        "99",
    )
    # A local user that does not exist.
    status, answer = await put(_invite_pdu("@mallory:peer.example", f"@nobody:{US}"))
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")
    # The event ID in the path is not the event's.
    status, answer = await put(_invite_pdu("@mallory:peer.example", alice), event_id="$x")
    assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")
    # Unsigned requests never reach it.
    r = await client.put("/_matrix/federation/v2/invite/!r:peer.example/$x", json={})
    assert r.status_code == 401
    memberships = services.db.read_sync(stream_store.current_memberships, alice)
    assert memberships == []


async def test_v1_invite_is_served_for_room_versions_1_and_2(env) -> None:
    """PUT /v1/invite (invites-v1.yaml): the event is the body, its stripped state in
    ``unsigned``; the answer is ``[200, {"event": ...}]`` with our signature, and alice
    sees the invite. An unsigned v1 invite is refused and changes nothing."""
    from pocketserver.storage import stream as stream_store

    app, _net, peer, services = env
    client = app.test_client()
    alice = f"@alice:{US}"
    base = {
        **_invite_pdu("@mallory:peer.example", alice, "!v1room:peer.example"),
        "event_id": "$inv1:peer.example",
        "unsigned": {"invite_room_state": [
            {"type": "m.room.name", "state_key": "", "sender": "@mallory:peer.example",
             "content": {"name": "Old room"}},
        ]},
    }  # fmt: skip
    del base["hashes"], base["signatures"]
    unsigned_part = base.pop("unsigned")
    pdu = {**add_hashes_and_signatures(base, "1", peer.name, peer.key), "unsigned": unsigned_part}
    # Not signed by its sender's server: refused, nothing stored.
    bare = {**pdu, "signatures": {}}
    uri = f"/_matrix/federation/v1/invite/{_q('!v1room:peer.example')}/{_q('$inv1:peer.example')}"
    r = await client.put(uri, json=bare, headers=signed(peer, "PUT", uri, bare))
    assert r.status_code == 403, await r.get_data()
    assert services.db.read_sync(stream_store.current_memberships, alice) == []
    r = await client.put(uri, json=pdu, headers=signed(peer, "PUT", uri, pdu))
    assert r.status_code == 200, await r.get_data()
    status, answer = await r.get_json()
    assert status == 200
    assert set(answer["event"]["signatures"]) == {peer.name, US}
    memberships = services.db.read_sync(stream_store.current_memberships, alice)
    assert [(m.room_id, m.membership) for m in memberships] == [("!v1room:peer.example", "invite")]
