"""Synapse's shared-secret registration: ``/_synapse/admin/v1/register``."""

from __future__ import annotations

import trio
from quart import Blueprint

from pocketserver.accounts.shared_secret import mac_matches, registration_mac
from pocketserver.api.http import (
    client_address,
    get_bool,
    json_body,
    optional_str,
    require_str,
    services,
)
from pocketserver.errors import MatrixError

bp = Blueprint("admin_register", __name__)

USER_TYPES = (None, "bot", "support")


def _secret() -> str:
    secret = services().config.registration_shared_secret
    if not secret:
        raise MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled")
    return secret


@bp.get("/_synapse/admin/v1/register")
async def get_nonce() -> dict[str, object]:
    _secret()
    return {"nonce": services().registration_nonces.issue(trio.current_time())}


@bp.post("/_synapse/admin/v1/register")
async def register() -> dict[str, object]:
    """Create a user if the HMAC over nonce, user, password and admin flag is right."""
    secret = _secret()
    s = services()
    # Not limited like public sign-up (Synapse does not limit this endpoint at all):
    # an admin's script may create many users in a row. Only a wrong HMAC counts
    # against the client's address under rc_registration, so that the secret cannot
    # be guessed at speed; past the limit every attempt is refused until it refills.
    address, limiter = client_address(), s.ratelimits.registration
    if not limiter.would_allow(address, trio.current_time()):
        limiter.check(address, trio.current_time())
    body = await json_body()
    nonce = require_str(body, "nonce")
    username = require_str(body, "username")
    password = require_str(body, "password")
    mac = require_str(body, "mac")
    admin = get_bool(body, "admin")
    user_type = optional_str(body, "user_type")
    if user_type not in USER_TYPES:
        raise MatrixError(400, "M_INVALID_PARAM", "user_type must be null, 'bot' or 'support'")
    if not password or len(password) > 512 or "\x00" in password:
        raise MatrixError(400, "M_INVALID_PARAM", "invalid password")
    if "\x00" in username:
        raise MatrixError(400, "M_INVALID_USERNAME", "invalid username")
    if not s.registration_nonces.consume(nonce, trio.current_time()):
        raise MatrixError(400, "M_UNKNOWN", "unrecognised nonce")
    expected = registration_mac(secret, nonce, username, password, admin, user_type)
    if not mac_matches(expected, mac):
        limiter.record(address, trio.current_time())
        raise MatrixError(403, "M_FORBIDDEN", "HMAC incorrect")
    user_id = await s.accounts.register(username, password, admin=admin, user_type=user_type)
    await s.profiles.set_initial(user_id, username)
    session = await s.accounts.create_session(user_id, None, None)
    return {
        "user_id": user_id,
        "home_server": s.config.server_name,
        "access_token": session.access_token,
        "device_id": session.device_id,
    }
