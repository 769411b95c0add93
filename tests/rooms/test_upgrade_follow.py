"""Following an upgrade made by another server's user when its tombstone arrives after
we are already in the new room (rooms/upgrade_follow.py, through the services' own
wiring: the room writer's listener and the follower's queue). The join-time path is
tested with two real servers in tests/federation/test_pocket_pair_rooms.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from pocketserver.config import load_config
from pocketserver.rooms.create import RoomSettings, create_room
from pocketserver.services import build_services
from pocketserver.storage import users as user_store
from tests.harness import make_config

from .conftest import REMOTE, RemoteServer

US = "local.test"
ALICE = f"@alice:{US}"
RBOB = f"@bob:{REMOTE}"


@pytest.fixture
async def services(tmp_path: Path):
    services = await build_services(load_config(make_config(tmp_path, server_name=US)))
    services.db.write_sync(user_store.insert_user, ALICE, None, 0)
    yield services
    services.db.close()


async def _old_room_with_alices_state(services, remote: RemoteServer) -> tuple[str, str]:
    """A public room where remote bob may send a tombstone; alice's tag, alias and the
    directory entry are on it. Returns (room, alias)."""
    old = await create_room(
        services.rooms, ALICE, RoomSettings(room_version="10", preset="public_chat")
    )
    joined = await remote.send(
        services.rooms, old, RBOB, "m.room.member", {"membership": "join"}, RBOB
    )
    assert joined.accepted
    await services.rooms.send_event(
        old, ALICE, "m.room.power_levels", {"users": {ALICE: 100, RBOB: 100}}, ""
    )
    alias = f"#old:{US}"
    await services.directory.create_alias(alias, old, ALICE)
    await services.directory.set_visibility(old, public=True)
    await services.account_data.set_tag(ALICE, old, "u.work", {"order": 0.25})
    return old, alias


async def _follow(services, room: str, remote: RemoteServer, replacement: str) -> None:
    """Bob's tombstone arrives; wait until the follower has looked at it."""
    follower = services.upgrade_follower
    async with trio.open_nursery() as nursery:
        await nursery.start(follower.run)
        sent = await remote.send(
            services.rooms,
            room,
            RBOB,
            "m.room.tombstone",
            {"body": "moved", "replacement_room": replacement},
            "",
        )
        assert sent.accepted, sent.rejected
        with trio.fail_after(10):
            while follower.statistics().tombstones_handled < 1:  # noqa: ASYNC110 (a counter)
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


async def test_a_late_tombstone_carries_our_state_over(services) -> None:
    remote = RemoteServer(REMOTE)
    old, alias = await _old_room_with_alices_state(services, remote)
    new = await create_room(
        services.rooms,
        ALICE,
        RoomSettings(
            room_version="10",
            preset="public_chat",
            creation_content={"predecessor": {"room_id": old}},
        ),
    )
    await _follow(services, old, remote, new)
    assert services.upgrade_follower.statistics().upgrades_followed == 1
    assert await services.directory.resolve(alias) == new
    assert await services.directory.is_public(new)
    assert not await services.directory.is_public(old)
    assert await services.account_data.tags(ALICE, new) == {"u.work": {"order": 0.25}}


async def test_a_tombstone_naming_a_room_that_does_not_follow_moves_nothing(services) -> None:
    remote = RemoteServer(REMOTE)
    old, alias = await _old_room_with_alices_state(services, remote)
    # A room of ours that does not name the old room as its predecessor.
    unrelated = await create_room(
        services.rooms, ALICE, RoomSettings(room_version="10", preset="public_chat")
    )
    await _follow(services, old, remote, unrelated)
    assert services.upgrade_follower.statistics().upgrades_followed == 0
    assert await services.directory.resolve(alias) == old
    assert await services.directory.is_public(old)
    assert not await services.directory.is_public(unrelated)
    assert await services.account_data.tags(ALICE, unrelated) == {}
