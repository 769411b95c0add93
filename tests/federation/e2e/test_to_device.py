"""m.direct_to_device from other servers: delivered to our devices once per message ID,
only when the sender belongs to the origin."""

from __future__ import annotations

from typing import Any

from pocketserver.storage import to_device as store

from .conftest import ALICE, BOB, EVE, EVIL, RBOB, REMOTE, Env


def _inbox(env: Env, user_id: str, device_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (m.sender, m.type, m.content) for m in env.db.read_sync(store.inbox, user_id, device_id)
    ]


def _edu(sender: str, message_id: str, messages: dict[str, Any]) -> dict[str, Any]:
    return {
        "sender": sender,
        "type": "m.room_key_request",
        "message_id": message_id,
        "messages": messages,
    }


async def test_delivered_to_named_and_all_devices(env: Env) -> None:
    before = env.to_device.position()
    handled = await env.fed.on_edu(
        REMOTE,
        "m.direct_to_device",
        _edu(RBOB, "m1", {ALICE: {"*": {"n": 1}}, BOB: {"B1": {"n": 2}, "NOPE": {"n": 3}}}),
    )
    assert handled
    assert _inbox(env, ALICE, "A1") == [(RBOB, "m.room_key_request", {"n": 1})]
    assert _inbox(env, ALICE, "A2") == [(RBOB, "m.room_key_request", {"n": 1})]
    assert _inbox(env, BOB, "B1") == [(RBOB, "m.room_key_request", {"n": 2})]
    assert env.to_device.position() > before
    assert env.notifier.stream_position("to_device") == env.to_device.position()


async def test_a_repeated_message_id_is_delivered_once(env: Env) -> None:
    edu = _edu(RBOB, "same", {ALICE: {"A1": {"n": 1}}})
    assert await env.fed.on_direct_to_device(REMOTE, edu) == 1
    assert await env.fed.on_direct_to_device(REMOTE, edu) == 0
    assert len(_inbox(env, ALICE, "A1")) == 1
    # The same ID from another server is another message.
    assert await env.fed.on_direct_to_device(EVIL, _edu(EVE, "same", {ALICE: {"A1": {}}})) == 1


async def test_an_origin_cannot_send_as_another_servers_user(env: Env) -> None:
    before = env.to_device.position()
    assert await env.fed.on_direct_to_device(EVIL, _edu(RBOB, "x1", {ALICE: {"*": {}}})) == 0
    assert _inbox(env, ALICE, "A1") == []
    assert env.to_device.position() == before


async def test_messages_for_other_servers_users_and_malformed_edus_are_dropped(env: Env) -> None:
    before = env.to_device.position()
    for edu in (
        _edu(RBOB, "x2", {RBOB: {"*": {}}, "@z:third.test": {"D": {}}}),
        _edu(RBOB, "x3", {ALICE: {"A1": "not an object"}}),
        _edu(RBOB, "x4", {ALICE: {"A1": {"big": "x" * 70_000}}}),
        {"sender": RBOB, "type": "t", "messages": {ALICE: {"A1": {}}}},  # no message_id
        {"sender": RBOB, "message_id": "x5", "messages": {ALICE: {"A1": {}}}},  # no type
        _edu(RBOB, "x" * 300, {ALICE: {"A1": {}}}),
    ):
        await env.fed.on_edu(REMOTE, "m.direct_to_device", edu)
    assert await env.fed.on_edu(REMOTE, "m.direct_to_device", ["not", "an", "object"])
    assert _inbox(env, ALICE, "A1") == []
    assert env.to_device.position() == before
