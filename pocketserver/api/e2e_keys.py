"""End-to-end encryption keys (client-server API "Key management API", "Cross-signing")."""

from __future__ import annotations

from quart import Blueprint, request

from pocketserver.api.account_auth import confirm_identity
from pocketserver.api.http import json_body, require_auth, services
from pocketserver.api.routes import client_route
from pocketserver.e2e.keys import key_changes
from pocketserver.errors import missing_param
from pocketserver.streams.token import SyncToken

bp = Blueprint("e2e_keys", __name__)


@client_route(bp, "/keys/upload", methods=["POST"])
async def upload_keys() -> dict[str, object]:
    requester = await require_auth(allow_guest=True)
    body = await json_body()
    counts = await services().e2e_keys.upload(requester.user_id, requester.device_id, body)
    return {"one_time_key_counts": counts}


@client_route(bp, "/keys/query", methods=["POST"])
async def query_keys() -> dict[str, object]:
    requester = await require_auth(allow_guest=True)
    body = await json_body()
    return await services().e2e_keys.query(requester.user_id, body)


@client_route(bp, "/keys/claim", methods=["POST"])
async def claim_keys() -> dict[str, object]:
    await require_auth(allow_guest=True)
    body = await json_body()
    return await services().e2e_keys.claim(body)


@client_route(bp, "/keys/changes", methods=["GET"])
async def keys_changes() -> dict[str, object]:
    requester = await require_auth(allow_guest=True)
    since = request.args.get("from")
    if since is None:
        raise missing_param("from")
    upto = request.args.get("to")
    return await key_changes(
        services().e2e_keys,
        requester.user_id,
        SyncToken.parse(since),
        None if upto is None else SyncToken.parse(upto),
    )


# MSC1756's unstable paths (before Matrix 1.1) stay served, as by Synapse: older
# clients and SyTest 41end-to-end-keys/08-cross-signing call them.
@client_route(bp, "/keys/device_signing/upload", methods=["POST"], unstable=True)
async def upload_cross_signing_keys() -> dict[str, object]:
    requester = await require_auth()
    body = await json_body()
    s = services()
    session = None
    if await s.cross_signing.needs_auth(requester.user_id, body):
        session = await confirm_identity("device_signing_upload", body, requester)
    await s.cross_signing.upload_keys(requester.user_id, body)
    if session is not None:
        s.account_api.uia.finish(session)
    return {}


@client_route(bp, "/keys/signatures/upload", methods=["POST"], unstable=True)
async def upload_signatures() -> dict[str, object]:
    requester = await require_auth(allow_guest=True)
    body = await json_body()
    failures = await services().cross_signing.upload_signatures(requester.user_id, body)
    return {"failures": failures}
