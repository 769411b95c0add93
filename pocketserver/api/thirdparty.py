"""Third-party lookups (client-server API "Third-party Networks",
data/api/client-server/third_party_lookup.yaml), forwarded to the application services
that bridge each protocol (pocketserver/appservice/thirdparty.py).

With no service for a protocol, ``GET /thirdparty/protocols`` answers ``{}`` (Element
asks it at start-up) and lookups an empty list with 200, as Synapse does (the spec's
text allows 404 ``M_NOT_FOUND`` for "nothing found"; Synapse's answer is what bridges'
and clients' code is tested against). Asking for an unknown protocol's metadata is 404.
"""

from __future__ import annotations

from quart import Blueprint, request

from pocketserver.api.http import require_auth, services
from pocketserver.api.routes import client_route
from pocketserver.errors import missing_param, not_found

bp = Blueprint("thirdparty", __name__)


def _fields() -> list[tuple[str, str]]:
    """The query string, less the access token (never forwarded to a service)."""
    return [(k, v) for k, v in request.args.items(multi=True) if k != "access_token"]


@client_route(bp, "/thirdparty/protocols", methods=["GET"])
async def protocols() -> dict[str, object]:
    await require_auth(allow_guest=True)
    return await services().thirdparty.all_protocols()


@client_route(bp, "/thirdparty/protocol/<protocol>", methods=["GET"])
async def protocol(protocol: str) -> dict[str, object]:
    await require_auth(allow_guest=True)
    info = await services().thirdparty.protocol(protocol)
    if info is None:
        raise not_found(f"no third-party protocol {protocol!r} on this server")
    return info


@client_route(bp, "/thirdparty/location/<protocol>", methods=["GET"])
async def location_in_protocol(protocol: str) -> list[object]:
    await require_auth(allow_guest=True)
    return await services().thirdparty.lookup("location", protocol, _fields())


@client_route(bp, "/thirdparty/user/<protocol>", methods=["GET"])
async def user_in_protocol(protocol: str) -> list[object]:
    await require_auth(allow_guest=True)
    return await services().thirdparty.lookup("user", protocol, _fields())


@client_route(bp, "/thirdparty/location", methods=["GET"])
async def location_by_alias() -> list[object]:
    await require_auth(allow_guest=True)
    if request.args.get("alias") is None:
        raise missing_param("alias")
    return await services().thirdparty.lookup("location", None, _fields())


@client_route(bp, "/thirdparty/user", methods=["GET"])
async def user_by_id() -> list[object]:
    await require_auth(allow_guest=True)
    if request.args.get("userid") is None:
        raise missing_param("userid")
    return await services().thirdparty.lookup("user", None, _fields())
