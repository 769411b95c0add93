"""Account management: password, deactivation, refresh, capabilities.

Client-server API "Password management", "Account deactivation", "Refreshing
access tokens" and "Capabilities negotiation".
"""

from __future__ import annotations

from quart import Blueprint

from pocketserver.api.account_auth import confirm_identity, optional_auth
from pocketserver.api.http import (
    get_bool,
    json_body,
    optional_str,
    require_auth,
    require_str,
    services,
)
from pocketserver.api.routes import client_route
from pocketserver.core.room_versions import KNOWN_ROOM_VERSIONS

bp = Blueprint("account", __name__)


@client_route(bp, "/account/password", methods=["POST"])
async def change_password() -> dict[str, object]:
    s = services()
    requester = await optional_auth()
    body = await json_body()
    new_password = require_str(body, "new_password")
    logout_devices = get_bool(body, "logout_devices", default=True)
    session = await confirm_identity("password", body, requester)
    assert session.user_id is not None
    await s.account_api.management.change_password(
        session.user_id,
        new_password,
        keep_device=requester.device_id if requester else None,
        logout_devices=logout_devices,
    )
    s.account_api.uia.finish(session)
    return {}


@client_route(bp, "/account/deactivate", methods=["POST"])
async def deactivate() -> dict[str, object]:
    s = services()
    requester = await optional_auth()
    body = await json_body()
    optional_str(body, "id_server")
    erase = get_bool(body, "erase")
    if requester is not None and requester.app_service is not None:
        # An application service deactivates its users without UIA (as Synapse);
        # require_auth already checked the user is in its namespace.
        await s.account_api.management.deactivate(requester.user_id, erase=erase)
        return {"id_server_unbind_result": "no-support"}
    session = await confirm_identity("deactivate", body, requester)
    assert session.user_id is not None
    s.account_api.uia.finish(session)
    await s.account_api.management.deactivate(session.user_id, erase=erase)
    # No identity server is ever told about this server's users.
    return {"id_server_unbind_result": "no-support"}


@client_route(bp, "/refresh", methods=["POST"])
async def refresh() -> dict[str, object]:
    body = await json_body()
    token = require_str(body, "refresh_token")
    tokens = await services().account_api.refresh.refresh(token)
    return {
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "expires_in_ms": tokens.expires_in_ms,
    }


@client_route(bp, "/capabilities", methods=["GET"])
async def capabilities() -> dict[str, object]:
    await require_auth(allow_guest=True)
    config = services().config
    return {
        "capabilities": {
            "m.room_versions": {
                "default": config.default_room_version,
                "available": dict.fromkeys(KNOWN_ROOM_VERSIONS, "stable"),
            },
            "m.change_password": {"enabled": config.password_enabled},
            "m.set_displayname": {"enabled": True},
            "m.set_avatar_url": {"enabled": True},
            "m.profile_fields": {"enabled": True, "allowed": ["displayname", "avatar_url"]},
            "m.3pid_changes": {"enabled": False},
            "m.get_login_token": {"enabled": services().account_api.login_tokens is not None},
        }
    }
