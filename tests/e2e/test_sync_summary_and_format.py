"""/sync details through the real server: the room summary's ``m.heroes`` only for rooms
without a name, filters refusing bad room and user IDs, and ``event_format:
federation`` (client-server API "Filtering", sync.yaml RoomSummary)."""

from __future__ import annotations

import itertools
import json

import httpx

from tests.harness import RunningServer

V3 = "/_matrix/client/v3"
_names = itertools.count(1)


def _user(server: RunningServer) -> tuple[str, dict[str, str]]:
    name = f"summ{next(_names)}"
    token = server.register(name)["access_token"]
    return f"@{name}:{server.server_name}", {"Authorization": f"Bearer {token}"}


def _sync_room(c: httpx.Client, h: dict[str, str], room: str, **params: str) -> dict:
    r = c.get(f"{V3}/sync", headers=h, params=params)
    assert r.status_code == 200, r.text
    return r.json()["rooms"]["join"][room]


def test_heroes_only_for_rooms_without_a_name(server: RunningServer) -> None:
    with server.client() as c:
        _, ah = _user(server)
        bob, bh = _user(server)
        unnamed = c.post(f"{V3}/createRoom", headers=ah, json={"invite": [bob]}).json()["room_id"]
        named = c.post(
            f"{V3}/createRoom", headers=ah, json={"invite": [bob], "name": "A name"}
        ).json()["room_id"]
        aliased = c.post(
            f"{V3}/createRoom",
            headers=ah,
            json={"invite": [bob], "room_alias_name": f"al{next(_names)}"},
        ).json()["room_id"]
        for room in (unnamed, named, aliased):
            assert c.post(f"{V3}/join/{room}", headers=bh).status_code == 200
        assert _sync_room(c, ah, unnamed)["summary"] == {
            "m.heroes": [bob],
            "m.joined_member_count": 2,
            "m.invited_member_count": 0,
        }
        for room in (named, aliased):
            assert _sync_room(c, ah, room)["summary"] == {
                "m.joined_member_count": 2,
                "m.invited_member_count": 0,
            }
        # An emptied name makes the room unnamed again.
        r = c.put(f"{V3}/rooms/{named}/state/m.room.name", headers=ah, json={"name": ""})
        assert r.status_code == 200
        assert _sync_room(c, ah, named)["summary"]["m.heroes"] == [bob]


def test_filters_refuse_bad_room_and_user_ids(server: RunningServer) -> None:
    with server.client() as c:
        alice, ah = _user(server)
        good = {"room": {"rooms": ["!abc:example.org"], "timeline": {"senders": [alice]}}}
        r = c.post(f"{V3}/user/{alice}/filter", headers=ah, json=good)
        assert r.status_code == 200
        first = int(r.json()["filter_id"])
        bad = [
            {"room": {"rooms": ["not_a_room_id"]}},
            {"room": {"not_rooms": ["#alias:example.org"]}},
            {"room": {"timeline": {"rooms": ["not_a_room_id"]}}},
            {"room": {"state": {"not_rooms": ["x"]}}},
            {"room": {"timeline": {"senders": ["not_a_sender_id"]}}},
            {"presence": {"not_senders": ["nobody"]}},
        ]
        for body in bad:
            r = c.post(f"{V3}/user/{alice}/filter", headers=ah, json=body)
            assert r.status_code == 400, body
            assert r.json()["errcode"] == "M_BAD_JSON"
            r = c.get(f"{V3}/sync", headers=ah, params={"filter": json.dumps(body)})
            assert r.status_code == 400, body
        # Nothing was stored: the next filter gets the next ID.
        r = c.post(f"{V3}/user/{alice}/filter", headers=ah, json={"room": {"not_rooms": []}})
        assert r.status_code == 200
        assert int(r.json()["filter_id"]) == first + 1


def test_event_format_federation(server: RunningServer) -> None:
    with server.client() as c:
        _, ah = _user(server)
        room = c.post(f"{V3}/createRoom", headers=ah, json={}).json()["room_id"]
        sent = c.put(
            f"{V3}/rooms/{room}/send/m.room.message/fed1",
            headers=ah,
            json={"msgtype": "m.text", "body": "Test message"},
        ).json()["event_id"]
        flt = {"event_format": "federation", "room": {"timeline": {"limit": 1}}}
        entry = _sync_room(c, ah, room, filter=json.dumps(flt))
        (event,) = entry["timeline"]["events"]
        assert event["event_id"] == sent
        assert event["room_id"] == room
        assert event["content"]["body"] == "Test message"
        for key in ("prev_events", "auth_events", "depth", "hashes", "signatures"):
            assert key in event, key
        assert event["unsigned"]["transaction_id"] == "fed1"
        assert all("signatures" in e for e in entry["state"]["events"])
        # The default stays the client format.
        plain = _sync_room(c, ah, room, filter=json.dumps({"room": {"timeline": {"limit": 1}}}))
        assert "signatures" not in plain["timeline"]["events"][0]
        r = c.get(f"{V3}/sync", headers=ah, params={"filter": '{"event_format": "raw"}'})
        assert r.status_code == 400
