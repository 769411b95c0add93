"""``/publicRooms`` over federation, in process: our directory served to a signed peer
only when ``allow_public_rooms_over_federation`` is true (else 403 and nothing listed),
without rooms that do not federate or whose ACL denies the peer; and our clients'
``/publicRooms?server=`` asking another server (POST with a filter, GET as the
fallback), with Synapse's error answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from pocketserver.federation.errors import FederationUnreachable
from pocketserver.federation.remote_public_rooms import PATH
from pocketserver.rooms.create import RoomSettings, create_room
from pocketserver.storage import users as user_store
from tests.federation.queries_rig import ScriptedRemote, http_error, serving_env

US = "test.local"
ALICE = f"@alice:{US}"
URI = "/_matrix/federation/v1/publicRooms"


async def _published(services, name: str, **settings) -> str:
    room_id = await create_room(
        services.rooms,
        ALICE,
        RoomSettings(room_version="10", preset="public_chat", name=name, **settings),
    )
    await services.directory.set_visibility(room_id, public=True)
    return room_id


@pytest.fixture
async def allowed(tmp_path: Path):
    env = await serving_env(tmp_path, US, allow_public_rooms_over_federation=True)
    env.services.db.write_sync(user_store.insert_user, ALICE, None, 0)
    yield env
    env.services.db.close()


@pytest.fixture
async def refused(tmp_path: Path):
    env = await serving_env(tmp_path, US)
    env.services.db.write_sync(user_store.insert_user, ALICE, None, 0)
    yield env
    env.services.db.close()


async def test_refused_when_the_config_says_no(refused) -> None:
    await _published(refused.services, "Secret garden")
    for status, body in (
        await refused.get(URI),
        await refused.get(URI + "?limit=5&include_all_networks=true"),
        await refused.post(URI, {"filter": {"generic_search_term": "garden"}}),
    ):
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
        assert "Secret" not in str(body)
    # Unsigned: refused before the config is read.
    r = await refused.app.test_client().get(URI)
    assert r.status_code == 401


async def test_served_when_allowed_without_unfederatable_or_acl_denied_rooms(allowed) -> None:
    s = allowed.services
    lounge = await _published(s, "Lounge")
    cellar = await _published(s, "Cellar")
    await _published(s, "Local only", creation_content={"m.federate": False})
    denied = await _published(s, "No peers")
    await s.rooms.send_event(
        denied, ALICE, "m.room.server_acl", {"allow": ["*"], "deny": ["peer.example"]}, ""
    )
    status, body = await allowed.get(URI)
    assert status == 200, body
    assert sorted(r["name"] for r in body["chunk"]) == ["Cellar", "Lounge"]
    # Pagination: limit and since.
    status, first = await allowed.get(URI + "?limit=1")
    assert status == 200
    assert len(first["chunk"]) == 1
    assert "next_batch" in first
    status, second = await allowed.get(URI + f"?limit=1&since={first['next_batch']}")
    assert status == 200
    assert {first["chunk"][0]["room_id"], second["chunk"][0]["room_id"]} == {lounge, cellar}
    # POST with a search term (MSC2197).
    status, body = await allowed.post(URI, {"filter": {"generic_search_term": "loun"}})
    assert status == 200, body
    assert [r["room_id"] for r in body["chunk"]] == [lounge]
    status, body = await allowed.post(URI, {"limit": 1})
    assert status == 200
    assert len(body["chunk"]) == 1
    # A network nobody has: nothing.
    status, body = await allowed.post(URI, {"third_party_instance_id": "nope"})
    assert (status, body["chunk"]) == (200, [])
    # Bad input: the spec's errors.
    for status, body in (
        await allowed.get(URI + "?limit=x"),
        await allowed.get(URI + "?include_all_networks=maybe"),
        await allowed.post(URI, {"limit": "ten"}),
        await allowed.post(URI, {"since": 5}),
        await allowed.post(URI, {"filter": "loun"}),
        await allowed.post(URI, {"since": "not a token"}),
    ):
        assert status == 400, body


# --- our clients asking another server -------------------------------------------------


THEM = "remote.test"
ROOM = {"room_id": "!a:remote.test", "name": "Remote lounge", "num_joined_members": 3}
OTHER = {"room_id": "!b:remote.test", "topic": "Gardening", "num_joined_members": 1}


@pytest.fixture
async def client_env(allowed):
    import dataclasses

    from pocketserver.app import create_app
    from pocketserver.federation.remote_public_rooms import RemoteRoomDirectory

    remote = ScriptedRemote()
    services = dataclasses.replace(allowed.services, remote_directory=RemoteRoomDirectory(remote))
    app = create_app(services, ["client"])
    token = (await services.accounts.create_session(ALICE, None, None)).access_token
    return app.test_client(), {"Authorization": f"Bearer {token}"}, remote


async def _call(client, method: str, path: str, headers, body=None):
    r = await client.open("/_matrix/client/v3" + path, method=method, json=body, headers=headers)
    return r.status_code, await r.get_json()


async def test_a_client_lists_another_servers_directory(client_env) -> None:
    client, auth, remote = client_env
    remote.set(THEM, PATH, {"chunk": [ROOM, OTHER], "total_room_count_estimate": 2})
    status, body = await _call(client, "GET", f"/publicRooms?server={THEM}&limit=5", auth)
    assert (status, body["chunk"]) == (200, [ROOM, OTHER])
    asked = remote.asked[-1]
    assert (asked.method, asked.query) == (
        "GET",
        {"include_all_networks": "false", "limit": "5"},
    )
    # Another server's directory needs a logged-in user (as Synapse).
    status, body = await _call(client, "GET", f"/publicRooms?server={THEM}", {})
    assert status == 401
    # POST with a filter is a POST there.
    status, body = await _call(
        client,
        "POST",
        f"/publicRooms?server={THEM}",
        auth,
        {"filter": {"generic_search_term": "garden"}, "limit": 10},
    )
    assert status == 200
    asked = remote.asked[-1]
    assert asked.method == "POST"
    assert asked.content == {
        "include_all_networks": False,
        "filter": {"generic_search_term": "garden"},
        "limit": 10,
    }
    # Our own name is our own directory: nothing asked.
    before = len(remote.asked)
    status, body = await _call(client, "GET", f"/publicRooms?server={US}", auth)
    assert status == 200
    assert len(remote.asked) == before


async def test_a_server_without_search_is_asked_with_get_and_filtered_here(client_env) -> None:
    client, auth, remote = client_env

    def answer(asked):
        if asked.method == "POST":
            raise http_error(THEM, 404, "M_UNRECOGNIZED")
        return {"chunk": [ROOM, OTHER]}

    remote.set(THEM, PATH, answer)
    status, body = await _call(
        client,
        "POST",
        f"/publicRooms?server={THEM}",
        auth,
        {"filter": {"generic_search_term": "GARDEN"}, "since": "x"},
    )
    assert (status, body) == (200, {"chunk": [OTHER]})
    assert [a.method for a in remote.asked] == ["POST", "GET"]
    assert "since" not in remote.asked[-1].query  # the fallback does not paginate


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (http_error(THEM, 403, "M_FORBIDDEN"), (403, "M_FORBIDDEN")),
        (http_error(THEM, 500, "M_UNKNOWN"), (502, "M_UNKNOWN")),
        (http_error(THEM, 400, "M_INVALID_PARAM"), (502, "M_UNKNOWN")),
        (FederationUnreachable(THEM, "down"), (502, "M_UNKNOWN")),
        ({"no": "chunk"}, (502, "M_UNKNOWN")),
        ([1, 2], (502, "M_UNKNOWN")),
    ],
)
async def test_remote_directory_failures_never_a_500(client_env, failure, expected) -> None:
    client, auth, remote = client_env
    remote.set(THEM, PATH, failure)
    for method, body in (
        ("GET", None),
        ("POST", {}),
        ("POST", {"filter": {"generic_search_term": "a"}}),
    ):
        status, answer = await _call(client, method, f"/publicRooms?server={THEM}", auth, body)
        assert (status, answer["errcode"]) == expected, (method, body)


async def test_a_bad_server_name_is_400(client_env) -> None:
    client, auth, remote = client_env
    status, body = await _call(client, "GET", "/publicRooms?server=bad%20name!", auth)
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    assert remote.asked == []
