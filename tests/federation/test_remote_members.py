"""Other servers' users as our server meets them in rooms: the user directory finds
remote members of rooms shared with the searcher (or open rooms) by the name in their
member event, as Synapse does; a new member event drops their cached profile."""

from __future__ import annotations

from pathlib import Path

import pytest

from pocketserver.config import load_config
from pocketserver.federation.remote_profiles import PATH, RemoteProfiles
from pocketserver.rooms.create import RoomSettings, create_room
from pocketserver.services import build_services
from pocketserver.storage import users as user_store
from tests.federation.queries_rig import ScriptedRemote
from tests.harness import make_config

from ..rooms.conftest import REMOTE, RemoteServer

US = "local.test"
ALICE = f"@alice:{US}"
DAVE = f"@dave:{US}"
RBOB = f"@bob:{REMOTE}"


@pytest.fixture
async def services(tmp_path: Path):
    services = await build_services(load_config(make_config(tmp_path, server_name=US)))
    for user in (ALICE, DAVE):
        services.db.write_sync(user_store.insert_user, user, None, 0)
    yield services
    services.db.close()


async def _search(services, searcher: str, term: str) -> list[tuple[str, str | None, str | None]]:
    return await services.profiles.search_directory(searcher, term, 10)


async def test_remote_members_of_shared_rooms_are_in_the_user_directory(services) -> None:
    remote = RemoteServer(REMOTE)
    room_id = await create_room(
        services.rooms, ALICE, RoomSettings(room_version="10", preset="private_chat")
    )
    await services.rooms.send_event(room_id, ALICE, "m.room.member", {"membership": "invite"}, RBOB)
    assert await _search(services, ALICE, "bob") == []  # invited is not a member yet
    joined = await remote.send(
        services.rooms,
        room_id,
        RBOB,
        "m.room.member",
        {"membership": "join", "displayname": "Bobby Tables", "avatar_url": "mxc://r/b"},
        RBOB,
    )
    assert joined.accepted, joined.rejected
    assert await _search(services, ALICE, "tables") == [(RBOB, "Bobby Tables", "mxc://r/b")]
    assert await _search(services, ALICE, "remote.test") == [(RBOB, "Bobby Tables", "mxc://r/b")]
    # Dave shares no room with bob, and the room is private: nothing.
    assert await _search(services, DAVE, "bob") == []
    # A new name in a new member event is what the directory shows.
    await remote.send(
        services.rooms,
        room_id,
        RBOB,
        "m.room.member",
        {"membership": "join", "displayname": "Robert"},
        RBOB,
    )
    assert await _search(services, ALICE, "robert") == [(RBOB, "Robert", None)]
    assert await _search(services, ALICE, "tables") == []
    # Once bob leaves he is no longer found.
    await remote.send(services.rooms, room_id, RBOB, "m.room.member", {"membership": "leave"}, RBOB)
    assert await _search(services, ALICE, "bob") == []


async def test_remote_members_of_public_rooms_are_found_by_anyone(services) -> None:
    remote = RemoteServer(REMOTE)
    room_id = await create_room(
        services.rooms, ALICE, RoomSettings(room_version="10", preset="public_chat")
    )
    joined = await remote.send(
        services.rooms, room_id, RBOB, "m.room.member", {"membership": "join"}, RBOB
    )
    assert joined.accepted
    assert await _search(services, DAVE, "bob") == [(RBOB, None, None)]


async def test_an_open_room_this_server_left_no_longer_counts(services) -> None:
    """Once no user of ours is joined, the room's state here is stale: its members are
    not found through it any more (Synapse; SyTest 52user-directory/01public.pl
    "User in remote room doesn't appear in user directory after server left room")."""
    remote = RemoteServer(REMOTE)
    room_id = await create_room(
        services.rooms, ALICE, RoomSettings(room_version="10", preset="public_chat")
    )
    joined = await remote.send(
        services.rooms, room_id, RBOB, "m.room.member", {"membership": "join"}, RBOB
    )
    assert joined.accepted
    assert await _search(services, DAVE, "bob") == [(RBOB, None, None)]
    assert await _search(services, DAVE, "alice") == [(ALICE, None, None)]
    await services.rooms.send_event(room_id, ALICE, "m.room.member", {"membership": "leave"}, ALICE)
    assert await _search(services, DAVE, "bob") == []
    assert await _search(services, DAVE, "alice") == []
    assert await _search(services, ALICE, "bob") == []


async def test_a_member_event_drops_the_cached_remote_profile(services) -> None:
    """Through the server's own wiring (the writer's listener in build_services)."""
    remote = RemoteServer(REMOTE)
    asked = ScriptedRemote()
    asked.set(REMOTE, PATH, {"displayname": "Bob"})
    # The server's own cache and listener; only its requests go to the script.
    cache = services.profiles._remote
    assert isinstance(cache, RemoteProfiles)
    cache._requests = asked
    assert await services.profiles.lookup(RBOB) == {"displayname": "Bob"}
    asked.set(REMOTE, PATH, {"displayname": "Bobby"})
    assert await services.profiles.lookup(RBOB) == {"displayname": "Bob"}
    room_id = await create_room(
        services.rooms, ALICE, RoomSettings(room_version="10", preset="public_chat")
    )
    await remote.send(
        services.rooms,
        room_id,
        RBOB,
        "m.room.member",
        {"membership": "join", "displayname": "Bobby"},
        RBOB,
    )
    assert await services.profiles.lookup(RBOB) == {"displayname": "Bobby"}
    assert len(asked.asked) == 2
