"""The client side of federation profile queries, in process: ``GET /profile/{userId}``
for another server's user asks ``/query/profile`` there; answers are cached briefly
(bounded, dropped when a member event of that user arrives); failures map to Synapse's
answers and never to a 500."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from urllib.parse import quote

import pytest

from pocketserver.accounts.profiles import Profiles
from pocketserver.app import create_app
from pocketserver.cache import MemoryBudget
from pocketserver.config import load_config
from pocketserver.federation.errors import (
    FederationBadResponse,
    FederationBlocked,
    FederationTimeout,
    FederationUnreachable,
)
from pocketserver.federation.remote_profiles import PATH, RemoteProfiles
from pocketserver.services import build_services
from pocketserver.storage import users as user_store
from tests.federation.queries_rig import Clock, ScriptedRemote, http_error
from tests.harness import make_config

US = "test.local"
THEM = "remote.test"
BOB = f"@bob:{THEM}"
ALICE = f"@alice:{US}"


@pytest.fixture
async def env(tmp_path: Path):
    services = await build_services(load_config(make_config(tmp_path, server_name=US)))
    remote = ScriptedRemote()
    clock = Clock()
    cache = RemoteProfiles(remote, MemoryBudget(8 << 20), ttl_s=60.0, clock=clock)
    profiles = Profiles(services.room_client, US, cache)
    services = dataclasses.replace(services, profiles=profiles)
    app = create_app(services, ["client", "federation"])
    services.db.write_sync(user_store.insert_user, ALICE, None, 0)
    token = (await services.accounts.create_session(ALICE, None, None)).access_token
    client = app.test_client()
    client.headers = {"Authorization": f"Bearer {token}"}
    yield client, remote, clock, cache
    services.db.close()


async def _get(client, path: str, headers=None) -> tuple[int, dict]:
    r = await client.get(
        "/_matrix/client/v3" + path, headers=client.headers if headers is None else headers
    )
    return r.status_code, await r.get_json()


async def test_a_remote_profile_is_asked_of_its_server_and_cached(env) -> None:
    client, remote, clock, _ = env
    remote.set(THEM, PATH, {"displayname": "Bob", "avatar_url": "mxc://remote.test/b"})
    assert await _get(client, f"/profile/{quote(BOB)}") == (
        200,
        {"displayname": "Bob", "avatar_url": "mxc://remote.test/b"},
    )
    [asked] = remote.asked
    assert (asked.method, asked.destination, asked.query) == ("GET", THEM, {"user_id": BOB})
    # The fields come from the same cached answer: no second request.
    assert await _get(client, f"/profile/{quote(BOB)}/displayname") == (
        200,
        {"displayname": "Bob"},
    )
    assert await _get(client, f"/profile/{quote(BOB)}/avatar_url") == (
        200,
        {"avatar_url": "mxc://remote.test/b"},
    )
    assert len(remote.asked) == 1
    # After the TTL the server is asked again and a change is seen.
    remote.set(THEM, PATH, {"displayname": "Robert"})
    clock.now += 61
    assert await _get(client, f"/profile/{quote(BOB)}") == (200, {"displayname": "Robert"})
    assert len(remote.asked) == 2
    status, body = await _get(client, f"/profile/{quote(BOB)}/avatar_url")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")


async def test_a_member_event_of_the_user_drops_the_cached_profile(env) -> None:
    _, remote, _, cache = env
    remote.set(THEM, PATH, {"displayname": "Bob"})
    assert await cache.get(BOB) == {"displayname": "Bob"}
    remote.set(THEM, PATH, {"displayname": "Bobby"})
    assert await cache.get(BOB) == {"displayname": "Bob"}  # cached
    cache.on_member_event({"type": "m.room.member", "state_key": f"@carol:{THEM}"})
    assert await cache.get(BOB) == {"displayname": "Bob"}  # someone else's
    cache.on_member_event({"type": "m.room.member", "state_key": BOB})
    assert await cache.get(BOB) == {"displayname": "Bobby"}
    assert len(remote.asked) == 2


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (http_error(THEM, 404, "M_NOT_FOUND"), (404, "M_NOT_FOUND")),
        (http_error(THEM, 403, "M_FORBIDDEN"), (403, "M_FORBIDDEN")),
        (http_error(THEM, 500, "M_UNKNOWN"), (502, "M_UNKNOWN")),
        (http_error(THEM, 400, "M_INVALID_PARAM"), (502, "M_UNKNOWN")),
        (FederationUnreachable(THEM, "connection refused"), (502, "M_UNKNOWN")),
        (FederationTimeout(THEM, "too slow"), (502, "M_UNKNOWN")),
        (FederationBadResponse(THEM, "not JSON"), (502, "M_UNKNOWN")),
        (FederationBlocked(THEM, "not whitelisted"), (403, "M_FORBIDDEN")),
        (["not", "an", "object"], (502, "M_UNKNOWN")),
    ],
)
async def test_remote_failures_are_synapses_answers_never_a_500(env, failure, expected) -> None:
    client, remote, _, _ = env
    remote.set(THEM, PATH, failure)
    for path in (f"/profile/{quote(BOB)}", f"/profile/{quote(BOB)}/displayname"):
        status, body = await _get(client, path)
        assert (status, body["errcode"]) == expected, path


async def test_only_a_not_found_is_remembered(env) -> None:
    _, remote, _, cache = env
    remote.set(THEM, PATH, FederationUnreachable(THEM, "down"))
    for _ in range(2):
        with pytest.raises(Exception, match="502"):
            await cache.get(BOB)
    assert len(remote.asked) == 2  # an outage is not cached
    remote.set(THEM, PATH, http_error(THEM, 404, "M_NOT_FOUND"))
    for _ in range(2):
        with pytest.raises(Exception, match="404"):
            await cache.get(BOB)
    assert len(remote.asked) == 3


async def test_anonymous_requests_never_reach_other_servers(env) -> None:
    client, remote, _, _ = env
    remote.set(THEM, PATH, {"displayname": "Bob"})
    for path in (f"/profile/{quote(BOB)}", f"/profile/{quote(BOB)}/displayname"):
        status, body = await _get(client, path, headers={})
        assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")
    assert remote.asked == []
    # Local profiles stay public.
    status, _ = await _get(client, f"/profile/{quote(ALICE)}", headers={})
    assert status == 200


async def test_local_users_are_never_asked_over_federation(env) -> None:
    client, remote, _, _ = env
    status, body = await _get(client, f"/profile/{quote('@nobody:' + US)}")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = await _get(client, "/profile/not-a-user-id")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    assert remote.asked == []


def test_the_cache_is_bounded_by_its_share_of_the_budget() -> None:
    import trio

    remote = ScriptedRemote()
    remote.set(THEM, PATH, lambda asked: {"displayname": "x" * 2000})
    cache = RemoteProfiles(remote, MemoryBudget(4 << 20))

    async def fill() -> None:
        for i in range(3000):
            await cache.get(f"@u{i}:{THEM}")

    trio.run(fill)
    stats = cache.cache.lru.statistics()
    assert stats.size_bytes <= stats.max_bytes
    assert stats.evictions > 0
    assert stats.entries < 3000


# --- serving: other servers reading our users' profiles ---------------------------------


@pytest.mark.parametrize("allowed", [True, False])
async def test_serving_profiles_follows_allow_profile_lookup_over_federation(
    tmp_path: Path, allowed: bool
) -> None:
    from pocketserver.storage import profiles as profile_store
    from pocketserver.storage import users as user_store
    from tests.federation.queries_rig import serving_env

    env = await serving_env(tmp_path, US, allow_profile_lookup_over_federation=allowed)
    alice = f"@alice:{US}"
    try:
        env.services.db.write_sync(user_store.insert_user, alice, None, 0)
        env.services.db.write_sync(profile_store.set_profile_field, alice, "displayname", "Alice")
        base = f"/_matrix/federation/v1/query/profile?user_id={quote(alice)}"
        whole = await env.get(base)
        field = await env.get(base + "&field=displayname")
        other = await env.get(base + "&field=avatar_url")
        if allowed:
            assert whole == (200, {"displayname": "Alice"})
            assert field == (200, {"displayname": "Alice"})
            assert other == (200, {})
        else:
            for status, body in (whole, field, other):
                assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
                assert "Alice" not in str(body)
    finally:
        env.services.db.close()
