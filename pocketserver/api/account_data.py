"""Account data, room tags and read markers (client-server API "Client Config",
"Room Tagging", "Ignoring Users", "Read and unread markers").

Spec: data/api/client-server/account-data.yaml, tags.yaml, read_markers.yaml.
"""

from __future__ import annotations

from quart import Blueprint, request

from pocketserver.account_data import validate
from pocketserver.account_data.read_markers import RECEIPT_TYPES, set_read_markers
from pocketserver.api.http import json_body, optional_str, require_auth, services
from pocketserver.api.routes import client_route
from pocketserver.core.identifiers import is_valid_room_id
from pocketserver.errors import MatrixError, forbidden

bp = Blueprint("account_data", __name__)


async def _read_body() -> None:
    """Receive the whole request body before anything can fail: an error answered while
    the body is still unread leaves the kept-alive connection hanging."""
    await request.get_data(cache=True, as_text=False)


async def _own(user_id: str) -> str:
    """Authenticate; only the user themself may read or change their account data.

    Raises:
        MatrixError: 401 without a valid token, 403 ``M_FORBIDDEN`` for another user.
    """
    await _read_body()
    requester = await require_auth()
    if requester.user_id != user_id:
        raise forbidden("you can only access your own account data")
    return user_id


def _room_id(room_id: str) -> str:
    if not is_valid_room_id(room_id):
        raise MatrixError(400, "M_INVALID_PARAM", f"{room_id!r} is not a valid room ID")
    return room_id


def _settable(event_type: str) -> None:
    """A bad type (400) or a server-managed one (405) is refused before the body is read."""
    validate.check_type(event_type)
    validate.check_client_may_set(event_type)


# --- account data ------------------------------------------------------------------------


@client_route(bp, "/user/<user_id>/account_data/<event_type>", methods=["GET"])
async def get_global(user_id: str, event_type: str) -> dict[str, object]:
    await _own(user_id)
    return await services().account_data.get(user_id, None, event_type)


@client_route(bp, "/user/<user_id>/account_data/<event_type>", methods=["PUT"])
async def put_global(user_id: str, event_type: str) -> dict[str, object]:
    await _own(user_id)
    _settable(event_type)
    body = await json_body()
    await services().account_data.set_by_client(user_id, None, event_type, body)
    return {}


@client_route(bp, "/user/<user_id>/rooms/<room_id>/account_data/<event_type>", methods=["GET"])
async def get_room(user_id: str, room_id: str, event_type: str) -> dict[str, object]:
    await _own(user_id)
    return await services().account_data.get(user_id, _room_id(room_id), event_type)


@client_route(bp, "/user/<user_id>/rooms/<room_id>/account_data/<event_type>", methods=["PUT"])
async def put_room(user_id: str, room_id: str, event_type: str) -> dict[str, object]:
    await _own(user_id)
    _room_id(room_id)
    _settable(event_type)
    body = await json_body()
    await services().account_data.set_by_client(user_id, room_id, event_type, body)
    return {}


# --- tags --------------------------------------------------------------------------------


@client_route(bp, "/user/<user_id>/rooms/<room_id>/tags", methods=["GET"])
async def get_tags(user_id: str, room_id: str) -> dict[str, object]:
    await _own(user_id)
    return {"tags": await services().account_data.tags(user_id, _room_id(room_id))}


@client_route(bp, "/user/<user_id>/rooms/<room_id>/tags/<tag>", methods=["PUT"])
async def put_tag(user_id: str, room_id: str, tag: str) -> dict[str, object]:
    await _own(user_id)
    _room_id(room_id)
    body = await json_body(allow_empty=True)
    await services().account_data.set_tag(user_id, room_id, tag, body)
    return {}


@client_route(bp, "/user/<user_id>/rooms/<room_id>/tags/<tag>", methods=["DELETE"])
async def delete_tag(user_id: str, room_id: str, tag: str) -> dict[str, object]:
    await _own(user_id)
    await services().account_data.remove_tag(user_id, _room_id(room_id), tag)
    return {}


# --- read markers ------------------------------------------------------------------------


@client_route(bp, "/rooms/<room_id>/read_markers", methods=["POST"])
async def read_markers(room_id: str) -> dict[str, object]:
    await _read_body()
    requester = await require_auth()
    _room_id(room_id)
    body = await json_body()
    fully_read = optional_str(body, "m.fully_read")
    read = {t: v for t in RECEIPT_TYPES if (v := optional_str(body, t)) is not None}
    s = services()
    await set_read_markers(
        s.account_data, s.room_client, s.receipts, requester.user_id, room_id, fully_read, read
    )
    return {}
