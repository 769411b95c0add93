"""Search, the public room list, room upgrades, spaces, summaries, reports, mutual
rooms and timestamp_to_event through the real server: raw HTTP for exact answers,
matrix-nio for a real client's view of the directory and of a space."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import nio
import pytest

from tests.harness import RunningServer, make_config, running_server

V3 = "/_matrix/client/v3"
V1 = "/_matrix/client/v1"
_txn = itertools.count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Many messages are sent here: a generous message rate limit."""
    config = make_config(
        tmp_path_factory.mktemp("search"), rc_message={"per_second": 1000, "burst_count": 1000}
    )
    with running_server(config) as s:
        yield s
    assert "Traceback" not in s.log_text(), s.log_text()


class User:
    def __init__(self, server: RunningServer, name: str) -> None:
        info = server.register(name)
        self.user_id = info["user_id"]
        self.headers = {"Authorization": f"Bearer {info['access_token']}"}
        self.c = server.client()

    def post(self, path: str, body: object = None, **kw: object) -> httpx.Response:
        return self.c.post(path, headers=self.headers, json=body if body is not None else {}, **kw)  # type: ignore[arg-type]

    def get(self, path: str, **kw: object) -> httpx.Response:
        return self.c.get(path, headers=self.headers, **kw)  # type: ignore[arg-type]

    def put(self, path: str, body: object) -> httpx.Response:
        return self.c.put(path, headers=self.headers, json=body)

    def create(self, **body: object) -> str:
        r = self.post(f"{V3}/createRoom", body)
        assert r.status_code == 200, r.text
        return str(r.json()["room_id"])

    def join(self, room: str) -> None:
        r = self.post(f"{V3}/join/{quote(room)}")
        assert r.status_code == 200, r.text

    def say(self, room: str, body: str) -> str:
        r = self.put(
            f"{V3}/rooms/{room}/send/m.room.message/t{next(_txn)}",
            {"msgtype": "m.text", "body": body},
        )
        assert r.status_code == 200, r.text
        return str(r.json()["event_id"])

    def state(self, room: str, etype: str, content: object, key: str = "") -> str:
        r = self.put(f"{V3}/rooms/{room}/state/{etype}/{key}", content)
        assert r.status_code == 200, r.text
        return str(r.json()["event_id"])

    def search(self, criteria: dict[str, object], next_batch: str | None = None) -> dict:
        params = {"next_batch": next_batch} if next_batch else {}
        r = self.post(
            f"{V3}/search", {"search_categories": {"room_events": criteria}}, params=params
        )
        assert r.status_code == 200, r.text
        return r.json()["search_categories"]["room_events"]


@pytest.fixture
def users(server: RunningServer, new_user: str) -> Iterator[tuple[User, User, User]]:
    trio_ = (
        User(server, new_user + "a"),
        User(server, new_user + "b"),
        User(server, new_user + "c"),
    )
    yield trio_
    for u in trio_:
        u.c.close()


def _error(r: httpx.Response, status: int, errcode: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["errcode"] == errcode, r.text


# --- search ------------------------------------------------------------------------------


def test_search_ranks_and_paginates(users) -> None:
    a, _, _ = users
    room = a.create(name="Search room")
    best = a.say(room, "martians martians martians attack")
    ids = {best}
    for i in range(12):
        ids.add(a.say(room, f"message {i} about martians and the weather"))
    a.say(room, "nothing relevant here")
    first = a.search({"search_term": "martians", "filter": {"limit": 5}})
    assert first["count"] == 13
    assert len(first["results"]) == 5
    assert first["results"][0]["result"]["event_id"] == best
    ranks = [r["rank"] for r in first["results"]]
    assert ranks == sorted(ranks, reverse=True)
    assert "martians" in first["highlights"]
    seen = [r["result"]["event_id"] for r in first["results"]]
    token = first.get("next_batch")
    while token:
        page = a.search({"search_term": "martians", "filter": {"limit": 5}}, token)
        seen += [r["result"]["event_id"] for r in page["results"]]
        token = page.get("next_batch")
    assert len(seen) == len(set(seen)) == 13
    assert set(seen) == ids


def test_search_recent_order_prefix_and_keys(users) -> None:
    a, _, _ = users
    room = a.create(name="Weatherproof", topic="a topic about umbrellas")
    ids = [a.say(room, f"rain number {i}") for i in range(4)]
    got = a.search({"search_term": "rain", "order_by": "recent", "filter": {"limit": 3}})
    assert [r["result"]["event_id"] for r in got["results"]] == ids[::-1][:3]
    more = a.search(
        {"search_term": "rain", "order_by": "recent", "filter": {"limit": 3}}, got["next_batch"]
    )
    assert [r["result"]["event_id"] for r in more["results"]] == [ids[0]]
    assert "next_batch" not in more
    # Prefixes match (porter stemming and prefix queries): "umbrella" finds "umbrellas".
    topic = a.search({"search_term": "umbrella", "keys": ["content.topic"]})
    assert [r["result"]["type"] for r in topic["results"]] == ["m.room.topic"]
    name = a.search({"search_term": "weatherproof", "keys": ["content.name"]})
    assert [r["result"]["type"] for r in name["results"]] == ["m.room.name"]
    assert a.search({"search_term": "weatherproof", "keys": ["content.body"]})["results"] == []


def test_search_hides_other_rooms_left_rooms_and_redacted_events(users) -> None:
    a, b, _ = users
    secret = a.create(name="secret")
    a.say(secret, "zanzibar plans")
    assert b.search({"search_term": "zanzibar"})["results"] == []
    shared = a.create(preset="public_chat")
    b.join(shared)
    before = a.say(shared, "zanzibar before leaving")
    gone = a.say(shared, "zanzibar to be redacted")
    r = a.put(f"{V3}/rooms/{shared}/redact/{gone}/r{next(_txn)}", {"reason": "oops"})
    assert r.status_code == 200, r.text
    assert b.post(f"{V3}/rooms/{shared}/leave").status_code == 200
    a.say(shared, "zanzibar after leaving")
    found = b.search({"search_term": "zanzibar"})
    assert [x["result"]["event_id"] for x in found["results"]] == [before]
    mine = a.search({"search_term": "zanzibar", "order_by": "recent"})
    assert gone not in [x["result"]["event_id"] for x in mine["results"]]
    assert len(mine["results"]) == 3


def test_search_history_visibility_joined(users) -> None:
    a, b, _ = users
    room = a.create(
        preset="public_chat",
        initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}
        ],
    )
    a.say(room, "quokka before b joined")
    b.join(room)
    after = a.say(room, "quokka after b joined")
    got = b.search({"search_term": "quokka"})
    assert [x["result"]["event_id"] for x in got["results"]] == [after]


def test_search_filter_context_groups_state(users) -> None:
    a, b, _ = users
    one = a.create(preset="public_chat", name="one")
    two = a.create(preset="public_chat", name="two")
    b.join(one)
    b.join(two)
    a.say(one, "before the wombat")
    hit = b.say(one, "wombat in room one")
    a.say(one, "after the wombat")
    other = a.say(two, "wombat in room two")
    only_two = b.search({"search_term": "wombat", "filter": {"rooms": [two]}})
    assert [x["result"]["event_id"] for x in only_two["results"]] == [other]
    senders = b.search({"search_term": "wombat", "filter": {"senders": [b.user_id]}})
    assert [x["result"]["event_id"] for x in senders["results"]] == [hit]
    got = b.search(
        {
            "search_term": "wombat",
            "filter": {"rooms": [one], "senders": [b.user_id]},
            "event_context": {"before_limit": 1, "after_limit": 1, "include_profile": True},
            "groupings": {"group_by": [{"key": "room_id"}, {"key": "sender"}]},
            "include_state": True,
        }
    )
    result = got["results"][0]
    assert result["result"]["event_id"] == hit
    context = result["context"]
    assert [e["content"]["body"] for e in context["events_before"]] == ["before the wombat"]
    assert [e["content"]["body"] for e in context["events_after"]] == ["after the wombat"]
    assert {"start", "end"} <= set(context)
    assert b.user_id in context["profile_info"]
    assert got["groups"]["room_id"][one]["results"] == [hit]
    assert got["groups"]["sender"][b.user_id]["results"] == [hit]
    assert any(e["type"] == "m.room.create" for e in got["state"][one])


def test_search_errors(server: RunningServer, users) -> None:
    a, _, _ = users
    url = f"{V3}/search"
    _error(a.post(url, {}), 400, "M_MISSING_PARAM")
    _error(a.post(url, {"search_categories": []}), 400, "M_BAD_JSON")
    _error(a.post(url, {"search_categories": {"room_events": {}}}), 400, "M_MISSING_PARAM")
    bad = [
        ({"search_term": 5}, "M_BAD_JSON"),
        ({"search_term": "x", "keys": ["content.nope"]}, "M_INVALID_PARAM"),
        ({"search_term": "x", "keys": "content.body"}, "M_BAD_JSON"),
        ({"search_term": "x", "order_by": "best"}, "M_INVALID_PARAM"),
        ({"search_term": "x", "filter": []}, "M_BAD_JSON"),
        ({"search_term": "x", "event_context": {"before_limit": "1"}}, "M_BAD_JSON"),
        ({"search_term": "x", "groupings": {"group_by": [{"key": "type"}]}}, "M_INVALID_PARAM"),
        ({"search_term": "x" * 1001}, "M_INVALID_PARAM"),
    ]
    for criteria, errcode in bad:
        r = a.post(url, {"search_categories": {"room_events": criteria}})
        _error(r, 400, errcode)
    body = {"search_categories": {"room_events": {"search_term": "x"}}}
    _error(a.post(url, body, params={"next_batch": "garbage"}), 400, "M_INVALID_PARAM")
    r = a.c.post(url, content=b"not json", headers=a.headers)
    _error(r, 400, "M_NOT_JSON")
    with server.client() as c:
        _error(c.post(url, json=body), 401, "M_MISSING_TOKEN")
    # An unknown category is ignored; operators in the term are just words.
    r = a.post(url, {"search_categories": {"future_things": {}}})
    assert r.json() == {"search_categories": {}}
    odd = a.search({"search_term": 'NEAR(" OR * -'})
    assert odd["results"] == []


# --- public rooms ------------------------------------------------------------------------


def test_public_rooms_order_filter_pagination(server: RunningServer, users, new_user) -> None:
    a, b, c = users
    tag = new_user
    big = a.create(visibility="public", name=f"{tag} Big", topic="the biggest room")
    mid = a.create(visibility="public", name=f"{tag} Middle", room_alias_name=f"{tag}mid")
    small = a.create(visibility="public", name=f"{tag} Small")
    a.create(visibility="private", name=f"{tag} Hidden")
    for u in (b, c):
        u.join(big)
    b.join(mid)
    r = a.post(f"{V3}/publicRooms", {"filter": {"generic_search_term": tag}})
    assert r.status_code == 200, r.text
    chunk = r.json()["chunk"]
    assert [x["room_id"] for x in chunk] == [big, mid, small]
    assert chunk[0]["num_joined_members"] == 3
    assert chunk[0]["topic"] == "the biggest room"
    assert chunk[0]["join_rule"] == "public"
    assert chunk[0]["world_readable"] is False
    assert chunk[0]["guest_can_join"] is False
    assert chunk[1]["canonical_alias"] == f"#{tag}mid:{server.server_name}"
    by_alias = a.post(f"{V3}/publicRooms", {"filter": {"generic_search_term": f"#{tag}MID"}})
    assert [x["room_id"] for x in by_alias.json()["chunk"]] == [mid]
    by_topic = a.post(f"{V3}/publicRooms", {"filter": {"generic_search_term": "BIGGEST"}})
    assert big in [x["room_id"] for x in by_topic.json()["chunk"]]
    # Pagination forwards and back with the same filter.
    flt = {"generic_search_term": tag}
    p1 = a.post(f"{V3}/publicRooms", {"limit": 2, "filter": flt}).json()
    assert [x["room_id"] for x in p1["chunk"]] == [big, mid]
    assert "prev_batch" not in p1
    p2 = a.post(f"{V3}/publicRooms", {"limit": 2, "filter": flt, "since": p1["next_batch"]}).json()
    assert [x["room_id"] for x in p2["chunk"]] == [small]
    assert "next_batch" not in p2
    back = a.post(f"{V3}/publicRooms", {"limit": 2, "filter": flt, "since": p2["prev_batch"]})
    assert [x["room_id"] for x in back.json()["chunk"]] == [big, mid]
    # GET needs no access token; it lists everything published.
    with server.client() as anon:
        r = anon.get(f"{V3}/publicRooms", params={"limit": 500})
        assert r.status_code == 200, r.text
        listed = [x["room_id"] for x in r.json()["chunk"]]
        assert {big, mid, small} <= set(listed)
        assert r.json()["total_room_count_estimate"] >= 3
        r = anon.get(f"{V3}/publicRooms", params={"server": server.server_name})
        assert r.status_code == 200
        _error(anon.post(f"{V3}/publicRooms", json={}), 401, "M_MISSING_TOKEN")


def test_public_rooms_room_types_and_errors(server: RunningServer, users, new_user) -> None:
    a, _, _ = users
    space = a.create(
        visibility="public", name=f"{new_user} space", creation_content={"type": "m.space"}
    )
    plain = a.create(visibility="public", name=f"{new_user} plain")

    def listed(types: list[str | None]) -> list[str]:
        body = {"filter": {"generic_search_term": new_user, "room_types": types}}
        r = a.post(f"{V3}/publicRooms", body)
        assert r.status_code == 200, r.text
        return [x["room_id"] for x in r.json()["chunk"]]

    assert listed(["m.space"]) == [space]
    assert listed([None]) == [plain]
    assert sorted(listed([None, "m.space"])) == sorted([space, plain])
    got = a.post(f"{V3}/publicRooms", {"filter": {"generic_search_term": new_user}}).json()
    assert {x["room_id"]: x.get("room_type") for x in got["chunk"]}[space] == "m.space"
    url = f"{V3}/publicRooms"
    # Another server's directory is asked over federation: one that cannot be reached
    # is 502 (as Synapse); one that may not be asked (private addresses are blocked by
    # the default ip_range_blacklist) is 403.
    _error(a.get(url, params={"server": "127.0.0.1:1"}), 403, "M_FORBIDDEN")
    _error(a.get(url, params={"server": "bad server!"}), 400, "M_INVALID_PARAM")
    _error(a.get(url, params={"limit": "x"}), 400, "M_INVALID_PARAM")
    _error(a.get(url, params={"limit": "-1"}), 400, "M_INVALID_PARAM")
    _error(a.get(url, params={"since": "bogus"}), 400, "M_INVALID_PARAM")
    _error(a.post(url, {"limit": "2"}), 400, "M_BAD_JSON")
    _error(a.post(url, {"filter": "x"}), 400, "M_BAD_JSON")
    _error(a.post(url, {"filter": {"generic_search_term": 3}}), 400, "M_BAD_JSON")
    _error(a.post(url, {"filter": {"room_types": "m.space"}}), 400, "M_BAD_JSON")
    _error(a.post(url, {"since": 5}), 400, "M_BAD_JSON")
    r = a.post(url, {"include_all_networks": True})
    assert r.status_code == 200
    r = a.post(url, {"third_party_instance_id": "irc"})
    assert r.json()["chunk"] == []


def test_nio_lists_public_rooms(server: RunningServer, new_user: str) -> None:
    u = User(server, new_user)
    room = u.create(visibility="public", name=f"{new_user} nio listed")

    async def scenario() -> None:
        client = nio.AsyncClient(server.base_url, u.user_id)
        try:
            assert isinstance(await client.login("correct horse"), nio.LoginResponse)
            resp = await client.list_public_rooms(filter_generic_search_term=new_user)
            assert isinstance(resp, nio.responses.PublicRoomsResponse), resp
            assert [r.room_id for r in resp.public_rooms] == [room]
            assert resp.public_rooms[0].name == f"{new_user} nio listed"
            assert resp.public_rooms[0].num_joined_members == 1
        finally:
            await client.close()

    try:
        asyncio.run(scenario())
    finally:
        u.c.close()


# --- room upgrades -----------------------------------------------------------------------


def _state(u: User, room: str, etype: str, key: str = "") -> dict:
    r = u.get(f"{V3}/rooms/{room}/state/{etype}/{key}")
    assert r.status_code == 200, (etype, r.text)
    return r.json()


def test_upgrade_end_to_end(server: RunningServer, users, new_user) -> None:
    a, b, _ = users
    old = a.create(
        visibility="public",
        name="Upgrade me",
        topic="old topic",
        room_alias_name=f"{new_user}up",
        room_version="10",
    )
    b.join(old)
    a.state(old, "m.room.avatar", {"url": "mxc://x/y"})
    a.state(old, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"})
    extra_alias = f"#{new_user}up2:{server.server_name}"
    assert a.put(f"{V3}/directory/room/{quote(extra_alias)}", {"room_id": old}).status_code == 200
    r = a.post(f"{V3}/rooms/{old}/upgrade", {"new_version": "11"})
    assert r.status_code == 200, r.text
    new = r.json()["replacement_room"]
    assert new != old
    tombstone = _state(a, old, "m.room.tombstone")
    assert tombstone["replacement_room"] == new
    assert tombstone["body"]
    create = _state(a, new, "m.room.create")
    assert create["room_version"] == "11"
    assert create["predecessor"]["room_id"] == old
    # room_upgrades.md: the predecessor names the old room's last event, its tombstone
    # (as Synapse does).
    r = a.get(f"{V3}/rooms/{old}/state/m.room.tombstone/", params={"format": "event"})
    tombstone_id = r.json()["event_id"]
    assert create["predecessor"]["event_id"] == tombstone_id
    r = a.get(f"{V3}/rooms/{old}/event/{quote(tombstone_id)}")
    assert r.status_code == 200, r.text
    assert _state(a, new, "m.room.name") == {"name": "Upgrade me"}
    assert _state(a, new, "m.room.topic")["topic"] == "old topic"
    assert _state(a, new, "m.room.avatar") == {"url": "mxc://x/y"}
    assert _state(a, new, "m.room.encryption")["algorithm"] == "m.megolm.v1.aes-sha2"
    assert _state(a, new, "m.room.join_rules")["join_rule"] == "public"
    assert _state(a, new, "m.room.history_visibility")["history_visibility"] == "shared"
    # A public_chat room has no guest_access event (forbidden); the new room says so.
    assert _state(a, new, "m.room.guest_access") == {"guest_access": "forbidden"}
    new_pl = _state(a, new, "m.room.power_levels")
    assert new_pl["users"][a.user_id] == 100
    assert new_pl["events_default"] == 0
    old_pl = _state(a, old, "m.room.power_levels")
    assert old_pl["events_default"] == 50
    assert old_pl["invite"] == 50
    # The old room is locked: b may no longer talk there.
    r = b.put(f"{V3}/rooms/{old}/send/m.room.message/l{next(_txn)}", {"body": "hi"})
    _error(r, 403, "M_FORBIDDEN")
    # Aliases moved, with the canonical alias; the new room is published instead.
    alias = f"#{new_user}up:{server.server_name}"
    assert a.get(f"{V3}/directory/room/{quote(alias)}").json()["room_id"] == new
    assert a.get(f"{V3}/directory/room/{quote(extra_alias)}").json()["room_id"] == new
    assert _state(a, new, "m.room.canonical_alias")["alias"] == alias
    assert "alias" not in _state(a, old, "m.room.canonical_alias")
    assert a.get(f"{V3}/directory/list/room/{new}").json()["visibility"] == "public"
    assert a.get(f"{V3}/directory/list/room/{old}").json()["visibility"] == "private"
    # Members of the old (public) room can follow.
    b.join(new)


def test_upgrade_to_v12_with_additional_creators(users) -> None:
    a, b, _ = users
    old = a.create(preset="private_chat", invite=[b.user_id], room_version="11")
    b.join(old)
    r = a.post(
        f"{V3}/rooms/{old}/upgrade",
        {"new_version": "12", "additional_creators": [b.user_id]},
    )
    assert r.status_code == 200, r.text
    new = r.json()["replacement_room"]
    r = a.get(f"{V3}/rooms/{new}/state/m.room.create/", params={"format": "event"})
    create = r.json()
    assert create["content"]["additional_creators"] == [b.user_id]
    # A v12 room ID is its create event's hash: it can't name the tombstone that
    # names the room (Synapse leaves event_id out too).
    assert create["content"]["predecessor"] == {"room_id": old}
    tombstone = _state(a, old, "m.room.tombstone")
    assert tombstone["replacement_room"] == new
    pl = _state(a, new, "m.room.power_levels")
    assert a.user_id not in pl["users"]
    assert b.user_id not in pl["users"]
    assert _state(a, new, "m.room.join_rules")["join_rule"] == "invite"
    # And back from v12 to v11: the old creators get the top level.
    r = a.post(f"{V3}/rooms/{new}/upgrade", {"new_version": "11"})
    assert r.status_code == 200, r.text
    newer = r.json()["replacement_room"]
    pl = _state(a, newer, "m.room.power_levels")
    assert pl["users"][a.user_id] >= pl["events"]["m.room.tombstone"]
    assert pl["users"][b.user_id] == pl["users"][a.user_id]
    # So the creators can still do everything, e.g. upgrade again.
    assert a.post(f"{V3}/rooms/{newer}/invite", {"user_id": b.user_id}).status_code == 200
    b.join(newer)
    r = b.post(f"{V3}/rooms/{newer}/upgrade", {"new_version": "11"})
    assert r.status_code == 200, r.text


def test_upgrade_errors(users) -> None:
    a, b, c = users
    room = a.create(preset="public_chat")
    b.join(room)
    url = f"{V3}/rooms/{room}/upgrade"
    _error(a.post(url, {"new_version": "99"}), 400, "M_UNSUPPORTED_ROOM_VERSION")
    _error(a.post(url, {}), 400, "M_MISSING_PARAM")
    _error(a.post(url, {"new_version": 11}), 400, "M_BAD_JSON")
    _error(a.post(url, {"new_version": "11", "additional_creators": "x"}), 400, "M_BAD_JSON")
    bad_creator = {"new_version": "12", "additional_creators": ["nobody"]}
    _error(a.post(url, bad_creator), 400, "M_INVALID_PARAM")
    _error(b.post(url, {"new_version": "11"}), 403, "M_FORBIDDEN")  # no power
    _error(c.post(url, {"new_version": "11"}), 403, "M_FORBIDDEN")  # not in the room
    _error(
        a.post(f"{V3}/rooms/!nope:test.local/upgrade", {"new_version": "11"}), 404, "M_NOT_FOUND"
    )
    _error(a.post(f"{V3}/rooms/nope/upgrade", {"new_version": "11"}), 400, "M_INVALID_PARAM")
    # Nothing changed in the room.
    r = a.get(f"{V3}/rooms/{room}/state/m.room.tombstone/")
    _error(r, 404, "M_NOT_FOUND")


# --- spaces ------------------------------------------------------------------------------


def _space(u: User, name: str, **extra: object) -> str:
    return u.create(name=name, creation_content={"type": "m.space"}, **extra)


def _add_child(u: User, space: str, child: str, **content: object) -> None:
    u.state(space, "m.space.child", {"via": ["test.local"], **content}, child)


def test_space_hierarchy(server: RunningServer, users) -> None:
    a, b, _ = users
    space = _space(a, "Top space", preset="public_chat")
    sub = _space(a, "Sub space", preset="public_chat")
    general = a.create(name="General", preset="public_chat")
    secret = a.create(name="Secret")  # private: b may not see it
    deep = a.create(name="Deep", preset="public_chat")
    _add_child(a, space, general, order="b")
    _add_child(a, space, sub, order="a", suggested=True)
    _add_child(a, space, secret, order="c")
    _add_child(a, space, "!remote:elsewhere.example", order="d")
    _add_child(a, sub, deep)
    _add_child(a, sub, space)  # a loop back to the top
    a.state(space, "m.space.child", {}, "!removed:test.local")  # no via: not a child
    r = b.get(f"{V1}/rooms/{space}/hierarchy")
    assert r.status_code == 200, r.text
    rooms = r.json()["rooms"]
    assert [x["room_id"] for x in rooms] == [space, sub, deep, general]
    top = rooms[0]
    assert top["room_type"] == "m.space"
    assert top["name"] == "Top space"
    assert top["num_joined_members"] == 1
    assert [c["state_key"] for c in top["children_state"]] == [
        sub,
        general,
        secret,
        "!remote:elsewhere.example",
    ]
    assert all("origin_server_ts" in c for c in top["children_state"])
    assert rooms[3]["children_state"] == []
    # a sees the private room too.
    mine = a.get(f"{V1}/rooms/{space}/hierarchy").json()["rooms"]
    assert [x["room_id"] for x in mine] == [space, sub, deep, general, secret]
    depth1 = b.get(f"{V1}/rooms/{space}/hierarchy", params={"max_depth": 1}).json()["rooms"]
    assert [x["room_id"] for x in depth1] == [space, sub, general]
    suggested = b.get(f"{V1}/rooms/{space}/hierarchy", params={"suggested_only": "true"})
    # Only suggested children, at every level (deep is not suggested in sub).
    assert [x["room_id"] for x in suggested.json()["rooms"]] == [space, sub]
    # Pagination: two at a time.
    seen: list[str] = []
    params: dict[str, object] = {"limit": 2}
    while True:
        page = a.get(f"{V1}/rooms/{space}/hierarchy", params=params).json()
        seen += [x["room_id"] for x in page["rooms"]]
        if "next_batch" not in page:
            break
        params = {"limit": 2, "from": page["next_batch"]}
    assert seen == [space, sub, deep, general, secret]
    first = a.get(f"{V1}/rooms/{space}/hierarchy", params={"limit": 1}).json()
    r = a.get(f"{V1}/rooms/{space}/hierarchy", params={"from": first["next_batch"], "max_depth": 3})
    _error(r, 400, "M_INVALID_PARAM")


def test_space_hierarchy_errors_and_nio(server: RunningServer, users) -> None:
    a, b, _ = users
    private = _space(a, "Private space")
    child = a.create(name="Child", preset="public_chat")
    _add_child(a, private, child)
    url = f"{V1}/rooms/{private}/hierarchy"
    _error(b.get(url), 403, "M_FORBIDDEN")
    _error(b.get(f"{V1}/rooms/!unknown:test.local/hierarchy"), 403, "M_FORBIDDEN")
    _error(a.get(url, params={"limit": 0}), 400, "M_INVALID_PARAM")
    _error(a.get(url, params={"limit": "x"}), 400, "M_INVALID_PARAM")
    _error(a.get(url, params={"max_depth": -1}), 400, "M_INVALID_PARAM")
    _error(a.get(url, params={"suggested_only": "yes"}), 400, "M_INVALID_PARAM")
    _error(a.get(url, params={"from": "garbage"}), 400, "M_INVALID_PARAM")
    with server.client() as anon:
        _error(anon.get(url), 401, "M_MISSING_TOKEN")

    async def scenario() -> None:
        client = nio.AsyncClient(server.base_url, a.user_id)
        try:
            assert isinstance(await client.login("correct horse"), nio.LoginResponse)
            resp = await client.space_get_hierarchy(private)
            assert isinstance(resp, nio.SpaceGetHierarchyResponse), resp
            assert [r["room_id"] for r in resp.rooms] == [private, child]
        finally:
            await client.close()

    asyncio.run(scenario())


# --- room summary ------------------------------------------------------------------------


def test_room_summary(server: RunningServer, users, new_user) -> None:
    a, b, _ = users
    public = a.create(preset="public_chat", name="Open", room_alias_name=f"{new_user}open")
    private = a.create(name="Closed")
    with server.client() as anon:
        r = anon.get(f"{V1}/room_summary/{quote(public)}")
        assert r.status_code == 200, r.text
        summary = r.json()
        assert summary["room_id"] == public
        assert summary["name"] == "Open"
        assert summary["join_rule"] == "public"
        assert summary["num_joined_members"] == 1
        assert summary["room_version"]
        assert "membership" not in summary
        alias = quote(f"#{new_user}open:{server.server_name}")
        assert anon.get(f"{V1}/room_summary/{alias}").json()["room_id"] == public
        _error(anon.get(f"{V1}/room_summary/{quote(private)}"), 404, "M_NOT_FOUND")
    assert a.get(f"{V1}/room_summary/{quote(private)}").json()["membership"] == "join"
    assert b.get(f"{V1}/room_summary/{quote(public)}").json()["membership"] == "leave"
    _error(b.get(f"{V1}/room_summary/{quote(private)}"), 404, "M_NOT_FOUND")
    _error(b.get(f"{V1}/room_summary/{quote('!nope:test.local')}"), 404, "M_NOT_FOUND")
    _error(b.get(f"{V1}/room_summary/{quote('#nope:test.local')}"), 404, "M_NOT_FOUND")
    _error(b.get(f"{V1}/room_summary/garbage"), 400, "M_INVALID_PARAM")
    r = a.get(f"/_matrix/client/unstable/im.nheko.summary/rooms/{quote(private)}/summary")
    assert r.json()["room_id"] == private


# --- reports -----------------------------------------------------------------------------


def test_reports(server: RunningServer, users) -> None:
    a, b, c = users
    room = a.create(preset="public_chat")
    b.join(room)
    bad = a.say(room, "something nasty")
    gone = a.say(room, "deleted soon")
    a.put(f"{V3}/rooms/{room}/redact/{gone}/r{next(_txn)}", {})
    r = b.post(f"{V3}/rooms/{room}/report/{bad}", {"reason": "nasty", "score": -100})
    assert r.status_code == 200, r.text
    assert r.json() == {}
    assert b.post(f"{V3}/rooms/{room}/report/{bad}", {}).status_code == 200
    _error(c.post(f"{V3}/rooms/{room}/report/{bad}", {"reason": "x"}), 404, "M_NOT_FOUND")
    _error(b.post(f"{V3}/rooms/{room}/report/$nope", {"reason": "x"}), 404, "M_NOT_FOUND")
    _error(b.post(f"{V3}/rooms/{room}/report/{gone}", {"reason": "x"}), 404, "M_NOT_FOUND")
    _error(b.post(f"{V3}/rooms/{room}/report/{bad}", {"reason": 5}), 400, "M_BAD_JSON")
    long = {"reason": "x" * 2001}
    _error(b.post(f"{V3}/rooms/{room}/report/{bad}", long), 400, "M_INVALID_PARAM")
    # Rooms: no membership needed, but a reason is.
    assert c.post(f"{V3}/rooms/{room}/report", {"reason": ""}).status_code == 200
    _error(c.post(f"{V3}/rooms/{room}/report", {}), 400, "M_MISSING_PARAM")
    r = c.post(f"{V3}/rooms/!nope:test.local/report", {"reason": "x"})
    _error(r, 404, "M_NOT_FOUND")
    # Users.
    assert c.post(f"{V3}/users/{quote(a.user_id)}/report", {"reason": "spam"}).status_code == 200
    r = c.post(f"{V3}/users/{quote('@ghost:test.local')}/report", {"reason": "x"})
    _error(r, 404, "M_NOT_FOUND")
    r = c.post(f"{V3}/users/{quote('@someone:elsewhere.example')}/report", {"reason": "x"})
    assert r.status_code == 200
    _error(c.post(f"{V3}/users/nobody/report", {"reason": "x"}), 400, "M_INVALID_PARAM")
    with server.client() as anon:
        r = anon.post(f"{V3}/rooms/{room}/report", json={"reason": "x"})
        _error(r, 401, "M_MISSING_TOKEN")


def test_reports_are_stored(tmp_path) -> None:
    """The reports land in the database for the admins."""
    import sqlite3

    config = make_config(tmp_path)
    with running_server(config) as s:
        u = User(s, "reporter")
        room = u.create()
        ev = u.say(room, "report me")
        assert u.post(f"{V3}/rooms/{room}/report/{ev}", {"reason": "why"}).status_code == 200
        u.c.close()
    db = sqlite3.connect(tmp_path / "data" / "homeserver.db")
    rows = db.execute("SELECT room_id, event_id, user_id, reason FROM event_reports").fetchall()
    assert rows == [(room, ev, u.user_id, "why")]


# --- timestamp_to_event ------------------------------------------------------------------


def test_timestamp_to_event(users) -> None:
    a, b, _ = users
    room = a.create(preset="private_chat")
    first = a.say(room, "one")
    time.sleep(0.05)
    middle_ts = int(time.time() * 1000)
    time.sleep(0.05)
    second = a.say(room, "two")
    url = f"{V1}/rooms/{room}/timestamp_to_event"
    r = a.get(url, params={"ts": middle_ts, "dir": "f"})
    assert r.status_code == 200, r.text
    assert r.json()["event_id"] == second
    assert isinstance(r.json()["origin_server_ts"], int)
    assert a.get(url, params={"ts": middle_ts, "dir": "b"}).json()["event_id"] == first
    future = int(time.time() * 1000) + 3_600_000
    assert a.get(url, params={"ts": future, "dir": "b"}).json()["event_id"] == second
    _error(a.get(url, params={"ts": future, "dir": "f"}), 404, "M_NOT_FOUND")
    _error(a.get(url, params={"dir": "f"}), 400, "M_MISSING_PARAM")
    _error(a.get(url, params={"ts": "soon", "dir": "f"}), 400, "M_INVALID_PARAM")
    _error(a.get(url, params={"ts": middle_ts}), 400, "M_MISSING_PARAM")
    _error(a.get(url, params={"ts": middle_ts, "dir": "x"}), 400, "M_INVALID_PARAM")
    _error(b.get(url, params={"ts": middle_ts, "dir": "f"}), 403, "M_FORBIDDEN")


# --- mutual rooms ------------------------------------------------------------------------


def test_mutual_rooms(users) -> None:
    a, b, c = users
    shared = sorted(a.create(preset="public_chat") for _ in range(2))
    for room in shared:
        b.join(room)
    a.create(preset="public_chat")  # a only
    for path in (
        f"{V1}/mutual_rooms",
        "/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms",
    ):
        r = a.get(path, params={"user_id": b.user_id})
        assert r.status_code == 200, r.text
        assert r.json() == {"joined": shared, "count": 2}
    assert a.get(f"{V1}/mutual_rooms", params={"user_id": c.user_id}).json()["joined"] == []
    r = a.get(f"{V1}/mutual_rooms", params={"user_id": "@ghost:test.local"})
    assert r.json() == {"joined": [], "count": 0}
    _error(a.get(f"{V1}/mutual_rooms"), 400, "M_MISSING_PARAM")
    _error(a.get(f"{V1}/mutual_rooms", params={"user_id": "nobody"}), 400, "M_INVALID_PARAM")
    _error(a.get(f"{V1}/mutual_rooms", params={"user_id": a.user_id}), 400, "M_INVALID_PARAM")
    r = a.get(f"{V1}/mutual_rooms", params={"user_id": b.user_id, "from": "%%%"})
    _error(r, 400, "M_INVALID_PARAM")


def test_space_hierarchy_restricted_child(users) -> None:
    a, b, c = users
    space = _space(a, "Club", preset="public_chat")
    members_only = a.create(
        name="Members only",
        initial_state=[
            {
                "type": "m.room.join_rules",
                "content": {
                    "join_rule": "restricted",
                    "allow": [{"type": "m.room_membership", "room_id": space}],
                },
            }
        ],
    )
    _add_child(a, space, members_only)
    b.join(space)
    rooms = b.get(f"{V1}/rooms/{space}/hierarchy").json()["rooms"]
    assert [x["room_id"] for x in rooms] == [space, members_only]
    assert rooms[1]["allowed_room_ids"] == [space]
    assert rooms[1]["join_rule"] == "restricted"
    # c is not in the space: the restricted room is not shown.
    rooms = c.get(f"{V1}/rooms/{space}/hierarchy").json()["rooms"]
    assert [x["room_id"] for x in rooms] == [space]
