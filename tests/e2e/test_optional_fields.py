"""Unset optional fields where clients and SyTest need the key present (as Synapse
sends them): null, not left out (issue #9 asked for them to be left out; that breaks
matrix-nio's /devices and SyTest's joined_members check)."""

from __future__ import annotations

import asyncio

import nio

from tests.harness import RunningServer

V3 = "/_matrix/client/v3"


def test_joined_members_keep_both_keys(server: RunningServer, new_user: str) -> None:
    body = server.register(new_user)
    user_id = body["user_id"]
    auth = {"Authorization": f"Bearer {body['access_token']}"}
    with server.client() as c:
        room = c.post(f"{V3}/createRoom", headers=auth, json={}).json()["room_id"]
        joined = c.get(f"{V3}/rooms/{room}/joined_members", headers=auth).json()["joined"]
        # Registration sets a display name (the localpart); there is no avatar. SyTest
        # (10apidoc/31room-state.pl): "We always have these keys even if they're undef".
        assert joined[user_id] == {"display_name": new_user, "avatar_url": None}
        r = c.put(f"{V3}/profile/{user_id}/displayname", headers=auth, json={"displayname": None})
        assert r.status_code == 200, r.text
        joined = c.get(f"{V3}/rooms/{room}/joined_members", headers=auth).json()["joined"]
        assert joined[user_id] == {"display_name": None, "avatar_url": None}
        r = c.put(
            f"{V3}/profile/{user_id}/avatar_url", headers=auth, json={"avatar_url": "mxc://a/b"}
        )
        assert r.status_code == 200, r.text
        joined = c.get(f"{V3}/rooms/{room}/joined_members", headers=auth).json()["joined"]
        assert joined[user_id] == {"display_name": None, "avatar_url": "mxc://a/b"}


def test_devices_without_a_name_keep_null_for_matrix_nio(
    server: RunningServer, new_user: str
) -> None:
    """matrix-nio (0.26, the newest) validates /devices with every one of the four keys
    required, null allowed, as Synapse sends them: an unnamed device must keep
    ``display_name: null`` or nio's ``devices()`` fails for every user with one."""
    server.register(new_user)  # shared-secret registration: a device with no name

    async def scenario() -> None:
        client = nio.AsyncClient(server.base_url, f"@{new_user}:{server.server_name}")
        try:
            login = await client.login("correct horse")  # nio sends no device name
            assert isinstance(login, nio.LoginResponse), login
            devices = await client.devices()
            assert isinstance(devices, nio.DevicesResponse), devices
            names = {d.id: d.display_name for d in devices.devices}
            assert names[login.device_id] is None
        finally:
            await client.close()

    asyncio.run(scenario())
