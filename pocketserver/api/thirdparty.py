"""Third-party lookups (client-server API "Third-party Networks",
data/api/client-server/third_party_lookup.yaml).

Third-party networks are bridged by application services, which this server does not
host: there are no protocols. Element asks ``GET /thirdparty/protocols`` at start-up and
expects ``{}`` then. Lookups by protocol, alias or user ID answer an empty list with
200, as Synapse does when no application service claims the protocol (the spec's text
allows 404 ``M_NOT_FOUND`` for "nothing found"; Synapse's answer is what bridges' and
clients' code is tested against). Asking for one protocol's metadata is 404.
"""

from __future__ import annotations

from quart import Blueprint, request

from pocketserver.api.http import require_auth
from pocketserver.api.routes import client_route
from pocketserver.errors import missing_param, not_found

bp = Blueprint("thirdparty", __name__)


@client_route(bp, "/thirdparty/protocols", methods=["GET"])
async def protocols() -> dict[str, object]:
    await require_auth(allow_guest=True)
    return {}


@client_route(bp, "/thirdparty/protocol/<protocol>", methods=["GET"])
async def protocol(protocol: str) -> dict[str, object]:
    await require_auth(allow_guest=True)
    raise not_found(f"no third-party protocol {protocol!r} on this server")


@client_route(bp, "/thirdparty/location/<protocol>", methods=["GET"])
@client_route(bp, "/thirdparty/user/<protocol>", methods=["GET"])
async def lookup_in_protocol(protocol: str) -> list[object]:
    await require_auth(allow_guest=True)
    return []


@client_route(bp, "/thirdparty/location", methods=["GET"])
async def location_by_alias() -> list[object]:
    await require_auth(allow_guest=True)
    if request.args.get("alias") is None:
        raise missing_param("alias")
    return []


@client_route(bp, "/thirdparty/user", methods=["GET"])
async def user_by_id() -> list[object]:
    await require_auth(allow_guest=True)
    if request.args.get("userid") is None:
        raise missing_param("userid")
    return []
