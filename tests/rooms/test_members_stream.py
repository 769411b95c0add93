"""``/members`` and ``/joined_members`` of a room with more members than one page are
streamed from SQL a page at a time (rooms/client.py ``current_members``), and give
exactly what reading the whole state gives; who may not read them still gets 403."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pocketserver.app import create_app
from pocketserver.config import load_config
from pocketserver.rooms import client as room_client_module
from pocketserver.services import Services, build_services
from tests.harness import make_config

V3 = "/_matrix/client/v3"
MEMBERS = 600  # more than one page (500)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Services, Any]]:
    services = await build_services(load_config(make_config(tmp_path)))
    try:
        yield services, create_app(services).test_client()
    finally:
        services.db.close()


async def _user(services: Services, localpart: str) -> tuple[str, str]:
    await services.accounts.register(localpart, "a fine long password")
    session = await services.accounts.create_session(
        services.accounts.user_id_for(localpart), None, None
    )
    return session.user_id, session.access_token


async def _get(client: Any, path: str, token: str) -> tuple[int, Any]:
    r = await client.get(V3 + path, headers={"Authorization": f"Bearer {token}"})
    return r.status_code, json.loads(await r.get_data())


async def test_members_of_a_big_room_are_streamed_and_complete(
    env: tuple[Services, Any],
) -> None:
    services, client = env
    owner, token = await _user(services, "owner")
    _outsider, outsider_token = await _user(services, "outsider")
    leaver, leaver_token = await _user(services, "leaver")
    r = await client.post(
        V3 + "/createRoom",
        headers={"Authorization": f"Bearer {token}"},
        json={"preset": "public_chat"},
    )
    room_id = (await r.get_json())["room_id"]
    writer = services.rooms
    server = services.config.server_name
    await writer.send_event(room_id, leaver, "m.room.member", {"membership": "join"}, leaver)
    for i in range(MEMBERS):
        user = f"@m{i:05}:{server}"
        await writer.send_event(room_id, user, "m.room.member", {"membership": "join"}, user)
        if i % 10 == 0:
            await writer.send_event(room_id, user, "m.room.member", {"membership": "leave"}, user)
    await writer.send_event(room_id, leaver, "m.room.member", {"membership": "leave"}, leaver)
    await writer.send_event(
        room_id, f"@late:{server}", "m.room.member", {"membership": "join"}, f"@late:{server}"
    )

    async def whole(**filters: str) -> set[str]:
        events = await services.room_client.members(owner, room_id, **filters)
        return {ev.event_id for ev in events}

    status, answer = await _get(client, f"/rooms/{room_id}/members", token)
    assert status == 200
    ids = [ev["event_id"] for ev in answer["chunk"]]
    assert len(ids) == len(set(ids)) == MEMBERS + 3  # owner, leaver, late
    assert set(ids) == await whole()
    assert all(ev["type"] == "m.room.member" and "content" in ev for ev in answer["chunk"])
    status, answer = await _get(client, f"/rooms/{room_id}/members?membership=join", token)
    assert {ev["event_id"] for ev in answer["chunk"]} == await whole(membership="join")
    assert len(answer["chunk"]) == MEMBERS - MEMBERS // 10 + 2
    status, answer = await _get(client, f"/rooms/{room_id}/members?not_membership=join", token)
    assert {ev["event_id"] for ev in answer["chunk"]} == await whole(not_membership="join")
    status, answer = await _get(client, f"/rooms/{room_id}/joined_members", token)
    assert status == 200
    joined = answer["joined"]
    assert len(joined) == MEMBERS - MEMBERS // 10 + 2
    assert set(joined[owner]) == {"display_name", "avatar_url"}
    assert f"@m00001:{server}" in joined
    assert f"@m00000:{server}" not in joined

    # Someone who left reads the members as they were when they left (not streamed).
    status, answer = await _get(client, f"/rooms/{room_id}/members", leaver_token)
    assert status == 200
    assert f"@late:{server}" not in {ev["state_key"] for ev in answer["chunk"]}
    assert len(answer["chunk"]) == MEMBERS + 2
    status, answer = await _get(client, f"/rooms/{room_id}/joined_members", leaver_token)
    assert status == 200
    assert f"@late:{server}" not in answer["joined"]
    assert owner in answer["joined"]

    # Someone never in the room (not world-readable): refused, before anything is read.
    for path in ("members", "joined_members"):
        status, answer = await _get(client, f"/rooms/{room_id}/{path}", outsider_token)
        assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")
    status, answer = await _get(client, "/rooms/!nope:x/members", outsider_token)
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")


async def test_members_are_read_a_page_at_a_time(
    env: tuple[Services, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never more than one page of member events read at once."""
    services, client = env
    _owner, token = await _user(services, "owner")
    r = await client.post(
        V3 + "/createRoom",
        headers={"Authorization": f"Bearer {token}"},
        json={"preset": "public_chat"},
    )
    room_id = (await r.get_json())["room_id"]
    for i in range(30):
        user = f"@p{i}:{services.config.server_name}"
        await services.rooms.send_event(
            room_id, user, "m.room.member", {"membership": "join"}, user
        )
    monkeypatch.setattr(room_client_module, "MEMBERS_PAGE", 7)
    reads: list[int] = []
    real = services.events.get_events

    async def counting(event_ids: Any, **kwargs: Any) -> Any:
        ids = list(event_ids)
        reads.append(len(ids))
        return await real(ids, **kwargs)

    monkeypatch.setattr(services.events, "get_events", counting)
    status, answer = await _get(client, f"/rooms/{room_id}/members", token)
    assert status == 200
    assert len(answer["chunk"]) == 31
    assert reads
    assert max(reads) <= 7
