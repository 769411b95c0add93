"""Pushers (client-server API "Push Notifications": ``GET /pushers``, ``POST /pushers/set``).

Spec: data/api/client-server/pusher.yaml. Validation and delivery live in
``push/pushers.py`` and ``push/delivery.py``.
"""

from __future__ import annotations

from quart import Blueprint

from pocketserver.api.http import json_body, require_auth, services
from pocketserver.api.routes import client_route

bp = Blueprint("pushers", __name__)


@client_route(bp, "/pushers", methods=["GET"])
async def get_pushers() -> dict[str, object]:
    requester = await require_auth()
    return {"pushers": await services().pushers.pushers(requester.user_id)}


@client_route(bp, "/pushers/set", methods=["POST"])
async def set_pusher() -> dict[str, object]:
    requester = await require_auth()
    body = await json_body()
    await services().pushers.set_pusher(requester.user_id, requester.device_id, body)
    return {}
