"""Login, logout and whoami (client-server-api/_index.md "Login", "Logout", "whoami").

Login types: ``m.login.password``, ``m.login.token`` with tokens from
``POST /login/get_token`` when ``login_via_existing_session`` is enabled, and
``m.login.application_service`` for the users of application services.
"""

from __future__ import annotations

import trio
from quart import Blueprint

from pocketserver.api.account_auth import confirm_identity
from pocketserver.api.http import (
    client_address,
    get_bool,
    json_body,
    optional_str,
    require_appservice,
    require_auth,
    require_str,
    services,
)
from pocketserver.api.routes import client_route, client_v1_route
from pocketserver.errors import MatrixError
from pocketserver.services import Services

bp = Blueprint("login", __name__)


@client_route(bp, "/login", methods=["GET"])
async def login_flows() -> dict[str, object]:
    s = services()
    flows: list[dict[str, object]] = []
    if s.config.password_enabled:
        flows.append({"type": "m.login.password"})
    if s.account_api.login_tokens is not None:
        flows.append({"type": "m.login.token", "get_login_token": True})
    if s.appservices.all:
        flows.append({"type": "m.login.application_service"})
    return {"flows": flows}


def _login_user(body: dict[str, object]) -> str:
    """The user named by ``identifier`` (``m.id.user``) or the deprecated ``user``."""
    identifier = body.get("identifier")
    if identifier is None:
        user = optional_str(body, "user")
        if user is None:
            raise MatrixError(400, "M_MISSING_PARAM", "missing parameter: identifier")
        return user
    if not isinstance(identifier, dict):
        raise MatrixError(400, "M_BAD_JSON", "identifier must be an object")
    kind = identifier.get("type")
    if kind != "m.id.user":
        raise MatrixError(400, "M_UNKNOWN", f"unsupported identifier type: {kind!r}")
    return require_str(identifier, "user")


@client_route(bp, "/login", methods=["POST"])
async def login() -> dict[str, object]:
    s = services()
    body = await json_body()
    login_type = require_str(body, "type")
    device_id = optional_str(body, "device_id")
    display_name = optional_str(body, "initial_device_display_name")
    wants_refresh = get_bool(body, "refresh_token")
    if login_type == "m.login.password" and s.config.password_enabled:
        user_id = await _password_login(s, body)
    elif login_type == "m.login.token" and s.account_api.login_tokens is not None:
        token = require_str(body, "token")
        s.ratelimits.login_address.check(client_address(), trio.current_time())
        user_id = s.account_api.login_tokens.redeem(token)
        await s.accounts.check_active(user_id)
    elif login_type == "m.login.application_service":
        user_id = await _appservice_login(s, body)
    else:
        raise MatrixError(400, "M_UNKNOWN", f"unsupported login type: {login_type!r}")
    session = await s.accounts.create_session(user_id, device_id, display_name)
    answer: dict[str, object] = {
        "user_id": session.user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
        "home_server": s.config.server_name,
        "well_known": {"m.homeserver": {"base_url": s.config.public_baseurl}},
    }
    if wants_refresh:  # refresh tokens: accounts/refresh.py
        refresh, expires_in_ms = await s.account_api.refresh.make_refreshable(session.access_token)
        answer["refresh_token"] = refresh
        answer["expires_in_ms"] = expires_in_ms
    return answer


async def _appservice_login(s: Services, body: dict[str, object]) -> str:
    """``m.login.application_service`` (application service API, "Server admin style
    permissions"): the service's ``as_token`` and a user in its namespaces.

    Raises:
        MatrixError: 401 without a service's token, 400 ``M_EXCLUSIVE`` outside its
            namespaces, 403 for a user that does not exist or is deactivated.
    """
    service = require_appservice()
    user_id = s.accounts.user_id_for(_login_user(body))
    s.appservices.check_user_allowed(user_id, service)
    await s.accounts.check_active(user_id)
    return user_id


async def _password_login(s: Services, body: dict[str, object]) -> str:
    """The user ID a password login names, rate limited per address and account."""
    user = _login_user(body)
    password = require_str(body, "password")
    now = trio.current_time()
    s.ratelimits.login_address.check(client_address(), now)
    account_key = user.lower()
    s.ratelimits.login_account.check(account_key, now)
    if not s.ratelimits.login_failures.would_allow(account_key, now):
        s.ratelimits.login_failures.check(account_key, now)
    try:
        return await s.accounts.login_password(user, password)
    except MatrixError:
        s.ratelimits.login_failures.record(account_key, now)
        raise


@client_v1_route(bp, "/login/get_token", methods=["POST"])
async def get_login_token() -> dict[str, object]:
    """``POST /_matrix/client/v1/login/get_token`` (v1.7): a one-time token for a new
    device of the same user. UIA every time, as the spec requires; at most one token a
    minute per user (429 ``M_LIMIT_EXCEEDED``); 404 ``M_UNRECOGNIZED`` when the server
    does not offer it."""
    s = services()
    requester = await require_auth()
    tokens = s.account_api.login_tokens
    if tokens is None:
        raise MatrixError(404, "M_UNRECOGNIZED", "login tokens are not enabled on this server")
    body = await json_body(allow_empty=True)
    tokens.check_rate(requester.user_id)
    session = await confirm_identity("get_login_token", body, requester)
    issued = tokens.issue(requester.user_id)
    s.account_api.uia.finish(session)
    return {"login_token": issued.token, "expires_in_ms": issued.expires_in_ms}


@client_route(bp, "/logout", methods=["POST"])
async def logout() -> dict[str, object]:
    requester = await require_auth()
    await services().accounts.logout(requester)
    return {}


@client_route(bp, "/logout/all", methods=["POST"])
async def logout_all() -> dict[str, object]:
    requester = await require_auth()
    await services().accounts.logout_all(requester.user_id)
    return {}


@client_route(bp, "/account/whoami", methods=["GET"])
async def whoami() -> dict[str, object]:
    requester = await require_auth(allow_guest=True)
    return {
        "user_id": requester.user_id,
        "device_id": requester.device_id,
        "is_guest": requester.is_guest,
    }
