"""Space hierarchies over federation, in process. Serving: ``GET /_matrix/federation/
v1/hierarchy/{roomId}`` answers a signed peer with the space, its child events and the
children it may see; a private room (or one we do not hold) is 404 to a server with no
member, and nothing of it leaks. Asking: our clients' ``/hierarchy`` of a space we hold
whose children live elsewhere asks the ``via`` servers, caches their answers, and shows
only what the user may see; ``/room_summary`` of a remote room with ``via``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from urllib.parse import quote

import pytest

from pocketserver.app import create_app
from pocketserver.cache import MemoryBudget
from pocketserver.federation.errors import FederationUnreachable
from pocketserver.federation.remote_hierarchy import PATH, RemoteHierarchy
from pocketserver.rooms.create import RoomSettings, create_room
from pocketserver.rooms.hierarchy import SpaceHierarchy
from pocketserver.storage import users as user_store
from tests.federation.queries_rig import Clock, ScriptedRemote, serving_env

from ..rooms.conftest import RemoteServer

US = "test.local"
ALICE = f"@alice:{US}"
PEER = "peer.example"


@pytest.fixture
async def env(tmp_path: Path):
    env = await serving_env(tmp_path, US)
    env.services.db.write_sync(user_store.insert_user, ALICE, None, 0)
    yield env
    env.services.db.close()


async def _room(services, preset: str, name: str, **kw) -> str:
    return await create_room(
        services.rooms, ALICE, RoomSettings(room_version="10", preset=preset, name=name, **kw)
    )


async def _child(services, space: str, child: str, via: str = US, **content) -> None:
    await services.rooms.send_event(space, ALICE, "m.space.child", {"via": [via], **content}, child)


async def _space(services, preset: str = "public_chat") -> str:
    return await _room(services, preset, "Space", creation_content={"type": "m.space"})


def _uri(room_id: str, suggested: bool | None = None) -> str:
    uri = f"/_matrix/federation/v1/hierarchy/{quote(room_id, safe='!:')}"
    return uri + ("" if suggested is None else f"?suggested_only={str(suggested).lower()}")


async def test_a_public_space_with_its_children_for_any_server(env) -> None:
    s = env.services
    space = await _space(s)
    lounge = await _room(s, "public_chat", "Lounge")
    secret = await _room(s, "private_chat", "Secret")
    suggested = await _room(s, "public_chat", "Suggested")
    await _child(s, space, lounge)
    await _child(s, space, secret)
    await _child(s, space, suggested, suggested=True)
    await _child(s, space, "!elsewhere:remote.test", via="remote.test")
    status, body = await env.get(_uri(space))
    assert status == 200, body
    assert body["room"]["room_id"] == space
    assert body["room"]["room_type"] == "m.space"
    assert body["room"]["name"] == "Space"
    assert sorted(c["state_key"] for c in body["room"]["children_state"]) == sorted(
        [lounge, secret, suggested, "!elsewhere:remote.test"]
    )
    assert all("origin_server_ts" in c for c in body["room"]["children_state"])
    assert sorted(c["name"] for c in body["children"]) == ["Lounge", "Suggested"]
    assert body["inaccessible_children"] == [secret]  # named, nothing about it told
    assert "Secret" not in str(body)
    # suggested_only: only the suggested child.
    status, body = await env.get(_uri(space, True))
    assert status == 200
    assert [c["state_key"] for c in body["room"]["children_state"]] == [suggested]
    assert [c["room_id"] for c in body["children"]] == [suggested]


async def test_a_private_room_is_404_to_a_server_with_no_member(env) -> None:
    s = env.services
    space = await _space(s, "private_chat")
    inner = await _room(s, "private_chat", "Inner sanctum", topic="plans")
    await _child(s, space, inner)
    for uri in (_uri(space), _uri(inner), _uri("!unknown:test.local"), _uri(space, True)):
        status, body = await env.get(uri)
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND"), uri
        assert "sanctum" not in str(body)
        assert "plans" not in str(body)
    # Unsigned: 401 before anything is looked up.
    r = await env.app.test_client().get(_uri(space))
    assert r.status_code == 401
    # A user of that server is invited: then it may see the space, not the child.
    await s.rooms.send_event(space, ALICE, "m.room.member", {"membership": "invite"}, f"@p:{PEER}")
    status, body = await env.get(_uri(space))
    assert status == 200, body
    assert body["inaccessible_children"] == [inner]
    assert body["children"] == []


async def test_a_restricted_room_is_seen_by_servers_in_an_allowed_room(env) -> None:
    s = env.services
    remote = RemoteServer(PEER)
    lobby = await _room(s, "public_chat", "Lobby")
    joined = await remote.send(
        s.rooms, lobby, f"@p:{PEER}", "m.room.member", {"membership": "join"}, f"@p:{PEER}"
    )
    assert joined.accepted, joined.rejected
    club = await _room(s, "private_chat", "Club")
    await s.rooms.send_event(
        club,
        ALICE,
        "m.room.join_rules",
        {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": lobby}]},
        "",
    )
    status, body = await env.get(_uri(club))
    assert status == 200, body
    assert body["room"]["allowed_room_ids"] == [lobby]
    # Another server, with nobody in the lobby: 404.
    other = env.net.add(type(env.peer)("other.example", env.peer.clock))
    status, body = await env.get(_uri(club), peer=other)
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")


# --- our clients' hierarchy with remote children ----------------------------------------

THEM = "remote.test"
R_SPACE = "!space:remote.test"
R_ROOM = "!room:remote.test"
R_PRIVATE = "!private:remote.test"
R_DEEP = "!deep:remote.test"


def _remote_answer(asked):
    return {
        "room": {
            "room_id": R_SPACE,
            "name": "Remote space",
            "room_type": "m.space",
            "join_rule": "public",
            "num_joined_members": 2,
            "world_readable": False,
            "guest_can_join": False,
            "children_state": [
                {
                    "type": "m.space.child",
                    "state_key": R_ROOM,
                    "content": {"via": [THEM]},
                    "sender": f"@x:{THEM}",
                    "origin_server_ts": 1,
                },
                {
                    "type": "m.space.child",
                    "state_key": R_PRIVATE,
                    "content": {"via": [THEM]},
                    "sender": f"@x:{THEM}",
                    "origin_server_ts": 2,
                },
                {
                    "type": "m.space.child",
                    "state_key": R_DEEP,
                    "content": {"via": [THEM]},
                    "sender": f"@x:{THEM}",
                    "origin_server_ts": 3,
                },
            ],
        },
        "children": [
            {
                "room_id": R_ROOM,
                "name": "Remote room",
                "join_rule": "public",
                "world_readable": False,
                "guest_can_join": False,
                "num_joined_members": 1,
            },
            {
                "room_id": R_DEEP,
                "name": "Invite only",
                "join_rule": "invite",
                "world_readable": False,
                "guest_can_join": False,
                "num_joined_members": 1,
            },
        ],
        "inaccessible_children": [R_PRIVATE],
    }


@pytest.fixture
async def asking(env):
    remote = ScriptedRemote()
    clock = Clock()
    s = env.services
    hierarchy = SpaceHierarchy(
        s.room_store, s.events, US, RemoteHierarchy(remote, MemoryBudget(8 << 20), clock=clock)
    )
    services = dataclasses.replace(s, space_hierarchy=hierarchy)
    app = create_app(services, ["client"])
    token = (await s.accounts.create_session(ALICE, None, None)).access_token
    return app.test_client(), {"Authorization": f"Bearer {token}"}, remote, clock


async def _hierarchy(client, auth, room_id: str, **params) -> tuple[int, dict]:
    r = await client.get(
        f"/_matrix/client/v1/rooms/{quote(room_id)}/hierarchy", headers=auth, query_string=params
    )
    return r.status_code, await r.get_json()


async def test_remote_children_are_asked_of_their_via_servers(env, asking) -> None:
    client, auth, remote, clock = asking
    s = env.services
    space = await _space(s)
    local = await _room(s, "public_chat", "Local")
    await _child(s, space, local)
    await _child(s, space, R_SPACE, via=THEM)
    remote.set(THEM, PATH + quote(R_SPACE, safe=""), _remote_answer)
    status, body = await _hierarchy(client, auth, space)
    assert status == 200, body
    ids = [r["room_id"] for r in body["rooms"]]
    # The remote space and its public child (summarised in the same answer); not the
    # inaccessible child, nor the invite-only one alice cannot see.
    assert sorted(ids) == sorted([space, local, R_SPACE, R_ROOM])
    remote_space = next(r for r in body["rooms"] if r["room_id"] == R_SPACE)
    assert [c["state_key"] for c in remote_space["children_state"]] == [R_ROOM, R_PRIVATE, R_DEEP]
    assert len(remote.asked) == 1  # one request: the children came with it
    assert remote.asked[0].query == {"suggested_only": "false"}
    # Cached: the next page (or a repeat) asks nothing; after the TTL it asks again.
    await _hierarchy(client, auth, space)
    assert len(remote.asked) == 1
    clock.now += 301
    await _hierarchy(client, auth, space)
    assert len(remote.asked) == 2
    # max_depth 1: the remote space is summarised, its children are not walked.
    clock.now += 301
    status, body = await _hierarchy(client, auth, space, max_depth=1)
    assert sorted(r["room_id"] for r in body["rooms"]) == sorted([space, local, R_SPACE])


async def test_unreachable_or_lying_servers_leave_the_child_out(env, asking) -> None:
    client, auth, remote, _ = asking
    s = env.services
    space = await _space(s)
    await _child(s, space, R_SPACE, via=THEM)
    path = PATH + quote(R_SPACE, safe="")
    for answer in (
        FederationUnreachable(THEM, "down"),
        {"room": {"room_id": "!other:remote.test"}, "children": [], "inaccessible_children": []},
        {"room": "nonsense"},
        [1, 2, 3],
    ):
        remote.set(THEM, path, answer)
        status, body = await _hierarchy(client, auth, space)
        assert status == 200, body
        assert [r["room_id"] for r in body["rooms"]] == [space]


async def test_room_summary_of_a_remote_room_with_via(env, asking) -> None:
    client, auth, remote, _ = asking
    remote.set(THEM, PATH + quote(R_SPACE, safe=""), _remote_answer)
    r = await client.get(
        f"/_matrix/client/v1/room_summary/{quote(R_SPACE)}",
        headers=auth,
        query_string={"via": THEM},
    )
    assert r.status_code == 200, await r.get_data()
    body = await r.get_json()
    assert (body["room_id"], body["name"], body["membership"]) == (R_SPACE, "Remote space", "leave")
    assert "children_state" not in body
    assert remote.asked[0].query == {"suggested_only": "true"}
    # Without via, or unreachable: 404.
    r = await client.get(f"/_matrix/client/v1/room_summary/{quote(R_ROOM)}", headers=auth)
    assert r.status_code == 404
    remote.set(THEM, PATH + quote(R_ROOM, safe=""), FederationUnreachable(THEM, "down"))
    r = await client.get(
        f"/_matrix/client/v1/room_summary/{quote(R_ROOM)}",
        headers=auth,
        query_string={"via": THEM},
    )
    assert r.status_code == 404


async def test_a_dead_server_is_remembered_for_a_minute(env, asking) -> None:
    client, auth, remote, clock = asking
    s = env.services
    space = await _space(s)
    await _child(s, space, R_SPACE, via=THEM)
    remote.set(THEM, PATH + quote(R_SPACE, safe=""), FederationUnreachable(THEM, "down"))
    for _ in range(3):
        status, _ = await _hierarchy(client, auth, space)
        assert status == 200
    assert len(remote.asked) == 1
    clock.now += 61
    remote.set(THEM, PATH + quote(R_SPACE, safe=""), _remote_answer)
    status, body = await _hierarchy(client, auth, space)
    assert R_SPACE in [r["room_id"] for r in body["rooms"]]
    assert len(remote.asked) == 2


async def test_remote_child_events_are_stripped(env, asking) -> None:
    client, auth, remote, _ = asking
    s = env.services
    space = await _space(s)
    await _child(s, space, R_SPACE, via=THEM)

    def answer(asked):
        body = _remote_answer(asked)
        for event in body["room"]["children_state"]:
            event["unsigned"] = {"secret": "x" * 100}
            event["event_id"] = "$leak"
        return body

    remote.set(THEM, PATH + quote(R_SPACE, safe=""), answer)
    status, body = await _hierarchy(client, auth, space)
    assert status == 200
    remote_space = next(r for r in body["rooms"] if r["room_id"] == R_SPACE)
    assert remote_space["children_state"]
    for event in remote_space["children_state"]:
        assert set(event) <= {"type", "state_key", "content", "sender", "origin_server_ts"}


async def test_a_page_waits_on_other_servers_for_a_bounded_time(env, autojump_clock) -> None:
    import trio

    from pocketserver.rooms.hierarchy import REMOTE_TIME_BUDGET_S, HierarchyRequest

    s = env.services
    space = await _space(s)
    for n in range(6):
        await _child(s, space, f"!slow{n}:remote.test", via=f"slow{n}.test")

    class Slow:
        asked = 0

        async def fetch(self, room_id, via, suggested_only):
            Slow.asked += 1
            await trio.sleep(15)
            return None

    hierarchy = SpaceHierarchy(s.room_store, s.events, US, Slow())
    started = trio.current_time()
    body = await hierarchy.walk(ALICE, HierarchyRequest(space))
    assert [r["room_id"] for r in body["rooms"]] == [space]
    assert Slow.asked == 2  # 0 s and 15 s; at 30 s the budget (20 s) is spent
    assert trio.current_time() - started < REMOTE_TIME_BUDGET_S + 15 + 1
