"""Dehydrated devices (MSC3814, unstable): ``/dehydrated_device`` and its ``/events``.

Only under ``/_matrix/client/unstable/org.matrix.msc3814.v1``; ``/versions`` advertises
``org.matrix.msc3814``. The behaviour is in :mod:`pocketserver.e2e.dehydrated`.

The device ID is the device's Curve25519 key in unpadded base64, which may hold ``/``:
the ``/events`` route takes the rest of the path up to ``/events``.
"""

from __future__ import annotations

from quart import Blueprint, request

from pocketserver.api.http import json_body, optional_str, require_auth, services
from pocketserver.e2e.dehydrated import MAX_EVENTS_PER_BATCH, Batch
from pocketserver.errors import invalid_param

bp = Blueprint("dehydrated", __name__)

PREFIX = "/_matrix/client/unstable/org.matrix.msc3814.v1"


def _limit() -> int:
    raw = request.args.get("limit")
    if raw is None:
        return MAX_EVENTS_PER_BATCH
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise invalid_param("limit must be a positive integer")
    return int(raw)


@bp.get(PREFIX + "/dehydrated_device")
async def get_dehydrated_device() -> dict[str, object]:
    """MSC3814 "Rehydrating a device": 404 ``M_NOT_FOUND`` when there is none."""
    requester = await require_auth()
    device = await services().dehydrated.get(requester.user_id)
    return {"device_id": device.device_id, "device_data": device.device_data}


@bp.put(PREFIX + "/dehydrated_device")
async def put_dehydrated_device() -> dict[str, object]:
    """MSC3814 "Dehydrating a device": replaces any previous dehydrated device."""
    requester = await require_auth()
    body = await json_body()
    device_id = await services().dehydrated.put(requester.user_id, body)
    return {"device_id": device_id}


@bp.delete(PREFIX + "/dehydrated_device")
async def delete_dehydrated_device() -> dict[str, object]:
    """MSC3814 "Deleting a dehydrated device": no user-interactive auth."""
    requester = await require_auth()
    return {"device_id": await services().dehydrated.delete(requester.user_id)}


@bp.post(PREFIX + "/dehydrated_device/<path:device_id>/events")
async def dehydrated_device_events(device_id: str) -> dict[str, object]:
    """MSC3814 "Rehydrating a device": ``{"next_batch": ...}`` in the body; every
    response carries a ``next_batch``, and an empty ``events`` marks the end."""
    requester = await require_auth()
    body = await json_body(allow_empty=True)
    token = optional_str(body, "next_batch")
    batch = await services().dehydrated.events(requester.user_id, device_id, token, _limit())
    return {"events": batch.events, "next_batch": batch.next_batch}


@bp.get(PREFIX + "/dehydrated_device/<path:device_id>/events")
async def dehydrated_device_events_get(device_id: str) -> dict[str, object]:
    """The later draft of MSC3814 (as Synapse): ``?from=`` instead of a body, and
    ``next_batch`` only while more messages may follow."""
    requester = await require_auth()
    token = request.args.get("from")
    batch = await services().dehydrated.events(requester.user_id, device_id, token, _limit())
    return _paged(batch)


def _paged(batch: Batch) -> dict[str, object]:
    if batch.limited:
        return {"events": batch.events, "next_batch": batch.next_batch}
    return {"events": batch.events}
