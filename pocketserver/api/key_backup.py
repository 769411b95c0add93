"""Server-side key backups: ``/room_keys/version[/{version}]`` and
``/room_keys/keys[/{roomId}[/{sessionId}]]?version=``.

Spec: client-server-api modules/end_to_end_encryption.md "Server-side key backups",
data/api/client-server/key_backup.yaml. Deleting a version needs no user-interactive
auth (the spec asks for none). Reading many keys streams the response.
"""

from __future__ import annotations

from quart import Blueprint, Response, request

from pocketserver.api.http import json_body, require_auth, services
from pocketserver.api.routes import client_route
from pocketserver.errors import missing_param
from pocketserver.key_backup import service as backup

bp = Blueprint("key_backup", __name__)


def _version_param() -> str:
    version = request.args.get("version")
    if version is None:
        raise missing_param("version")
    return version


# --- versions ------------------------------------------------------------------------------


@client_route(bp, "/room_keys/version", methods=["POST"])
async def create_version() -> dict[str, object]:
    requester = await require_auth()
    body = await json_body()
    version = await services().key_backup.create_version(requester.user_id, body)
    return {"version": version}


@client_route(bp, "/room_keys/version", methods=["GET"])
async def current_version() -> dict[str, object]:
    requester = await require_auth()
    return backup.version_json(await services().key_backup.get_version(requester.user_id, None))


@client_route(bp, "/room_keys/version/<version>", methods=["GET"])
async def get_version(version: str) -> dict[str, object]:
    requester = await require_auth()
    info = await services().key_backup.get_version(requester.user_id, version)
    return backup.version_json(info)


@client_route(bp, "/room_keys/version/<version>", methods=["PUT"])
async def update_version(version: str) -> dict[str, object]:
    requester = await require_auth()
    body = await json_body()
    await services().key_backup.update_version(requester.user_id, version, body)
    return {}


@client_route(bp, "/room_keys/version/<version>", methods=["DELETE"])
async def delete_version(version: str) -> dict[str, object]:
    requester = await require_auth()
    await services().key_backup.delete_version(requester.user_id, version)
    return {}


# --- keys ----------------------------------------------------------------------------------


async def _stream(room_id: str | None) -> Response:
    requester = await require_auth()
    version = _version_param()
    if room_id is not None:
        backup.check_room_id(room_id)
    chunks = await services().key_backup.stream_keys(requester.user_id, version, room_id)
    return Response(chunks, content_type="application/json")


@client_route(bp, "/room_keys/keys", methods=["GET"])
async def get_all_keys() -> Response:
    return await _stream(None)


@client_route(bp, "/room_keys/keys/<room_id>", methods=["GET"])
async def get_room_keys(room_id: str) -> Response:
    return await _stream(room_id)


# A megolm session ID is standard base64 and often holds a "/" (sent as %2F, which the
# server decodes before routing), hence the ``path`` converter.
@client_route(bp, "/room_keys/keys/<room_id>/<path:session_id>", methods=["GET"])
async def get_session_key(room_id: str, session_id: str) -> dict[str, object]:
    requester = await require_auth()
    version = _version_param()
    key = await services().key_backup.get_key(requester.user_id, version, room_id, session_id)
    return key.to_json()


@client_route(bp, "/room_keys/keys", methods=["PUT"])
async def put_all_keys() -> dict[str, object]:
    requester = await require_auth()
    version = _version_param()
    keys = backup.parse_all_keys(await json_body())
    info = await services().key_backup.put_keys(requester.user_id, version, keys)
    return backup.update_json(info)


@client_route(bp, "/room_keys/keys/<room_id>", methods=["PUT"])
async def put_room_keys(room_id: str) -> dict[str, object]:
    requester = await require_auth()
    version = _version_param()
    keys = backup.parse_room_keys(room_id, await json_body())
    info = await services().key_backup.put_keys(requester.user_id, version, keys)
    return backup.update_json(info)


@client_route(bp, "/room_keys/keys/<room_id>/<path:session_id>", methods=["PUT"])
async def put_session_key(room_id: str, session_id: str) -> dict[str, object]:
    requester = await require_auth()
    version = _version_param()
    key = backup.parse_key(room_id, session_id, await json_body())
    info = await services().key_backup.put_keys(requester.user_id, version, [key])
    return backup.update_json(info)


@client_route(bp, "/room_keys/keys", methods=["DELETE"])
async def delete_all_keys() -> dict[str, object]:
    return await _delete(None, None)


@client_route(bp, "/room_keys/keys/<room_id>", methods=["DELETE"])
async def delete_room_keys(room_id: str) -> dict[str, object]:
    return await _delete(room_id, None)


@client_route(bp, "/room_keys/keys/<room_id>/<path:session_id>", methods=["DELETE"])
async def delete_session_key(room_id: str, session_id: str) -> dict[str, object]:
    return await _delete(room_id, session_id)


async def _delete(room_id: str | None, session_id: str | None) -> dict[str, object]:
    requester = await require_auth()
    version = _version_param()
    info = await services().key_backup.delete_keys(requester.user_id, version, room_id, session_id)
    return backup.update_json(info)
