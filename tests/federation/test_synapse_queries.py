"""Interop with a real Synapse for the federation queries: profiles both ways, room
directories both ways (and refused when our config says no), space hierarchies both
ways, and a Synapse user found in our user directory.

Synapse runs on 127.0.0.1 (its directory published over federation, anyone may publish
rooms), pocketserver on 127.0.0.2 with ``allow_public_rooms_over_federation: true`` and a
second one on 127.0.0.3 with the default (false).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.federation.conftest import pocket_tls_config
from tests.federation.synapse_peer import SynapsePeer, TestCA, running_synapse
from tests.federation.test_synapse_rooms import (  # noqa: F401 (fixture)
    WAIT_S,
    Client,
    _close_clients,
)
from tests.harness import RunningServer, running_server


@pytest.fixture(scope="module")
def synapse(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[SynapsePeer]:
    with running_synapse(
        tmp_path_factory.mktemp("synapse"),
        test_ca,
        allow_public_rooms_over_federation=True,
        room_list_publication_rules=[{"action": "allow"}],
    ) as peer:
        yield peer


@pytest.fixture(scope="module")
def pocket(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[RunningServer]:
    config = pocket_tls_config(
        tmp_path_factory.mktemp("pocket"), test_ca, allow_public_rooms_over_federation=True
    )
    with running_server(config) as server:
        yield server
    assert "Traceback" not in server.log_text(), server.log_text()[-5000:]


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[RunningServer]:
    config = pocket_tls_config(tmp_path_factory.mktemp("closed"), test_ca, host="127.0.0.3")
    with running_server(config) as server:
        yield server
    assert "Traceback" not in server.log_text(), server.log_text()[-5000:]


def _user(server: RunningServer | SynapsePeer, name: str) -> Client:
    info = server.register(name)
    return Client(server.client(), info["access_token"], info["user_id"])


def _raw(c: Client, method: str, path: str, body: object = None, **params: Any):
    return c.http.request(method, path, json=body, params=params or None)


def _eventually(fetch, ok, what: str, timeout_s: float = WAIT_S) -> Any:
    """Call ``fetch`` until ``ok(result)`` (remote answers may be cached a while)."""
    deadline = time.monotonic() + timeout_s
    result = fetch()
    while not ok(result):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: last answer {result}")
        time.sleep(0.5)
        result = fetch()
    return result


def test_profiles_both_ways(pocket: RunningServer, synapse: SynapsePeer) -> None:
    alice = _user(pocket, "palice")
    bob = _user(synapse, "sbob")
    alice.call("PUT", f"/profile/{quote(alice.user_id)}/displayname", {"displayname": "Alice Pi"})
    bob.call("PUT", f"/profile/{quote(bob.user_id)}/displayname", {"displayname": "Bob Syn"})
    bob.call("PUT", f"/profile/{quote(bob.user_id)}/avatar_url", {"avatar_url": "mxc://s/avatar"})
    # Our client reads Synapse's user (our /query/profile request, Synapse answers).
    assert alice.call("GET", f"/profile/{quote(bob.user_id)}") == {
        "displayname": "Bob Syn",
        "avatar_url": "mxc://s/avatar",
    }
    assert alice.call("GET", f"/profile/{quote(bob.user_id)}/displayname") == {
        "displayname": "Bob Syn"
    }
    # Synapse's client reads ours (Synapse asks our /query/profile).
    assert bob.call("GET", f"/profile/{quote(alice.user_id)}") == {"displayname": "Alice Pi"}
    assert bob.call("GET", f"/profile/{quote(alice.user_id)}/displayname") == {
        "displayname": "Alice Pi"
    }
    # Unknown users: 404 M_NOT_FOUND both ways.
    r = _raw(alice, "GET", f"/_matrix/client/v3/profile/@nobody:{synapse.server_name}")
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND"), r.text
    r = _raw(bob, "GET", f"/_matrix/client/v3/profile/@nobody:{pocket.server_name}")
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND"), r.text


def _names(listing: dict[str, Any]) -> list[str]:
    return [r.get("name", "") for r in listing.get("chunk", [])]


def test_room_directories_both_ways(
    pocket: RunningServer, closed: RunningServer, synapse: SynapsePeer
) -> None:
    alice = _user(pocket, "dalice")
    carol = _user(closed, "dcarol")
    bob = _user(synapse, "dbob")
    bob.call(
        "POST",
        "/createRoom",
        {"preset": "public_chat", "visibility": "public", "name": "Synapse lounge"},
    )
    alice.call(
        "POST",
        "/createRoom",
        {"preset": "public_chat", "visibility": "public", "name": "Pi lounge"},
    )
    carol.call(
        "POST",
        "/createRoom",
        {"preset": "public_chat", "visibility": "public", "name": "Closed lounge"},
    )

    # Our client lists Synapse's directory: GET, and POST with a search term.
    server = synapse.server_name
    listing = alice.call("GET", "/publicRooms", server=server)
    assert "Synapse lounge" in _names(listing), listing
    found = alice.call(
        "POST", f"/publicRooms?server={server}", {"filter": {"generic_search_term": "LOUNGE"}}
    )
    assert "Synapse lounge" in _names(found), found
    found = alice.call(
        "POST", f"/publicRooms?server={server}", {"filter": {"generic_search_term": "nomatch"}}
    )
    assert found["chunk"] == []

    # Synapse's client lists ours (we allow it) ...
    listing = _eventually(
        lambda: bob.call("GET", "/publicRooms", server=pocket.server_name),
        lambda answer: "Pi lounge" in _names(answer),
        "our directory through Synapse",
    )
    assert "Closed lounge" not in _names(listing)
    found = bob.call(
        "POST",
        f"/publicRooms?server={pocket.server_name}",
        {"filter": {"generic_search_term": "pi lou"}},
    )
    assert _names(found) == ["Pi lounge"], found
    # ... and is refused by the server whose config says no: nothing listed.
    r = _raw(bob, "GET", "/_matrix/client/v3/publicRooms", server=closed.server_name)
    assert r.status_code == 403, r.text
    assert "Closed lounge" not in r.text
    r = _raw(
        bob,
        "POST",
        f"/_matrix/client/v3/publicRooms?server={closed.server_name}",
        {"filter": {"generic_search_term": "lounge"}},
    )
    assert r.status_code == 403, r.text
    assert "Closed lounge" not in r.text
    # Our own name is our own directory.
    assert "Pi lounge" in _names(alice.call("GET", "/publicRooms", server=pocket.server_name))


def _rooms(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["room_id"]: r for r in answer["rooms"]}


def test_space_hierarchies_both_ways(pocket: RunningServer, synapse: SynapsePeer) -> None:
    alice = _user(pocket, "halice")
    bob = _user(synapse, "hbob")
    bob.call("PUT", f"/profile/{quote(bob.user_id)}/displayname", {"displayname": "Hobbit Bob"})
    ours = pocket.server_name

    def room(who: Client, name: str, preset: str = "public_chat", **extra: Any) -> str:
        body = {"preset": preset, "name": name, **extra}
        return str(who.call("POST", "/createRoom", body)["room_id"])

    space = room(alice, "Pi space", creation_content={"type": "m.space"})
    kitchen = room(alice, "Kitchen")
    garden = room(alice, "Garden")
    vault = room(alice, "Vault", preset="private_chat")
    for child in (kitchen, garden, vault):
        alice.call(
            "PUT", f"/rooms/{quote(space)}/state/m.space.child/{quote(child)}", {"via": [ours]}
        )

    # A Synapse user joins our space; Synapse then holds the space but none of its
    # children, and asks us (GET /hierarchy/{child}) about each.
    bob.call("POST", f"/join/{quote(space)}?server_name={quote(ours)}", {})
    answer = _eventually(
        lambda: bob.http.get(f"/_matrix/client/v1/rooms/{quote(space)}/hierarchy").json(),
        lambda a: {kitchen, garden} <= set(_rooms(a) if "rooms" in a else {}),
        "the children of our space through Synapse",
    )
    rooms = _rooms(answer)
    assert rooms[kitchen]["name"] == "Kitchen"
    assert rooms[garden]["name"] == "Garden"
    assert vault not in rooms  # private: Synapse's server has nobody there
    # Synapse's room summary of one of our rooms, through our /hierarchy.
    r = bob.http.get(f"/_matrix/client/v1/room_summary/{quote(kitchen)}", params={"via": ours})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Kitchen"
    r = bob.http.get(f"/_matrix/client/v1/room_summary/{quote(vault)}", params={"via": ours})
    assert r.status_code == 404, r.text
    assert "Vault" not in r.text

    # Bob is now in our user directory, by the name in his member event.
    found = _eventually(
        lambda: alice.call("POST", "/user_directory/search", {"search_term": "hobbit"}),
        lambda a: bool(a["results"]),
        "bob in our user directory",
    )
    assert found["results"][0]["user_id"] == bob.user_id
    assert found["results"][0].get("display_name") == "Hobbit Bob"

    # Our client's hierarchy of our space with a child on Synapse: we ask Synapse.
    porch = room(bob, "Synapse porch")
    alice.call(
        "PUT",
        f"/rooms/{quote(space)}/state/m.space.child/{quote(porch)}",
        {"via": [synapse.server_name]},
    )
    r = alice.http.get(f"/_matrix/client/v1/rooms/{quote(space)}/hierarchy")
    assert r.status_code == 200, r.text
    rooms = _rooms(r.json())
    assert rooms[porch]["name"] == "Synapse porch", r.text
    assert {space, kitchen, garden, vault} <= set(rooms)
    # And a room summary of the Synapse room, asked of Synapse.
    r = alice.http.get(
        f"/_matrix/client/v1/room_summary/{quote(porch)}", params={"via": synapse.server_name}
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Synapse porch"
