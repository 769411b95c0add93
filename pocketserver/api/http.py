"""Helpers every route uses: services, JSON bodies, authentication, client address."""

from __future__ import annotations

import json
from typing import cast

from quart import current_app, g, request

from pocketserver.accounts.service import Requester
from pocketserver.appservice.registration import AppService
from pocketserver.errors import MatrixError
from pocketserver.services import Services


def services() -> Services:
    return cast(Services, current_app.config["POCKET_SERVICES"])


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON in Matrix")


async def json_body(*, allow_empty: bool = False) -> dict[str, object]:
    """The request body as a JSON object.

    Raises:
        MatrixError: 400 ``M_NOT_JSON`` if it isn't JSON, 400 ``M_BAD_JSON`` if it
            isn't an object, 413 ``M_TOO_LARGE`` past the configured size.
    """
    raw = cast(bytes, await request.get_data(cache=True, as_text=False))
    if not raw.strip():
        if allow_empty:
            return {}
        raise MatrixError(400, "M_NOT_JSON", "request body is empty; expected a JSON object")
    try:
        parsed = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MatrixError(400, "M_NOT_JSON", "request body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise MatrixError(400, "M_BAD_JSON", "request body must be a JSON object")
    if b"\\u" in raw:
        # \uD800-style escapes can decode to lone surrogates, which are not text.
        try:
            json.dumps(parsed, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise MatrixError(400, "M_BAD_JSON", "strings must be valid Unicode") from None
    return parsed


def access_token() -> str | None:
    """The request's access token: ``Authorization: Bearer``, or the ``access_token``
    query parameter unless ``allow_access_token_in_query`` is false.

    Spec: client-server API "Using access tokens" (the query parameter is deprecated
    since v1.11 but part of the versions we advertise; Synapse accepts it and clients
    such as matrix-nio's downloads and SyTest send it). Both at once are refused as
    Synapse does (``get_access_token_from_request``). The access log prints the path
    only, never the query string, so the token is never logged.

    Raises:
        MatrixError: 401 ``M_MISSING_TOKEN`` for a header and a query token together.
    """
    header = request.headers.get("Authorization")
    query = (
        request.args.get("access_token") if services().config.allow_access_token_in_query else None
    )
    if header is not None:
        if query is not None:
            raise MatrixError(
                401,
                "M_MISSING_TOKEN",
                "Mixing Authorization headers and access_token query parameters.",
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return token.strip()
    return query or None


async def require_auth(*, allow_guest: bool = False) -> Requester:
    """The authenticated requester.

    Args:
        allow_guest: whether guest accounts may use the route (the list and the
            reasons are in ``pocketserver/accounts/guests.py``).

    Raises:
        MatrixError: 401 ``M_MISSING_TOKEN`` or ``M_UNKNOWN_TOKEN``; 403
            ``M_GUEST_ACCESS_FORBIDDEN`` for a guest unless ``allow_guest``.
    """
    token = access_token()
    if token is None:
        raise MatrixError(401, "M_MISSING_TOKEN", "missing access token")
    requester = await _authenticate(token)
    g.user_id = requester.user_id
    if requester.device_id:
        # Last-seen time and address of the device, batched in memory (accounts/devices.py).
        services().account_api.devices.activity.seen(
            requester.user_id,
            requester.device_id,
            client_address(),
            request.headers.get("User-Agent"),
        )
    if requester.is_guest and not allow_guest:
        # As Synapse: noted as seen first, then refused (client-server API "Guest Access").
        raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "guest accounts cannot use this")
    return requester


async def _authenticate(token: str) -> Requester:
    """A user's access token, or an application service's ``as_token`` acting as the
    ``user_id`` (and ``device_id``) of the query string (application service API,
    "Identity assertion"; pocketserver/appservice/service.py)."""
    s = services()
    service = s.appservices.by_token(token)
    if service is None:
        return await s.accounts.authenticate(token)
    args = request.args
    device_id = args.get("device_id") or args.get("org.matrix.msc3202.device_id")
    return await s.appservices.requester(service, args.get("user_id"), device_id)


def require_appservice() -> AppService:
    """The application service whose ``as_token`` the request carries.

    Raises:
        MatrixError: 401 ``M_MISSING_TOKEN`` or ``M_UNKNOWN_TOKEN`` (application
            service API, "Server admin style permissions").
    """
    token = access_token()
    if token is None:
        raise MatrixError(401, "M_MISSING_TOKEN", "missing access token")
    service = services().appservices.by_token(token)
    if service is None:
        raise MatrixError(401, "M_UNKNOWN_TOKEN", "not an application service's token")
    return service


def requesting_service(requester: Requester) -> AppService | None:
    """The application service a requester acts through, if any."""
    if requester.app_service is None:
        return None
    return services().appservices.by_id(requester.app_service)


def client_address() -> str:
    """The client's IP, from X-Forwarded-For when the listener trusts a proxy.

    The *last* address of the header is taken: the one the proxy in front of this
    listener added. Earlier entries come from the client, which can write anything
    there (nginx's ``$proxy_add_x_forwarded_for`` appends to what the client sent).
    Synapse takes the first; the last cannot be forged through a single proxy.
    """
    if current_app.config.get("POCKET_X_FORWARDED"):
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last
    return request.remote_addr or "unknown"


def optional_str(body: dict[str, object], key: str) -> str | None:
    """A string field of a JSON body, or None if absent or null.

    Raises:
        MatrixError: 400 ``M_BAD_JSON`` if present but not a string.
    """
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MatrixError(400, "M_BAD_JSON", f"{key} must be a string")
    return value


def require_str(body: dict[str, object], key: str) -> str:
    """A required string field of a JSON body.

    Raises:
        MatrixError: 400 ``M_MISSING_PARAM`` if absent, ``M_BAD_JSON`` if not a string.
    """
    value = optional_str(body, key)
    if value is None:
        raise MatrixError(400, "M_MISSING_PARAM", f"missing parameter: {key}")
    return value


def get_bool(body: dict[str, object], key: str, default: bool = False) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise MatrixError(400, "M_BAD_JSON", f"{key} must be true or false")
    return value
