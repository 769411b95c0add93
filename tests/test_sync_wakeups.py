"""Room-scoped wake-ups, in process: an event in one room costs the long-polls of other
rooms nothing (no read, no wake-up), and a listener failing after commit neither makes
the send an error nor leaves syncs asleep."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from pocketserver.app import create_app
from pocketserver.config import load_config
from pocketserver.rooms.writer import PersistedEvent
from pocketserver.services import Services, build_services
from pocketserver.sync.handler import SyncHandler
from tests.harness import make_config

V3 = "/_matrix/client/v3"
PASSWORD = "a fine long password"


@dataclass
class Env:
    services: Services
    client: Any

    async def call(
        self,
        method: str,
        path: str,
        token: str,
        json: object = None,
        query: dict[str, object] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        r = await self.client.open(
            V3 + path,
            method=method,
            headers={"Authorization": f"Bearer {token}"},
            json=json,
            query_string=query,
        )
        return r.status_code, await r.get_json()

    async def user(self, localpart: str) -> tuple[str, str]:
        accounts = self.services.accounts
        await accounts.register(localpart, PASSWORD)
        session = await accounts.create_session(accounts.user_id_for(localpart), None, None)
        return session.user_id, session.access_token

    async def room(self, token: str) -> str:
        status, answer = await self.call("POST", "/createRoom", token, {"preset": "public_chat"})
        assert status == 200, answer
        return str(answer["room_id"])

    async def send(self, token: str, room_id: str, body: str) -> str:
        status, answer = await self.call(
            "PUT",
            f"/rooms/{room_id}/send/m.room.message/{body}",
            token,
            {"msgtype": "m.text", "body": body},
        )
        assert status == 200, answer
        return str(answer["event_id"])

    async def since(self, token: str) -> str:
        status, answer = await self.call("GET", "/sync", token)
        assert status == 200, answer
        status, answer = await self.call(
            "GET", "/sync", token, query={"since": answer["next_batch"]}
        )
        assert status == 200, answer
        return str(answer["next_batch"])


async def _env(tmp_path: Path, **overrides: object) -> AsyncIterator[Env]:
    fast = {"per_second": 1000, "burst_count": 1000}
    config = load_config(make_config(tmp_path, rc_message=fast, **overrides))
    services = await build_services(config)
    try:
        yield Env(services, create_app(services).test_client())
    finally:
        services.db.close()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async for e in _env(tmp_path):
        yield e


@pytest.fixture
async def no_presence(tmp_path: Path) -> AsyncIterator[Env]:
    """Presence concerns everyone who shares a room (it wakes every waiter): off here,
    so that only the stream under test changes."""
    async for e in _env(tmp_path, presence={"enabled": False}):
        yield e


class _CountingSync:
    """Counts, per user, the sync responses built and the room sections read."""

    def __init__(self, sync: SyncHandler, monkeypatch: pytest.MonkeyPatch) -> None:
        self.builds: dict[str, int] = {}
        self.room_reads: dict[str, int] = {}
        build, room_part = sync._build, sync._room_part

        async def counted_build(request: Any) -> Any:
            self.builds[request.user_id] = self.builds.get(request.user_id, 0) + 1
            return await build(request)

        async def counted_room_part(request: Any) -> Any:
            self.room_reads[request.user_id] = self.room_reads.get(request.user_id, 0) + 1
            return await room_part(request)

        monkeypatch.setattr(sync, "_build", counted_build)
        monkeypatch.setattr(sync, "_room_part", counted_room_part)


async def _until(predicate: Any) -> None:
    for _ in range(1000):
        if predicate():
            return
        await trio.sleep(0.01)
    raise AssertionError("timed out")


async def test_events_in_another_room_cost_a_waiting_sync_nothing(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, alice_token = await env.user("alice")
    bob, bob_token = await env.user("bob")
    room_x = await env.room(alice_token)
    room_y = await env.room(bob_token)
    since = await env.since(bob_token)
    notifier = env.services.notifier
    counting = _CountingSync(env.services.sync, monkeypatch)
    answers: list[dict[str, Any]] = []

    async def long_poll() -> None:
        status, answer = await env.call(
            "GET", "/sync", bob_token, query={"since": since, "timeout": 60000}
        )
        assert status == 200, answer
        answers.append(answer)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(long_poll)
        await _until(lambda: notifier.statistics().waiters == 1)
        wakeups_before = notifier.statistics().wakeups
        assert counting.builds == {bob: 1}
        for i in range(20):
            await env.send(alice_token, room_x, f"x{i}")
        # Alice's messages went through the writer; Bob's request never ran again, so
        # it read nothing from the database.
        await trio.sleep(0.2)
        assert answers == []
        assert counting.builds == {bob: 1}
        assert counting.room_reads.get(bob, 0) == 0  # the quiet path: no room read
        assert notifier.statistics().wakeups == wakeups_before
        assert notifier.statistics().waiters == 1
        # An event in Bob's own room wakes him, with it.
        event_id = await env.send(bob_token, room_y, "y0")
        await _until(lambda: bool(answers))
    timeline = answers[0]["rooms"]["join"][room_y]["timeline"]["events"]
    assert [e["event_id"] for e in timeline] == [event_id]
    assert room_x not in answers[0]["rooms"]["join"]
    assert alice not in {e["sender"] for e in timeline}


async def test_a_sync_started_after_busy_other_rooms_reads_nothing(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events in other rooms between two syncs: the next sync's rooms are quiet from
    the notifier's log (no room read), and it waits."""
    _, alice_token = await env.user("alice")
    bob, bob_token = await env.user("bob")
    room_x = await env.room(alice_token)
    await env.room(bob_token)
    since = await env.since(bob_token)
    for i in range(5):
        await env.send(alice_token, room_x, f"x{i}")
    counting = _CountingSync(env.services.sync, monkeypatch)
    status, answer = await env.call(
        "GET", "/sync", bob_token, query={"since": since, "timeout": 50}
    )
    assert status == 200, answer
    assert answer["rooms"]["join"] == {}
    assert 1 <= counting.builds[bob] <= 2  # before waiting (and at the timeout)
    assert counting.room_reads.get(bob, 0) == 0


async def test_a_failing_listener_neither_fails_the_send_nor_keeps_syncs_asleep(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    _, alice_token = await env.user("alice")
    room_id = await env.room(alice_token)
    since = await env.since(alice_token)

    def broken(event: PersistedEvent) -> None:
        raise RuntimeError("listener broke")

    env.services.rooms.add_listener(broken)
    answers: list[dict[str, Any]] = []

    async def long_poll() -> None:
        status, answer = await env.call(
            "GET", "/sync", alice_token, query={"since": since, "timeout": 60000}
        )
        assert status == 200, answer
        answers.append(answer)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(long_poll)
        await _until(lambda: env.services.notifier.statistics().waiters == 1)
        status, sent = await env.call(
            "PUT",
            f"/rooms/{room_id}/send/m.room.message/t1",
            alice_token,
            {"msgtype": "m.text", "body": "still delivered"},
        )
        assert status == 200, sent
        await _until(lambda: bool(answers))
    timeline = answers[0]["rooms"]["join"][room_id]["timeline"]["events"]
    assert [e["event_id"] for e in timeline] == [sent["event_id"]]
    assert "listener broke" in caplog.text
    # The event is stored and readable.
    status, event = await env.call("GET", f"/rooms/{room_id}/event/{sent['event_id']}", alice_token)
    assert status == 200, event
    assert event["content"]["body"] == "still delivered"


async def test_other_streams_wake_only_the_users_and_rooms_they_concern(
    no_presence: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alice's account data, her to-device message to herself, her typing and receipt
    in her room: Bob (in another room) is never woken; each wakes Alice's own poll."""
    env = no_presence
    alice, alice_token = await env.user("alice")
    bob, bob_token = await env.user("bob")
    room_x = await env.room(alice_token)
    await env.room(bob_token)
    last = await env.send(alice_token, room_x, "hello")
    bob_since = await env.since(bob_token)
    notifier = env.services.notifier
    counting = _CountingSync(env.services.sync, monkeypatch)
    bob_answers: list[dict[str, Any]] = []

    async def bob_poll() -> None:
        status, answer = await env.call(
            "GET", "/sync", bob_token, query={"since": bob_since, "timeout": 60000}
        )
        assert status == 200, answer
        bob_answers.append(answer)

    changes = [
        ("PUT", f"/user/{alice}/account_data/org.example.note", {"n": 1}),
        ("PUT", "/sendToDevice/org.example.ping/t1", {"messages": {alice: {"*": {"a": 1}}}}),
        ("PUT", f"/rooms/{room_x}/typing/{alice}", {"typing": True, "timeout": 30000}),
        ("POST", f"/rooms/{room_x}/receipt/m.read/{last}", {}),
    ]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bob_poll)
        await _until(lambda: notifier.statistics().waiters == 1)
        for method, path, body in changes:
            alice_since = await env.since(alice_token)
            woken: list[dict[str, Any]] = []

            async def alice_poll(since: str = alice_since, out: list[Any] = woken) -> None:
                status, answer = await env.call(
                    "GET", "/sync", alice_token, query={"since": since, "timeout": 60000}
                )
                assert status == 200, answer
                out.append(answer)

            nursery.start_soon(alice_poll)
            await _until(lambda: notifier.statistics().waiters == 2)
            wakeups = notifier.statistics().wakeups
            status, answer = await env.call(method, path, alice_token, body)
            assert status == 200, (path, answer)
            await _until(lambda out=woken: bool(out))  # type: ignore[misc]
            assert notifier.statistics().wakeups == wakeups + 1, path  # Alice's alone
        assert bob_answers == []
        assert counting.builds[bob] == 1
        nursery.cancel_scope.cancel()
