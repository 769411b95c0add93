"""A "/" sent as %2F inside a path segment stays in that segment (issue #9).

Routes match on the raw path and each variable is decoded after matching
(pocketserver/api/rawpath.py), so every variable segment below holds a "/": user IDs
(localparts may hold "/"), event types, transaction IDs, state keys, account-data types,
tags, media file names (matrix-nio puts a whole local path there), device IDs, push rule
IDs, and room-v3 event IDs in the relations routes.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from tests.harness import RunningServer

V3 = "/_matrix/client/v3"
V1 = "/_matrix/client/v1"


def q(value: str) -> str:
    return quote(value, safe="")


@pytest.fixture(scope="module")
def alice(server: RunningServer) -> tuple[str, dict[str, str]]:
    body = server.register("alice/slash")
    assert body["user_id"] == f"@alice/slash:{server.server_name}"
    return body["user_id"], {"Authorization": f"Bearer {body['access_token']}"}


@pytest.fixture(scope="module")
def room(server: RunningServer, alice: tuple[str, dict[str, str]]) -> str:
    with server.client() as c:
        r = c.post(f"{V3}/createRoom", headers=alice[1], json={"room_version": "3"})
    assert r.status_code == 200, r.text
    return str(r.json()["room_id"])


def test_send_with_slashes_in_type_and_txn_id(server, alice, room) -> None:
    _, auth = alice
    with server.client() as c:
        url = f"{V3}/rooms/{room}/send/{q('org.example/slash')}/{q('txn/1')}"
        first = c.put(url, headers=auth, json={"n": 1})
        assert first.status_code == 200, first.text
        # The same transaction ID (with its "/") is recognised: the same event comes back.
        again = c.put(url, headers=auth, json={"n": 1})
        assert again.json()["event_id"] == first.json()["event_id"]
        # A different transaction whose decoded form would split differently is new.
        other = c.put(
            f"{V3}/rooms/{room}/send/{q('org.example/slash')}/{q('txn%2F1')}",
            headers=auth,
            json={"n": 2},
        )
        assert other.status_code == 200, other.text
        assert other.json()["event_id"] != first.json()["event_id"]
        event = c.get(f"{V3}/rooms/{room}/event/{q(first.json()['event_id'])}", headers=auth)
        assert event.json()["type"] == "org.example/slash"
        assert event.json()["content"] == {"n": 1}


def test_state_with_slashes_in_type_and_key(server, alice, room) -> None:
    _, auth = alice
    with server.client() as c:
        url = f"{V3}/rooms/{room}/state/{q('org.example/state')}/{q('a/b/c')}"
        r = c.put(url, headers=auth, json={"v": 1})
        assert r.status_code == 200, r.text
        r = c.get(url, headers=auth)
        assert r.status_code == 200, r.text
        assert r.json() == {"v": 1}
        state = c.get(f"{V3}/rooms/{room}/state", headers=auth).json()
        keys = {(e["type"], e["state_key"]) for e in state}
        assert ("org.example/state", "a/b/c") in keys


def test_account_data_and_tags(server, alice, room) -> None:
    user_id, auth = alice
    u = q(user_id)
    with server.client() as c:
        global_url = f"{V3}/user/{u}/account_data/{q('org.example/data')}"
        assert c.put(global_url, headers=auth, json={"g": 1}).status_code == 200
        assert c.get(global_url, headers=auth).json() == {"g": 1}
        room_url = f"{V3}/user/{u}/rooms/{room}/account_data/{q('org.example/data')}"
        assert c.put(room_url, headers=auth, json={"r": 1}).status_code == 200
        assert c.get(room_url, headers=auth).json() == {"r": 1}
        tag_url = f"{V3}/user/{u}/rooms/{room}/tags/{q('u.work/urgent')}"
        assert c.put(tag_url, headers=auth, json={"order": 0.5}).status_code == 200
        tags = c.get(f"{V3}/user/{u}/rooms/{room}/tags", headers=auth).json()["tags"]
        assert tags == {"u.work/urgent": {"order": 0.5}}
        assert c.delete(tag_url, headers=auth).status_code == 200
        assert c.get(f"{V3}/user/{u}/rooms/{room}/tags", headers=auth).json()["tags"] == {}
        # The profile of a user whose localpart holds "/".
        r = c.put(f"{V3}/profile/{u}/displayname", headers=auth, json={"displayname": "A"})
        assert r.status_code == 200, r.text
        assert c.get(f"{V3}/profile/{u}/displayname").json() == {"displayname": "A"}


def test_media_download_with_a_path_as_file_name(server, alice) -> None:
    _, auth = alice
    with server.client() as c:
        r = c.post(
            "/_matrix/media/v3/upload",
            headers={**auth, "Content-Type": "text/plain"},
            content=b"hello",
        )
        assert r.status_code == 200, r.text
        media_id = r.json()["content_uri"].rsplit("/", 1)[1]
        name = "/home/alice/Downloads/notes.txt"
        r = c.get(f"{V1}/media/download/{server.server_name}/{media_id}/{q(name)}", headers=auth)
        assert r.status_code == 200, r.text
        assert r.content == b"hello"
        assert "notes.txt" in r.headers["Content-Disposition"]


def test_relations_with_slashes_in_every_segment(server, alice, room) -> None:
    _, auth = alice
    with server.client() as c:
        parent = ""
        for i in range(64):  # room-v3 event IDs: about 1 in 2 holds a "/"
            r = c.put(
                f"{V3}/rooms/{room}/send/m.room.message/p{i}",
                headers=auth,
                json={"msgtype": "m.text", "body": "parent"},
            )
            parent = r.json()["event_id"]
            if "/" in parent:
                break
        assert "/" in parent
        r = c.put(
            f"{V3}/rooms/{room}/send/{q('org.example/child')}/child",
            headers=auth,
            json={"m.relates_to": {"rel_type": "org.example/rel", "event_id": parent}},
        )
        assert r.status_code == 200, r.text
        child = r.json()["event_id"]
        base = f"{V1}/rooms/{room}/relations/{q(parent)}"
        for url in (
            base,
            f"{base}/{q('org.example/rel')}",
            f"{base}/{q('org.example/rel')}/{q('org.example/child')}",
        ):
            r = c.get(url, headers=auth)
            assert r.status_code == 200, (url, r.text)
            assert [e["event_id"] for e in r.json()["chunk"]] == [child], url
        r = c.get(f"{base}/{q('org.example/rel')}/org.example", headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["chunk"] == []


def test_to_device_devices_and_push_rules(server, alice) -> None:
    user_id, auth = alice
    with server.client() as c:
        r = server.login("alice/slash", device_id="dev/1")
        assert r.status_code == 200, r.text
        r = c.get(f"{V3}/devices/{q('dev/1')}", headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["device_id"] == "dev/1"
        r = c.put(
            f"{V3}/sendToDevice/{q('org.example/ping')}/{q('t/1')}",
            headers=auth,
            json={"messages": {user_id: {"dev/1": {"x": 1}}}},
        )
        assert r.status_code == 200, r.text
        rule = f"{V3}/pushrules/global/override/{q('a/b')}"
        r = c.put(rule, headers=auth, json={"actions": ["notify"], "conditions": []})
        # The spec forbids "/" in rule IDs: the route is found, and the rule refused.
        assert r.status_code == 400, r.text
        assert c.get(rule, headers=auth).status_code == 404


def test_an_encoded_static_part_still_matches(server: RunningServer) -> None:
    with httpx.Client(base_url=server.base_url) as c:
        assert c.get("/_matrix/client/%76ersions").status_code == 200
