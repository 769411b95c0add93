"""m.room.canonical_alias must name aliases that point at the room: 400 M_BAD_ALIAS
(or M_INVALID_PARAM for a malformed one), and nothing is stored (issue #9)."""

from __future__ import annotations

from urllib.parse import quote

import httpx

from tests.harness import RunningServer

V3 = "/_matrix/client/v3"


def _user(server: RunningServer, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.register(name)['access_token']}"}


def _alias_state(c: httpx.Client, auth: dict[str, str], room: str) -> httpx.Response:
    return c.get(f"{V3}/rooms/{room}/state/m.room.canonical_alias", headers=auth)


def test_put_state_checks_every_new_alias(server: RunningServer, new_user: str) -> None:
    auth = _user(server, new_user)
    hs = server.server_name
    with server.client() as c:
        room = c.post(f"{V3}/createRoom", headers=auth, json={}).json()["room_id"]
        other = c.post(f"{V3}/createRoom", headers=auth, json={}).json()["room_id"]
        mine, theirs = f"#{new_user}-mine:{hs}", f"#{new_user}-theirs:{hs}"
        for alias, target in ((mine, room), (theirs, other)):
            r = c.put(f"{V3}/directory/room/{quote(alias)}", headers=auth, json={"room_id": target})
            assert r.status_code == 200, r.text
        url = f"{V3}/rooms/{room}/state/m.room.canonical_alias"
        for content, errcode in (
            ({"alias": f"#{new_user}-nowhere:{hs}"}, "M_BAD_ALIAS"),
            ({"alias": theirs}, "M_BAD_ALIAS"),
            ({"alias": mine, "alt_aliases": [theirs]}, "M_BAD_ALIAS"),
            ({"alt_aliases": [f"#{new_user}-nowhere:{hs}"]}, "M_BAD_ALIAS"),
            ({"alias": "#remote:elsewhere.example"}, "M_BAD_ALIAS"),
            ({"alias": "not an alias"}, "M_INVALID_PARAM"),
            ({"alias": 5}, "M_INVALID_PARAM"),
            ({"alt_aliases": mine}, "M_INVALID_PARAM"),
            ({"alt_aliases": [mine, "#no-colon"]}, "M_INVALID_PARAM"),
        ):
            r = c.put(url, headers=auth, json=content)
            assert r.status_code == 400, (content, r.text)
            assert r.json()["errcode"] == errcode, content
            assert _alias_state(c, auth, room).status_code == 404, content  # nothing stored
        r = c.put(url, headers=auth, json={"alias": mine, "alt_aliases": [mine]})
        assert r.status_code == 200, r.text
        assert _alias_state(c, auth, room).json() == {"alias": mine, "alt_aliases": [mine]}
        r = c.put(url, headers=auth, json={"alias": mine, "alt_aliases": [theirs]})
        assert r.json()["errcode"] == "M_BAD_ALIAS"
        assert _alias_state(c, auth, room).json() == {"alias": mine, "alt_aliases": [mine]}
        # Clearing it is always allowed.
        assert c.put(url, headers=auth, json={}).status_code == 200


def test_alias_rules_do_not_bypass_power_levels(server: RunningServer, new_user: str) -> None:
    owner = _user(server, new_user)
    intruder = _user(server, f"{new_user}-x")
    hs = server.server_name
    with server.client() as c:
        r = c.post(f"{V3}/createRoom", headers=owner, json={"preset": "public_chat"})
        room = r.json()["room_id"]
        assert c.post(f"{V3}/rooms/{room}/join", headers=intruder, json={}).status_code == 200
        alias = f"#{new_user}-ok:{hs}"
        assert (
            c.put(
                f"{V3}/directory/room/{quote(alias)}", headers=owner, json={"room_id": room}
            ).status_code
            == 200
        )
        r = c.put(
            f"{V3}/rooms/{room}/state/m.room.canonical_alias",
            headers=intruder,
            json={"alias": alias},
        )
        assert r.status_code == 403, r.text
        assert _alias_state(c, owner, room).status_code == 404


def test_create_room(server: RunningServer, new_user: str) -> None:
    auth = _user(server, new_user)
    hs = server.server_name
    with server.client() as c:
        r = c.post(f"{V3}/createRoom", headers=auth, json={"room_alias_name": new_user})
        assert r.status_code == 200, r.text
        room = r.json()["room_id"]
        assert _alias_state(c, auth, room).json() == {"alias": f"#{new_user}:{hs}"}
        before = c.get(f"{V3}/joined_rooms", headers=auth).json()["joined_rooms"]
        for body, errcode in (
            (
                {
                    "initial_state": [
                        {
                            "type": "m.room.canonical_alias",
                            "content": {"alias": f"#{new_user}:{hs}"},
                        }
                    ]
                },
                "M_BAD_ALIAS",  # points at the first room
            ),
            (
                {
                    "room_alias_name": f"{new_user}-2",
                    "initial_state": [
                        {
                            "type": "m.room.canonical_alias",
                            "content": {"alt_aliases": [f"#{new_user}-3:{hs}"]},
                        }
                    ],
                },
                "M_BAD_ALIAS",
            ),
            (
                {
                    "initial_state": [
                        {"type": "m.room.canonical_alias", "content": {"alias": "nope"}}
                    ]
                },
                "M_INVALID_PARAM",
            ),
        ):
            r = c.post(f"{V3}/createRoom", headers=auth, json=body)
            assert r.status_code == 400, (body, r.text)
            assert r.json()["errcode"] == errcode
        assert c.get(f"{V3}/joined_rooms", headers=auth).json()["joined_rooms"] == before
        r = c.get(f"{V3}/directory/room/{quote(f'#{new_user}-2:{hs}')}")
        assert r.status_code == 404  # the refused createRoom made no alias either
        # Its own new alias may be named in initial_state.
        r = c.post(
            f"{V3}/createRoom",
            headers=auth,
            json={
                "room_alias_name": f"{new_user}-4",
                "initial_state": [
                    {
                        "type": "m.room.canonical_alias",
                        "content": {
                            "alias": f"#{new_user}-4:{hs}",
                            "alt_aliases": [f"#{new_user}-4:{hs}"],
                        },
                    }
                ],
            },
        )
        assert r.status_code == 200, r.text


def test_deleting_an_alias_takes_it_out_of_the_event(server: RunningServer, new_user: str) -> None:
    """As Synapse (SyTest 30rooms/05aliases.pl "Can delete canonical alias")."""
    auth = _user(server, new_user)
    hs = server.server_name
    with server.client() as c:
        room = c.post(f"{V3}/createRoom", headers=auth, json={}).json()["room_id"]
        one, two = f"#{new_user}-1:{hs}", f"#{new_user}-2:{hs}"
        for alias in (one, two):
            r = c.put(f"{V3}/directory/room/{quote(alias)}", headers=auth, json={"room_id": room})
            assert r.status_code == 200
        url = f"{V3}/rooms/{room}/state/m.room.canonical_alias"
        r = c.put(url, headers=auth, json={"alias": one, "alt_aliases": [one, two]})
        assert r.status_code == 200, r.text
        assert c.delete(f"{V3}/directory/room/{quote(one)}", headers=auth).status_code == 200
        assert _alias_state(c, auth, room).json() == {"alt_aliases": [two]}
        assert c.delete(f"{V3}/directory/room/{quote(two)}", headers=auth).status_code == 200
        assert _alias_state(c, auth, room).json() == {"alt_aliases": []}


def test_only_new_aliases_are_checked(server: RunningServer, new_user: str) -> None:
    """As Synapse: an alias gone from the directory but still in the event does not
    block other changes. Its creator (no power in the room) deleted it, so the event
    could not be updated on deletion."""
    owner = _user(server, new_user)
    helper = _user(server, f"{new_user}-h")
    hs = server.server_name
    with server.client() as c:
        r = c.post(f"{V3}/createRoom", headers=owner, json={"preset": "public_chat"})
        room = r.json()["room_id"]
        assert c.post(f"{V3}/rooms/{room}/join", headers=helper, json={}).status_code == 200
        theirs = f"#{new_user}-h:{hs}"
        r = c.put(f"{V3}/directory/room/{quote(theirs)}", headers=helper, json={"room_id": room})
        assert r.status_code == 200, r.text
        url = f"{V3}/rooms/{room}/state/m.room.canonical_alias"
        assert c.put(url, headers=owner, json={"alt_aliases": [theirs]}).status_code == 200
        assert c.delete(f"{V3}/directory/room/{quote(theirs)}", headers=helper).status_code == 200
        assert _alias_state(c, owner, room).json() == {"alt_aliases": [theirs]}
        mine = f"#{new_user}-o:{hs}"
        r = c.put(f"{V3}/directory/room/{quote(mine)}", headers=owner, json={"room_id": room})
        assert r.status_code == 200
        r = c.put(url, headers=owner, json={"alias": mine, "alt_aliases": [theirs]})
        assert r.status_code == 200, r.text
