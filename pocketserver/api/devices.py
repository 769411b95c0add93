"""Device management (client-server API "Device management")."""

from __future__ import annotations

from quart import Blueprint

from pocketserver.api.account_auth import confirm_identity
from pocketserver.api.http import json_body, optional_str, require_auth, services
from pocketserver.api.routes import client_route
from pocketserver.errors import MatrixError, bad_json, missing_param

bp = Blueprint("devices", __name__)


@client_route(bp, "/devices", methods=["GET"])
async def list_devices() -> dict[str, object]:
    requester = await require_auth(allow_guest=True)
    devices = await services().account_api.devices.list(requester.user_id)
    return {"devices": [d.to_json() for d in devices]}


@client_route(bp, "/devices/<path:device_id>", methods=["GET"])
async def get_device(device_id: str) -> dict[str, object]:
    requester = await require_auth(allow_guest=True)
    device = await services().account_api.devices.get(requester.user_id, device_id)
    return device.to_json()


@client_route(bp, "/devices/<path:device_id>", methods=["PUT"])
async def update_device(device_id: str) -> dict[str, object]:
    requester = await require_auth(allow_guest=True)
    body = await json_body()
    name = optional_str(body, "display_name")
    devices = services().account_api.devices
    if name is None:
        await devices.get(requester.user_id, device_id)  # 404 for an unknown device
    else:
        await devices.rename(requester.user_id, device_id, name)
    return {}


@client_route(bp, "/devices/<path:device_id>", methods=["DELETE"])
async def delete_device(device_id: str) -> dict[str, object]:
    requester = await require_auth()
    body = await json_body(allow_empty=True)
    api = services().account_api
    session = await confirm_identity("delete_devices", body, requester)
    await api.devices.delete(requester.user_id, [device_id])
    api.uia.finish(session)
    return {}


@client_route(bp, "/delete_devices", methods=["POST"])
async def delete_devices() -> dict[str, object]:
    requester = await require_auth()
    body = await json_body()
    ids = body.get("devices")
    if ids is None:
        raise missing_param("devices")
    if not isinstance(ids, list) or not all(isinstance(d, str) for d in ids):
        raise bad_json("devices must be a list of device IDs")
    if len(ids) > 1000:
        raise MatrixError(400, "M_INVALID_PARAM", "at most 1000 devices at once")
    api = services().account_api
    session = await confirm_identity("delete_devices", body, requester, target=sorted(set(ids)))
    await api.devices.delete(requester.user_id, ids)
    api.uia.finish(session)
    return {}
