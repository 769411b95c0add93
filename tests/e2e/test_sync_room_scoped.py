"""Through the real server: a long-poll is answered by what concerns its user (their
rooms, their own membership changes), never early by events in other rooms."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio

from tests.harness import RunningServer, make_config, running_server

V3 = "/_matrix/client/v3"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    fast = {"per_second": 1000, "burst_count": 1000}
    config = make_config(tmp_path_factory.mktemp("scoped"), rc_message=fast)
    with running_server(config) as s:
        yield s
    assert "Traceback" not in s.log_text(), s.log_text()


class User:
    def __init__(self, server: RunningServer, client: httpx.AsyncClient, name: str) -> None:
        answer = server.register(name)
        self.user_id = answer["user_id"]
        self.client = client
        self.headers = {"Authorization": f"Bearer {answer['access_token']}"}

    async def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        r = await self.client.request(method, V3 + path, headers=self.headers, **kwargs)
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def since(self) -> str:
        token = (await self.call("GET", "/sync"))["next_batch"]
        return str((await self.call("GET", "/sync", params={"since": token}))["next_batch"])

    async def poll(self, since: str, timeout_ms: int) -> tuple[float, dict[str, Any]]:
        start = time.monotonic()
        answer = await self.call("GET", "/sync", params={"since": since, "timeout": timeout_ms})
        return time.monotonic() - start, answer


async def test_long_polls_in_other_rooms_are_not_answered_early(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as c:
        alice, bob, dave = (User(server, c, n) for n in ("alice", "bob", "dave"))
        room_x = (await alice.call("POST", "/createRoom", json={"preset": "public_chat"}))[
            "room_id"
        ]
        room_y = (await bob.call("POST", "/createRoom", json={}))["room_id"]
        bob_since, dave_since = await bob.since(), await dave.since()
        got: dict[str, tuple[float, dict[str, Any]]] = {}

        async def poll(name: str, user: User, since: str, timeout_ms: int) -> None:
            got[name] = await user.poll(since, timeout_ms)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll, "bob", bob, bob_since, 3000)
            nursery.start_soon(poll, "dave", dave, dave_since, 3000)
            await trio.sleep(0.5)
            for i in range(15):  # busy room X: neither Bob (in Y) nor Dave (nowhere) cares
                await alice.call(
                    "PUT",
                    f"/rooms/{room_x}/send/m.room.message/busy{i}",
                    json={"msgtype": "m.text", "body": f"busy {i}"},
                )
        for name in ("bob", "dave"):
            waited, answer = got[name]
            assert waited >= 2.9, f"{name}'s long-poll was answered early ({waited:.2f} s)"
            assert answer["rooms"]["join"] == {}, answer["rooms"]
        # The empty answers' tokens still see later events of their own.
        bob_since = got["bob"][1]["next_batch"]
        dave_since = got["dave"][1]["next_batch"]
        got.clear()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll, "bob", bob, bob_since, 30000)
            nursery.start_soon(poll, "dave", dave, dave_since, 30000)
            await trio.sleep(0.5)
            sent = await bob.call(
                "PUT",
                f"/rooms/{room_y}/send/m.room.message/mine",
                json={"msgtype": "m.text", "body": "in Y"},
            )
            # Dave is in no room: the invite to X names him and wakes him.
            await alice.call("POST", f"/rooms/{room_x}/invite", json={"user_id": dave.user_id})
        waited, answer = got["bob"]
        assert waited < 10
        events = answer["rooms"]["join"][room_y]["timeline"]["events"]
        assert [e["event_id"] for e in events] == [sent["event_id"]]
        waited, answer = got["dave"]
        assert waited < 10
        assert room_x in answer["rooms"]["invite"], answer["rooms"]


async def test_a_kicked_user_is_woken_by_the_kick(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as c:
        alice, carol = User(server, c, "alice2"), User(server, c, "carol2")
        room = (await alice.call("POST", "/createRoom", json={"preset": "public_chat"}))["room_id"]
        await carol.call("POST", f"/join/{room}", json={})
        since = await carol.since()
        got: list[tuple[float, dict[str, Any]]] = []

        async def poll() -> None:
            got.append(await carol.poll(since, 30000))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.sleep(0.5)
            await alice.call(
                "POST", f"/rooms/{room}/kick", json={"user_id": carol.user_id, "reason": "bye"}
            )
        waited, answer = got[0]
        assert waited < 10
        leave = answer["rooms"]["leave"][room]["timeline"]["events"]
        assert leave[-1]["content"]["membership"] == "leave"
        assert leave[-1]["state_key"] == carol.user_id
