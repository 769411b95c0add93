"""The remote device list cache: resyncs, m.device_list_update, signing key updates,
what our users hear of, and what an origin may not change."""

from __future__ import annotations

from typing import Any

import nacl.signing

from pocketserver.federation.e2e.requests import user_devices_path
from pocketserver.storage import e2e_keys as key_store
from pocketserver.storage import remote_devices
from tests.e2e_keys.keys import cross_signing_key, device_keys, public

from .conftest import ALICE, EVIL, RBOB, RCAROL, REMOTE, Env, until


def _fresh(env: Env, user_id: str) -> bool:
    return bool(env.db.read_sync(remote_devices.fresh_users, [user_id]))


def _cached(env: Env, user_id: str) -> set[str]:
    return set(env.db.read_sync(remote_devices.devices, user_id))


async def _tracked_bob(env: Env, *device_ids: str, stream_id: object = 5, **extra: Any) -> None:
    answer = env.remote_devices_answer(RBOB, stream_id, *device_ids, **extra)
    env.remotes.on("GET", REMOTE, user_devices_path(RBOB), lambda _: answer)
    await env.fed.lists.track([RBOB])
    await until(lambda: _fresh(env, RBOB))


def _update(device_id: str, stream_id: object, prev: list[object] | None, **extra: Any) -> dict:
    content: dict[str, Any] = {"user_id": RBOB, "device_id": device_id, "stream_id": stream_id}
    if prev is not None:
        content["prev_id"] = prev
    content.update(extra)
    return content


async def test_resync_fills_the_cache_and_tells_local_users(env: Env) -> None:
    before = env.stream.position()
    await _tracked_bob(env, "D1", "D2")
    assert _cached(env, RBOB) == {"D1", "D2"}
    assert RBOB in env.changed_for(ALICE, before)
    (call,) = env.remotes.called("GET", "/_matrix/federation/v1/user/devices/")
    assert call[1:3] == (REMOTE, "/_matrix/federation/v1/user/devices/%40bob%3Aremote.test")


async def test_update_with_known_prev_id_is_applied(env: Env) -> None:
    await _tracked_bob(env, "D1")
    before = env.stream.position()
    keys = device_keys(RBOB, "D3", env.remote_sk)
    handled = await env.fed.on_edu(
        REMOTE, "m.device_list_update", _update("D3", 6, [5], keys=keys, device_display_name="tab")
    )
    assert handled
    assert _cached(env, RBOB) == {"D1", "D3"}
    assert env.stream.position() == before + 1
    assert RBOB in env.changed_for(ALICE, before)
    # Stream IDs may be strings too, and the previous update is known.
    await env.fed.on_edu(REMOTE, "m.device_list_update", _update("D1", "7", ["6"], deleted=True))
    assert _cached(env, RBOB) == {"D3"}
    assert len(env.remotes.called("GET", "/_matrix/federation/v1/user/devices/")) == 1
    answer = await env.keys.query(ALICE, {"device_keys": {RBOB: []}})
    assert set(answer["device_keys"][RBOB]) == {"D3"}  # type: ignore[index]
    assert answer["device_keys"][RBOB]["D3"]["unsigned"] == {"device_display_name": "tab"}  # type: ignore[index]
    assert answer["failures"] == {}
    assert not env.remotes.called("POST", "/")  # answered from the cache


async def test_unknown_prev_id_resyncs_in_the_background(env: Env) -> None:
    await _tracked_bob(env, "D1")
    newer = env.remote_devices_answer(RBOB, 9, "D1", "D9")
    env.remotes.on("GET", REMOTE, user_devices_path(RBOB), lambda _: newer)
    await env.fed.on_edu(REMOTE, "m.device_list_update", _update("D9", 9, [8]))
    await until(lambda: _cached(env, RBOB) == {"D1", "D9"})
    assert len(env.remotes.called("GET", "/_matrix/federation/v1/user/devices/")) == 2
    assert env.rows("SELECT stream_id, stale FROM e2e_remote_users") == [("9", 0)]


async def test_update_without_prev_id_resyncs(env: Env) -> None:
    await _tracked_bob(env, "D1")
    await env.fed.on_edu(REMOTE, "m.device_list_update", _update("D2", 6, None))
    await until(lambda: len(env.remotes.called("GET", "/_matrix/federation/v1/user/")) == 2)


async def test_failed_resync_leaves_the_list_stale_and_queries_go_remote(env: Env) -> None:
    await _tracked_bob(env, "D1")
    env.remotes.handlers.clear()  # remote.test is down now
    await env.fed.on_edu(REMOTE, "m.device_list_update", _update("D2", 8, [7]))
    await until(lambda: len(env.remotes.called("GET", "/_matrix/federation/v1/user/")) == 2)
    assert not _fresh(env, RBOB)
    answer = await env.keys.query(ALICE, {"device_keys": {RBOB: []}})
    assert list(answer["failures"]) == [REMOTE]  # type: ignore[arg-type]


async def test_updates_for_users_sharing_no_room_are_ignored(env: Env) -> None:
    before = env.stream.position()
    await env.fed.on_edu(
        REMOTE, "m.device_list_update", {"user_id": RCAROL, "device_id": "C1", "stream_id": 1}
    )
    await env.fed.on_edu(
        REMOTE,
        "m.signing_key_update",
        {
            "user_id": RCAROL,
            "master_key": cross_signing_key(
                RCAROL, "master", nacl.signing.SigningKey.generate(), None
            ),
        },
    )
    assert env.rows("SELECT * FROM e2e_remote_users") == []
    assert env.rows("SELECT * FROM e2e_cross_signing_keys") == []
    assert env.stream.position() == before
    assert env.remotes.calls == []


async def test_an_origin_cannot_update_another_servers_users(env: Env) -> None:
    await _tracked_bob(env, "D1")
    before = env.stream.position()
    cached = env.rows("SELECT * FROM e2e_remote_devices")
    users = env.rows("SELECT * FROM e2e_remote_users")
    keys = device_keys(RBOB, "EVIL", env.remote_sk)
    for content in (
        _update("EVIL", 6, [5], keys=keys),
        _update("D1", 6, [5], deleted=True),
        _update("D1", 6, ["unknown"]),  # would trigger a resync
    ):
        await env.fed.on_edu(EVIL, "m.device_list_update", content)
    await env.fed.on_edu(
        EVIL,
        "m.signing_key_update",
        {
            "user_id": RBOB,
            "master_key": cross_signing_key(
                RBOB, "master", nacl.signing.SigningKey.generate(), None
            ),
        },
    )
    assert env.rows("SELECT * FROM e2e_remote_devices") == cached
    assert env.rows("SELECT * FROM e2e_remote_users") == users
    assert env.rows("SELECT * FROM e2e_cross_signing_keys") == []
    assert env.stream.position() == before
    assert len(env.remotes.calls) == 1  # only the first resync


async def test_keys_for_the_wrong_device_are_not_cached(env: Env) -> None:
    await _tracked_bob(env, "D1")
    other = device_keys(RBOB, "D1", env.remote_sk)  # signed for D1, filed under D2
    await env.fed.on_edu(REMOTE, "m.device_list_update", _update("D2", 6, [5], keys=other))
    assert env.db.read_sync(remote_devices.devices, RBOB)["D2"].keys is None


async def test_signing_key_updates_replace_master_and_self_signing_keys(env: Env) -> None:
    msk, ssk, usk = (nacl.signing.SigningKey.generate() for _ in range(3))
    await _tracked_bob(env, "D1", master_key=cross_signing_key(RBOB, "master", msk, None))
    before = env.stream.position()
    msk2 = nacl.signing.SigningKey.generate()
    await env.fed.on_edu(
        REMOTE,
        "org.matrix.signing_key_update",
        {
            "user_id": RBOB,
            "master_key": cross_signing_key(RBOB, "master", msk2, None),
            "self_signing_key": cross_signing_key(RBOB, "self_signing", ssk, msk2),
            "user_signing_key": cross_signing_key(RBOB, "user_signing", usk, msk2),
        },
    )
    stored = dict(
        env.rows("SELECT usage, public_key FROM e2e_cross_signing_keys WHERE user_id = ?", RBOB)
    )
    assert stored == {"master": public(msk2), "self_signing": public(ssk)}
    assert RBOB in env.changed_for(ALICE, before)
    answer = await env.keys.query(ALICE, {"device_keys": {RBOB: []}})
    assert public(msk2) in str(answer["master_keys"])
    assert "user_signing_keys" not in answer or RBOB not in answer["user_signing_keys"]  # type: ignore[operator]


async def test_lists_no_longer_shared_are_forgotten(env: Env) -> None:
    await _tracked_bob(
        env,
        "D1",
        master_key=cross_signing_key(RBOB, "master", nacl.signing.SigningKey.generate(), None),
    )
    assert await env.fed.lists.sweep() == 0
    await env.leave_remote(RBOB)
    assert await env.fed.lists.sweep() == 1
    assert env.rows("SELECT * FROM e2e_remote_users") == []
    assert env.rows("SELECT * FROM e2e_remote_devices") == []
    assert env.rows("SELECT * FROM e2e_cross_signing_keys") == []
    before = env.stream.position()
    await env.fed.on_edu(REMOTE, "m.device_list_update", _update("D2", 6, [5]))
    assert env.rows("SELECT * FROM e2e_remote_users") == []
    assert env.stream.position() == before


async def test_tracking_is_bounded(env: Env) -> None:
    env.fed.lists.max_tracked = 1
    await env.join_remote(RCAROL)
    await _tracked_bob(env, "D1")
    await env.fed.lists.track([RCAROL])
    await env.fed.on_edu(
        REMOTE, "m.device_list_update", {"user_id": RCAROL, "device_id": "C1", "stream_id": 1}
    )
    assert [u for (u,) in env.rows("SELECT user_id FROM e2e_remote_users")] == [RBOB]


async def test_malformed_updates_change_nothing(env: Env) -> None:
    await _tracked_bob(env, "D1")
    before = env.stream.position()
    for content in (
        "not an object",
        {"user_id": RBOB, "device_id": "D2"},
        {"user_id": RBOB, "device_id": "D2", "stream_id": True, "prev_id": [5]},
        {"user_id": RBOB, "device_id": "D2", "stream_id": 6, "prev_id": 5},
        {"user_id": RBOB, "device_id": "D2", "stream_id": 6, "prev_id": [{"x": 1}]},
        {"user_id": "bob", "device_id": "D2", "stream_id": 6, "prev_id": [5]},
        {"user_id": RBOB, "device_id": 7, "stream_id": 6, "prev_id": [5]},
    ):
        assert await env.fed.on_edu(REMOTE, "m.device_list_update", content)
    assert _cached(env, RBOB) == {"D1"}
    assert env.stream.position() == before
    assert not await env.fed.on_edu(REMOTE, "m.typing", {})


async def test_stale_lists_are_retried_but_not_on_a_server_that_just_failed(env: Env) -> None:
    env.fed.lists.request_resync = lambda user_id: queued.append(user_id)  # type: ignore[method-assign]
    queued: list[str] = []
    await env.fed.lists.track([RBOB])  # remote.test has no handler: unreachable
    assert queued == [RBOB]
    assert not await env.fed.lists.resync(RBOB)
    queued.clear()
    await env.fed.lists.retry_stale()
    assert queued == []  # remote.test failed a moment ago
    env.fed.lists._server_failed_at.clear()
    await env.fed.lists.retry_stale()
    assert queued == [RBOB]


async def _settled(env: Env) -> None:
    """Until the stream has caught up with what the background resync wrote."""
    written = env.db.read_sync(key_store.stream_position)
    await until(lambda: env.stream.position() == written)


async def test_an_applied_update_tells_local_users_even_when_nothing_kept_changed(
    env: Env,
) -> None:
    """A renamed device whose name we are not sent (names are not shared by default)
    still changed: our users refetch (as Synapse; SyTest 06-device-lists "Can query
    remote device keys using POST after notification")."""
    await _tracked_bob(env, "D1")
    await _settled(env)
    cached = env.rows("SELECT * FROM e2e_remote_devices")
    before = env.stream.position()
    same = env.remote_devices_answer(RBOB, 5, "D1")["devices"][0]["keys"]
    await env.fed.on_edu(REMOTE, "m.device_list_update", _update("D1", 6, [5], keys=same))
    assert env.rows("SELECT * FROM e2e_remote_devices") == cached
    assert env.stream.position() == before + 1
    assert RBOB in env.changed_for(ALICE, before)
    assert env.rows("SELECT stream_id, stale FROM e2e_remote_users") == [("6", 0)]


async def test_a_resync_that_moved_on_tells_local_users(env: Env) -> None:
    await _tracked_bob(env, "D1")
    await _settled(env)
    before = env.stream.position()
    assert await env.fed.lists.resync(RBOB)  # same list, same stream ID
    assert env.stream.position() == before
    moved = env.remote_devices_answer(RBOB, 9, "D1")
    env.remotes.on("GET", REMOTE, user_devices_path(RBOB), lambda _: moved)
    assert await env.fed.lists.resync(RBOB)
    assert RBOB in env.changed_for(ALICE, before)


async def test_device_keys_are_kept_as_the_users_server_gives_them(env: Env) -> None:
    """Synapse keeps any object as a remote device's keys and serves it (SyTest
    40devicelists "Server correctly handles incoming m.device_list_update" sends
    ``{"device_keys": {}}``); keys naming another user or device are still dropped."""
    await _tracked_bob(env, "D1")
    await env.fed.on_edu(
        REMOTE,
        "m.device_list_update",
        _update("D2", 6, [5], keys={"device_keys": {}}, device_display_name="tab"),
    )
    await env.fed.on_edu(
        REMOTE,
        "m.device_list_update",
        _update("D3", 7, [6], keys={"user_id": RCAROL, "device_id": "D3", "keys": {}}),
    )
    answer = await env.keys.query(ALICE, {"device_keys": {RBOB: ["D2", "D3"]}})
    assert answer["device_keys"][RBOB] == {  # type: ignore[index]
        "D2": {"device_keys": {}, "unsigned": {"device_display_name": "tab"}}
    }
    assert env.db.read_sync(remote_devices.devices, RBOB)["D3"].keys is None


async def test_a_leave_forgets_lists_no_longer_shared_at_once(env: Env) -> None:
    """After a leave and a rejoin the list must be fetched again: no updates came
    in between (SyTest 40devicelists "resyncs when server leaves and rejoins")."""
    env.writer.add_listener(env.fed.lists.on_persisted)
    await env.join_remote(RCAROL)
    await _tracked_bob(env, "D1")
    env.remotes.on(
        "GET",
        REMOTE,
        user_devices_path(RCAROL),
        lambda _: env.remote_devices_answer(RCAROL, 1, "C1"),
    )
    await env.fed.lists.track([RCAROL])
    await until(lambda: _fresh(env, RCAROL))
    await env.leave_remote(RBOB)  # Bob leaves; Carol stays
    await until(lambda: not env.rows("SELECT * FROM e2e_remote_users WHERE user_id = ?", RBOB))
    assert _fresh(env, RCAROL)
    assert env.rows("SELECT * FROM e2e_remote_devices WHERE user_id = ?", RBOB) == []
    # Our last user leaves: every remote member's list goes.
    await env.writer.send_event(env.room_id, ALICE, "m.room.member", {"membership": "leave"}, ALICE)
    await until(lambda: not env.rows("SELECT * FROM e2e_remote_users"))
