"""``PUT /sendToDevice/{eventType}/{txnId}`` (client-server API "Send-to-Device messaging").

Spec: data/api/client-server/to_device.yaml. Delivery is the ``to_device`` part of
``/sync`` (:mod:`pocketserver.to_device.sync_source`).
"""

from __future__ import annotations

from quart import Blueprint

from pocketserver.api.http import json_body, require_auth, services
from pocketserver.api.routes import client_route
from pocketserver.errors import missing_param

bp = Blueprint("to_device", __name__)


@client_route(bp, "/sendToDevice/<event_type>/<txn_id>", methods=["PUT"])
async def send_to_device(event_type: str, txn_id: str) -> dict[str, object]:
    requester = await require_auth(allow_guest=True)
    body = await json_body()
    if "messages" not in body:
        raise missing_param("messages")
    await services().to_device.send(
        requester.user_id, requester.device_id, event_type, txn_id, body["messages"]
    )
    return {}
