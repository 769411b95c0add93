"""``GET /_matrix/client/v3/admin/whois/{userId}`` (data/api/client-server/admin.yaml),
also at Synapse's ``/_synapse/admin/v1/whois/{userId}`` for admin tools."""

from __future__ import annotations

from quart import Blueprint

from pocketserver.accounts.whois import whois
from pocketserver.api.http import require_auth, services
from pocketserver.api.routes import client_route

bp = Blueprint("whois", __name__)


@client_route(bp, "/admin/whois/<user_id>", methods=["GET"])
@bp.get("/_synapse/admin/v1/whois/<user_id>")
async def get_whois(user_id: str) -> dict[str, object]:
    requester = await require_auth()
    s = services()
    return await whois(
        s.db, s.account_api.devices, s.config.server_name, requester.user_id, user_id
    )
