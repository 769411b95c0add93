"""Federation routes for end-to-end encryption (server-server-api.md "Device
Management", "End-to-End Encryption"): thin calls into
:class:`pocketserver.federation.e2e.serving.KeyServing` with the authenticated origin.

The origin comes from :func:`authenticated_origin`, which reads what the X-Matrix
check put in ``g.federation_origin``. Until that check runs for these routes every
request is refused 401 ``M_UNAUTHORIZED``: a route never answers a server it has not
authenticated.
"""

from __future__ import annotations

from quart import Blueprint, g

from pocketserver.api.http import json_body, services
from pocketserver.errors import MatrixError

bp = Blueprint("federation_e2e", __name__)


def authenticated_origin() -> str:
    """The server that signed the current request (api/federation/auth.py checked it).

    Raises:
        MatrixError: 401 ``M_UNAUTHORIZED`` when the request was not authenticated.
    """
    origin = g.get("federation_origin")
    if not isinstance(origin, str) or not origin:
        raise MatrixError(401, "M_UNAUTHORIZED", "this request needs X-Matrix authentication")
    return origin


@bp.get("/_matrix/federation/v1/user/devices/<user_id>")
async def user_devices(user_id: str) -> dict[str, object]:
    origin = authenticated_origin()
    return await services().federation_e2e.serving.user_devices(origin, user_id)


@bp.post("/_matrix/federation/v1/user/keys/query")
async def user_keys_query() -> dict[str, object]:
    origin = authenticated_origin()
    body = await json_body()
    return await services().federation_e2e.serving.query(origin, body)


@bp.post("/_matrix/federation/v1/user/keys/claim")
async def user_keys_claim() -> dict[str, object]:
    origin = authenticated_origin()
    body = await json_body()
    return await services().federation_e2e.serving.claim(origin, body)
