"""``GET /voip/turnServer`` (client-server API "Voice over IP").

Credentials follow the TURN REST API convention that coturn's ``use-auth-secret``
implements (and Synapse issues): the username is ``<expiry unix time>:<user ID>``
and the password the base64 HMAC-SHA1 of the username keyed with
``turn_shared_secret``, valid for ``turn_user_lifetime``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from quart import Blueprint

from pocketserver.api.http import require_auth, services
from pocketserver.api.routes import client_route

bp = Blueprint("voip", __name__)


def turn_credentials(secret: str, user_id: str, lifetime_ms: int, now_s: float) -> tuple[str, str]:
    """(username, password) valid until now + lifetime."""
    expiry = int(now_s + lifetime_ms / 1000)
    username = f"{expiry}:{user_id}"
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


@client_route(bp, "/voip/turnServer", methods=["GET"])
async def turn_server() -> dict[str, object]:
    requester = await require_auth(allow_guest=True)
    config = services().config
    if not config.turn_uris or not config.turn_shared_secret:
        return {}  # no TURN server configured: clients fall back to STUN/host candidates
    username, password = turn_credentials(
        config.turn_shared_secret, requester.user_id, config.turn_user_lifetime_ms, time.time()
    )
    return {
        "username": username,
        "password": password,
        "uris": list(config.turn_uris),
        "ttl": config.turn_user_lifetime_ms // 1000,
    }
