"""OpenID: ``POST /user/{userId}/openid/request_token`` (client-server
data/api/client-server/openid.yaml) and ``GET /_matrix/federation/v1/openid/userinfo``
(data/api/server-server/openid.yaml), which third parties call to check a token.

The userinfo route is served where Synapse serves it: on listeners with the
``federation`` or ``openid`` resource (``openid`` alone serves only this route, for
widgets and integration managers on a server that does not federate).
"""

from __future__ import annotations

from quart import Blueprint, request

from pocketserver.api.federation.auth import public
from pocketserver.api.http import json_body, require_auth, services
from pocketserver.api.routes import client_route
from pocketserver.errors import MatrixError, forbidden

bp = Blueprint("openid", __name__)
federation_bp = Blueprint("openid_federation", __name__)


@client_route(bp, "/user/<user_id>/openid/request_token", methods=["POST"])
async def request_token(user_id: str) -> dict[str, object]:
    requester = await require_auth()
    if requester.user_id != user_id:
        raise forbidden("Cannot request tokens for other users.")
    await json_body()  # "an empty object": must be a JSON object (as Synapse)
    return await services().openid.request_token(user_id)


@federation_bp.get("/_matrix/federation/v1/openid/userinfo")
@public  # the spec gives it no signedRequest security: the token is the proof
async def userinfo() -> dict[str, object]:
    token = request.args.get("access_token")
    if not token:
        # As Synapse: a missing token is 401 M_MISSING_TOKEN (the spec lists only 401).
        raise MatrixError(401, "M_MISSING_TOKEN", "Access Token required")
    return {"sub": await services().openid.user_for(token)}
