"""Registration (client-server API "Account registration", "Token-authenticated registration",
"Guest Access": ``kind=guest`` and the upgrade of a guest with ``guest_access_token``)."""

from __future__ import annotations

import re
import secrets
import string

import trio
from quart import Blueprint, request

from pocketserver.accounts.management import check_new_password
from pocketserver.accounts.service import MAX_DEVICE_ID_LENGTH, MAX_DISPLAY_NAME_LENGTH
from pocketserver.accounts.uia import DUMMY, REGISTRATION_TOKEN, UiaSession
from pocketserver.api.http import (
    client_address,
    get_bool,
    json_body,
    optional_str,
    require_appservice,
    services,
)
from pocketserver.api.routes import client_route
from pocketserver.errors import MatrixError, forbidden, missing_param

bp = Blueprint("register", __name__)

REMEMBERED = (
    "username",
    "password",
    "device_id",
    "initial_device_display_name",
    "inhibit_login",
    "refresh_token",
    "guest_access_token",
)
"""Fields a client may send only in the first request of its UIA session."""

APPSERVICE = "m.login.application_service"

NUMERIC = re.compile(r"[0-9]+")
"""Localparts kept for guest accounts (Synapse's ``GUEST_USER_ID_PATTERN``)."""


def _registration_enabled() -> None:
    if not services().config.enable_registration:
        raise forbidden("registration is disabled on this server")


async def _check_available(localpart: str) -> str:
    """Raises: MatrixError 400 ``M_INVALID_USERNAME`` or ``M_USER_IN_USE``."""
    s = services()
    user_id = s.accounts.check_new_localpart(localpart)
    s.appservices.check_user_allowed(user_id, None)  # exclusive namespaces: M_EXCLUSIVE
    if await s.accounts.is_taken(user_id):
        raise MatrixError(400, "M_USER_IN_USE", "that user ID is taken")
    return user_id


def _check_fields(body: dict[str, object]) -> None:
    """Reject malformed fields before any authentication, as the spec asks."""
    for key in (
        "username",
        "password",
        "device_id",
        "initial_device_display_name",
        "guest_access_token",
    ):
        optional_str(body, key)
    get_bool(body, "inhibit_login")
    get_bool(body, "refresh_token")
    password = optional_str(body, "password")
    if password is not None:
        check_new_password(password)
    device_id = optional_str(body, "device_id")
    if device_id is not None and not 0 < len(device_id) <= MAX_DEVICE_ID_LENGTH:
        raise MatrixError(400, "M_INVALID_PARAM", "device_id must be 1 to 255 characters")
    name = optional_str(body, "initial_device_display_name")
    if name is not None and len(name) > MAX_DISPLAY_NAME_LENGTH:
        raise MatrixError(400, "M_INVALID_PARAM", "device display name is too long")


def _check_not_numeric(localpart: str) -> None:
    """As Synapse: all-digit localparts are for guests (kept even with guests off)."""
    if NUMERIC.fullmatch(localpart):
        raise MatrixError(400, "M_INVALID_USERNAME", "numeric user IDs are kept for guests")


async def _register_guest() -> dict[str, object]:
    """``kind=guest``: no UIA; every body field but ``initial_device_display_name`` is
    ignored (spec). As Synapse, ``enable_registration`` does not matter here, only
    ``allow_guest_access``; ``rc_registration`` limits it as any registration."""
    s = services()
    if not s.guests.enabled:
        raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "guest accounts are not available")
    s.ratelimits.registration.check(client_address(), trio.current_time())
    body = await json_body(allow_empty=True)
    session = await s.guests.register(optional_str(body, "initial_device_display_name"))
    return {
        "user_id": session.user_id,
        "home_server": s.config.server_name,
        "access_token": session.access_token,
        "device_id": session.device_id,
    }


async def _register_appservice_user(body: dict[str, object]) -> dict[str, object]:
    """``type: m.login.application_service`` with the service's ``as_token``: a user in
    its namespaces, without UIA, rate limits or ``enable_registration`` (application
    service API, "Server admin style permissions").

    Raises:
        MatrixError: 401 without a service's token; 400 ``M_EXCLUSIVE`` outside its
            namespaces, ``M_INVALID_USERNAME``, ``M_USER_IN_USE``.
    """
    s = services()
    service = require_appservice()
    _check_fields(body)
    username = optional_str(body, "username")
    if username is None:
        raise missing_param("username")
    if username.startswith("@"):
        username = s.accounts.user_id_for(username)[1:].split(":", 1)[0]
    user_id = s.accounts.check_new_localpart(username)
    s.appservices.check_user_allowed(user_id, service)
    user_id = await s.accounts.register(username, None)
    await s.profiles.set_initial(user_id, username)
    answer, _ = await _registered(user_id, body)
    return answer


def _generated_localpart() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "u" + "".join(secrets.choice(alphabet) for _ in range(11))


def _requested_localpart(fields: dict[str, object]) -> str | None:
    """The ``username`` asked for, lowercased as Synapse does (so ``user-UPPER`` gets
    ``@user-upper``; the spec's grammar for new user IDs has no capitals, and the spec
    calls ``username`` only "the basis for the localpart")."""
    username = optional_str(fields, "username")
    return None if username is None else username.lower()


async def _create_account(
    session: UiaSession, fields: dict[str, object], token_required: bool
) -> str:
    """Register the account (or upgrade the guest) of a completed session; the session
    stays alive, remembering the user ID, for a repeat of the request."""
    s = services()
    api = s.account_api
    password = optional_str(fields, "password")
    if password is None:
        raise missing_param("password")
    guest_token = optional_str(fields, "guest_access_token")
    localpart = _requested_localpart(fields)
    if guest_token is not None:
        user_id = await s.guests.check_upgrade(guest_token, localpart)
        await s.guests.upgrade(user_id, password)
    else:
        if localpart is None:
            localpart = _generated_localpart()
        _check_not_numeric(localpart)
        await _check_available(localpart)
        user_id = await s.accounts.register(localpart, password)
        await s.profiles.set_initial(user_id, localpart)
    if token_required:
        await api.registration_tokens.count_use(session)
    session.registered = user_id
    session.request.pop("password", None)
    return user_id


@client_route(bp, "/register", methods=["POST"])
async def register() -> dict[str, object]:
    s = services()
    kind = request.args.get("kind", "user")
    if kind not in ("user", "guest"):
        raise MatrixError(400, "M_INVALID_PARAM", "kind must be 'user' or 'guest'")
    if kind == "guest":
        return await _register_guest()
    try:
        peek = await json_body(allow_empty=True)
    except MatrixError:
        peek = {}  # reported below, after the checks that come first
    if peek.get("type") == APPSERVICE:
        return await _register_appservice_user(peek)
    _registration_enabled()
    address = client_address()
    limiter = s.ratelimits.registration
    if not limiter.would_allow(address, trio.current_time()):
        limiter.check(address, trio.current_time())
    body = await json_body()
    _check_fields(body)
    api = s.account_api
    # A repeat of a session that registered an account logs that account in again
    # (as Synapse; SyTest 11register "registration is idempotent").
    earlier = api.uia.get(body, "register")
    registered = earlier.registered if earlier is not None else None
    username = _requested_localpart(body)
    guest_token = optional_str(body, "guest_access_token")
    if registered is not None:
        if username is not None and s.accounts.check_new_localpart(username) != registered:
            raise MatrixError(400, "M_INVALID_PARAM", "this session has registered another user ID")
    elif guest_token is not None:
        # Upgrading a guest: checked before UIA, as Synapse's check_username does.
        await s.guests.check_upgrade(guest_token, username)
    elif username is not None:
        _check_not_numeric(username)
        await _check_available(username)
    token_required = s.config.registration_requires_token
    session = await api.uia.authenticate(
        "register",
        body,
        # As Synapse: the token, then the dummy stage (matrix-nio relies on it).
        [[REGISTRATION_TOKEN, DUMMY]] if token_required else [[DUMMY]],
        {REGISTRATION_TOKEN: api.registration_tokens.check_stage},
        remember={k: body[k] for k in REMEMBERED if k in body},
    )
    fields = {**session.request, **{k: body[k] for k in REMEMBERED if k in body}}
    _check_fields(fields)
    if session.registered is not None:
        user_id = session.registered
        await s.accounts.check_active(user_id)
    else:
        user_id = await _create_account(session, fields, token_required)
        limiter.record(address, trio.current_time())
    answer, access_token = await _registered(user_id, fields)
    if access_token is not None and get_bool(fields, "refresh_token"):
        refresh, expires_in_ms = await api.refresh.make_refreshable(access_token)
        answer["refresh_token"] = refresh
        answer["expires_in_ms"] = expires_in_ms
    return answer


async def _registered(
    user_id: str, fields: dict[str, object]
) -> tuple[dict[str, object], str | None]:
    """The answer to a registration of ``user_id`` and its new access token: a new
    device is logged in unless ``inhibit_login`` (then the token is None)."""
    s = services()
    answer: dict[str, object] = {"user_id": user_id, "home_server": s.config.server_name}
    if get_bool(fields, "inhibit_login"):
        return answer, None
    session = await s.accounts.create_session(
        user_id,
        optional_str(fields, "device_id"),
        optional_str(fields, "initial_device_display_name"),
    )
    answer["access_token"] = session.access_token
    answer["device_id"] = session.device_id
    return answer, session.access_token


@client_route(bp, "/register/available", methods=["GET"])
async def available() -> dict[str, object]:
    s = services()
    _registration_enabled()
    s.account_api.availability_limit.check(client_address(), trio.current_time())
    username = request.args.get("username")
    if username is None:
        raise missing_param("username")
    await _check_available(username)
    return {"available": True}


@bp.route("/_matrix/client/v1/register/m.login.registration_token/validity", methods=["GET"])
async def token_validity() -> dict[str, object]:
    s = services()
    _registration_enabled()
    s.account_api.token_validity_limit.check(client_address(), trio.current_time())
    token = request.args.get("token")
    if token is None:
        raise missing_param("token")
    return {"valid": await s.account_api.registration_tokens.is_valid(token)}
