"""Federation routes over our rooms: events, state, history, and the resident side of
joins, leaves and knocks (server-server-api.md; data/api/server-server/events.yaml,
backfill.yaml, event_auth.yaml, joins-v2.yaml, leaving-v2.yaml, knocks.yaml).

Thin: each route reads its parameters, asks ``FederationHistory`` or
``ResidentMemberships`` (which check ACLs, membership and visibility for the
authenticated origin), and answers. A room's state and auth chain are streamed
(api/json_stream.py), never held whole.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from quart import Blueprint, Response, request

from pocketserver.api.federation.auth import federation_origin
from pocketserver.api.http import json_body, services
from pocketserver.api.json_stream import streamed_json
from pocketserver.errors import bad_json, invalid_param, missing_param

bp = Blueprint("federation_rooms", __name__)

V1 = "/_matrix/federation/v1"
V2 = "/_matrix/federation/v2"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _required(name: str) -> str:
    value = request.args.get(name)
    if value is None:
        raise missing_param(name)
    return value


def _int_arg(name: str, default: int | None = None) -> int:
    raw = request.args.get(name)
    if raw is None:
        if default is None:
            raise missing_param(name)
        return default
    try:
        return int(raw)
    except ValueError:
        raise invalid_param(f"{name} must be an integer") from None


def _true(name: str) -> bool:
    return request.args.get(name, "false").lower() == "true"


def _id_list(body: Mapping[str, object], name: str) -> list[str]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_json(f"{name} must be a list of event IDs")
    return list(value)


# --- events, state, history --------------------------------------------------------------


@bp.get(f"{V1}/event/<event_id>")
async def get_event(event_id: str) -> dict[str, object]:
    s = services()
    pdu = await s.federation_history.event(federation_origin(), event_id)
    return {"origin": s.config.server_name, "origin_server_ts": _now_ms(), "pdus": [pdu]}


@bp.get(f"{V1}/state_ids/<room_id>")
async def get_state_ids(room_id: str) -> dict[str, object]:
    answer = await services().federation_history.state_ids(
        federation_origin(), room_id, _required("event_id")
    )
    return {"pdu_ids": answer.pdu_ids, "auth_chain_ids": answer.auth_chain_ids}


@bp.get(f"{V1}/state/<room_id>")
async def get_state(room_id: str) -> Response:
    history = services().federation_history
    pdu_ids, chain_ids = await history.state_pdus(
        federation_origin(), room_id, _required("event_id")
    )
    return streamed_json(
        {"pdus": history.pdus_of(pdu_ids), "auth_chain": history.pdus_of(chain_ids)}
    )


@bp.get(f"{V1}/event_auth/<room_id>/<event_id>")
async def get_event_auth(room_id: str, event_id: str) -> Response:
    history = services().federation_history
    chain = await history.event_auth(federation_origin(), room_id, event_id)
    return streamed_json({"auth_chain": history.pdus_of(chain)})


@bp.get(f"{V1}/backfill/<room_id>")
async def backfill(room_id: str) -> dict[str, object]:
    s = services()
    seeds = request.args.getlist("v")
    if not seeds:
        raise missing_param("v")
    pdus = await s.federation_history.backfill(
        federation_origin(), room_id, seeds, _int_arg("limit")
    )
    return {"origin": s.config.server_name, "origin_server_ts": _now_ms(), "pdus": pdus}


@bp.post(f"{V1}/get_missing_events/<room_id>")
async def get_missing_events(room_id: str) -> dict[str, object]:
    body = await json_body()
    limit = body.get("limit", 10)
    min_depth = body.get("min_depth", 0)
    if not isinstance(limit, int) or isinstance(limit, bool):
        raise bad_json("limit must be an integer")
    if not isinstance(min_depth, int) or isinstance(min_depth, bool):
        raise bad_json("min_depth must be an integer")
    events = await services().federation_history.missing_events(
        federation_origin(),
        room_id,
        _id_list(body, "earliest_events"),
        _id_list(body, "latest_events"),
        limit,
        min_depth,
    )
    return {"events": events}


@bp.get(f"{V1}/timestamp_to_event/<room_id>")
async def timestamp_to_event(room_id: str) -> dict[str, object]:
    direction = _required("dir")
    if direction not in ("f", "b"):
        raise invalid_param("dir must be 'f' or 'b'")
    event_id, ts = await services().federation_history.timestamp_to_event(
        federation_origin(), room_id, _int_arg("ts"), direction == "f"
    )
    return {"event_id": event_id, "origin_server_ts": ts}


# --- joins, leaves, knocks --------------------------------------------------------------


@bp.get(f"{V1}/make_join/<room_id>/<user_id>")
async def make_join(room_id: str, user_id: str) -> dict[str, object]:
    versions = request.args.getlist("ver") or None
    return await services().resident_memberships.make(
        federation_origin(), room_id, user_id, "join", versions
    )


@bp.get(f"{V1}/make_leave/<room_id>/<user_id>")
async def make_leave(room_id: str, user_id: str) -> dict[str, object]:
    return await services().resident_memberships.make(
        federation_origin(), room_id, user_id, "leave", None
    )


@bp.get(f"{V1}/make_knock/<room_id>/<user_id>")
async def make_knock(room_id: str, user_id: str) -> dict[str, object]:
    versions = request.args.getlist("ver") or None
    return await services().resident_memberships.make(
        federation_origin(), room_id, user_id, "knock", versions
    )


# v1 send_join and send_leave are no longer in the spec (joins-v1.yaml and
# leaving-v1.yaml keep only make_*), but Synapse and Dendrite still serve them and old
# servers still call them; the answer is the v2 one inside ``[200, ...]`` (MSC1802).


@bp.put(f"{V2}/send_join/<room_id>/<event_id>")
async def send_join(room_id: str, event_id: str) -> Response:
    return await _send_join(room_id, event_id, v1=False)


@bp.put(f"{V1}/send_join/<room_id>/<event_id>")
async def send_join_v1(room_id: str, event_id: str) -> Response:
    return await _send_join(room_id, event_id, v1=True)


async def _send_join(room_id: str, event_id: str, *, v1: bool) -> Response:
    s = services()
    omit_members = not v1 and _true("omit_members")
    answer = await s.resident_memberships.send_join(
        federation_origin(), room_id, event_id, await json_body(), omit_members
    )
    history = s.federation_history
    fields: dict[str, object] = {"origin": s.config.server_name, "event": answer.event}
    if not v1:
        fields["members_omitted"] = answer.members_omitted
        fields["servers_in_room"] = answer.servers_in_room
    fields["state"] = history.pdus_of(answer.state_ids)
    fields["auth_chain"] = history.pdus_of(answer.auth_chain_ids)
    return streamed_json(fields, status_pair=v1)


@bp.put(f"{V2}/send_leave/<room_id>/<event_id>")
async def send_leave(room_id: str, event_id: str) -> dict[str, object]:
    await services().resident_memberships.send_leave(
        federation_origin(), room_id, event_id, await json_body()
    )
    return {}


@bp.put(f"{V1}/send_leave/<room_id>/<event_id>")
async def send_leave_v1(room_id: str, event_id: str) -> list[object]:
    await services().resident_memberships.send_leave(
        federation_origin(), room_id, event_id, await json_body()
    )
    return [200, {}]


@bp.put(f"{V1}/send_knock/<room_id>/<event_id>")
async def send_knock(room_id: str, event_id: str) -> dict[str, object]:
    state = await services().resident_memberships.send_knock(
        federation_origin(), room_id, event_id, await json_body()
    )
    return {"knock_room_state": state}


@bp.put(f"{V2}/invite/<room_id>/<event_id>")
async def invite(room_id: str, event_id: str) -> dict[str, object]:
    """``PUT /v2/invite`` (invites-v2.yaml): one of our users invited by another
    server's (federation/invites.py)."""
    event = await services().invites.receive(
        federation_origin(), room_id, event_id, await json_body()
    )
    return {"event": event}


@bp.put(f"{V1}/invite/<room_id>/<event_id>")
async def invite_v1(room_id: str, event_id: str) -> list[object]:
    """``PUT /v1/invite`` (invites-v1.yaml, still in the spec): the body is the event,
    its ``unsigned.invite_room_state`` the room's stripped state; the room version is
    "1" or "2" ("servers which receive a v1 invite request must assume" one of them:
    the room's own when we hold it). The answer comes in ``[200, {...}]``, as Synapse's.
    """
    s = services()
    pdu = await json_body()
    held = await s.invites.store.room_version(room_id)
    unsigned = pdu.get("unsigned")
    stripped = unsigned.get("invite_room_state") if isinstance(unsigned, dict) else None
    body = {
        "room_version": held if held in ("1", "2") else "1",
        "event": pdu,
        "invite_room_state": stripped if isinstance(stripped, list) else [],
    }
    event = await s.invites.receive(federation_origin(), room_id, event_id, body)
    return [200, {"event": event}]


# --- transactions -----------------------------------------------------------------------


@bp.put(f"{V1}/send/<txn_id>")
async def send_transaction(txn_id: str) -> dict[str, object]:
    """``PUT /send/{txnId}`` (transactions.yaml): EDUs applied, PDUs staged durably
    before this answer (federation/inbound.py)."""
    body = await json_body()
    origin = federation_origin()
    claimed = body.get("origin")
    if claimed is not None and claimed != origin:
        raise bad_json("origin does not match the request's signature")
    return await services().transactions.receive(origin, txn_id, body)
