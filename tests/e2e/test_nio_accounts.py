"""matrix-nio (from PyPI) registering, managing devices and using a registration token."""

from __future__ import annotations

import asyncio

import httpx
import nio

from tests.harness import make_config, running_server

PASSWORD = "nio password"


def test_nio_register_devices_and_delete(tmp_path) -> None:
    with running_server(make_config(tmp_path, enable_registration=True)) as server:

        async def scenario() -> None:
            client = nio.AsyncClient(server.base_url, "niouser2")
            other = nio.AsyncClient(server.base_url, "@niouser2:" + server.server_name)
            try:
                reg = await client.register("niouser2", PASSWORD, device_name="nio phone")
                assert isinstance(reg, nio.RegisterResponse), reg
                assert reg.user_id == "@niouser2:" + server.server_name
                assert client.access_token
                login = await other.login(PASSWORD, device_name="second")
                assert isinstance(login, nio.LoginResponse), login
                devices = await client.devices()
                assert isinstance(devices, nio.DevicesResponse), devices
                names = {d.id: d.display_name for d in devices.devices}
                assert names[reg.device_id] == "nio phone"
                assert login.device_id in names
                renamed = await client.update_device(login.device_id, {"display_name": "old"})
                assert isinstance(renamed, nio.UpdateDeviceResponse), renamed
                first = await client.delete_devices([login.device_id])
                assert isinstance(first, nio.DeleteDevicesAuthResponse), first
                assert first.flows == [{"stages": ["m.login.password"]}]
                auth = {
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": "niouser2"},
                    "password": PASSWORD,
                    "session": first.session,
                }
                done = await client.delete_devices([login.device_id], auth)
                assert isinstance(done, nio.DeleteDevicesResponse), done
                who = await other.whoami()
                assert isinstance(who, nio.WhoamiError)
                assert who.status_code == "M_UNKNOWN_TOKEN"
            finally:
                await client.close()
                await other.close()

        asyncio.run(scenario())


def test_nio_register_with_token(tmp_path) -> None:
    config = make_config(tmp_path, enable_registration=True, registration_requires_token=True)
    with running_server(config) as server:
        admin = server.register("tokenadmin", admin=True)["access_token"]
        r = httpx.post(
            server.base_url + "/_synapse/admin/v1/registration_tokens/new",
            headers={"Authorization": f"Bearer {admin}"},
            json={"token": "niotoken", "uses_allowed": 1},
        )
        assert r.status_code == 200, r.text

        async def scenario() -> None:
            client = nio.AsyncClient(server.base_url, "niotokenuser")
            try:
                bad = await client.register("niotokenuser", PASSWORD)
                assert isinstance(bad, nio.responses.RegisterErrorResponse), bad
                resp = await client.register_with_token("niotokenuser", PASSWORD, "niotoken")
                assert isinstance(resp, nio.RegisterResponse), resp
                assert resp.user_id == "@niotokenuser:" + server.server_name
                again = await client.register_with_token("niotokenuser2", PASSWORD, "niotoken")
                assert isinstance(again, nio.responses.RegisterErrorResponse), again
            finally:
                await client.close()

        asyncio.run(scenario())
