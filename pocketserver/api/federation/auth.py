"""X-Matrix authentication of inbound ``/_matrix/federation/*`` requests.

Spec: server-server-api.md "Request Authentication". Every route under
``/_matrix/federation/`` (media federation included) needs a valid ``X-Matrix``
header unless its view is marked :func:`public` (the spec gives those no
``signedRequest`` security: ``/version``, ``/openid/userinfo`` and ``/3pid/onbind``).
Unknown paths and wrong methods are answered 404/405 ``M_UNRECOGNIZED`` before any
authentication, as Synapse does (peers decide their fallbacks on that answer).
A handler reads the authenticated server with :func:`federation_origin`.

Refusals are ``M_UNAUTHORIZED``: 401 for no header, a ``destination`` that is not us,
an origin whose key cannot be found or is not valid now, or a bad signature; 400 for a
header that cannot be read or whose origin is not a server name (as Synapse; SyTest
"Non-numeric ports in server names are rejected" expects the 400).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import quote

from quart import current_app, g, request

from pocketserver.api.http import json_body, services
from pocketserver.core.crypto import SignatureError
from pocketserver.errors import MatrixError
from pocketserver.federation.xmatrix import (
    AuthHeaderError,
    MalformedAuthHeader,
    parse_authorization,
    request_to_check,
)

PREFIX = "/_matrix/federation/"
_PUBLIC = "_pocket_federation_public"

F = TypeVar("F", bound=Callable[..., object])


def public(view: F) -> F:
    """Mark a federation route as needing no ``X-Matrix`` signature."""
    setattr(view, _PUBLIC, True)
    return view


def federation_origin() -> str:
    """The server that signed the current request (only in authenticated routes)."""
    origin = g.get("federation_origin")
    if not isinstance(origin, str):
        raise RuntimeError("federation_origin() outside an authenticated federation route")
    return origin


def _unauthorized(error: str) -> MatrixError:
    return MatrixError(401, "M_UNAUTHORIZED", error)


def request_target() -> str:
    """The request target as sent: raw path and ``?query`` (what the sender signed)."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else quote(request.path)
    query = request.scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


async def authenticate_federation_request() -> None:
    """``before_request``: check the signature of a request to a federation route."""
    if not request.path.startswith(PREFIX):
        return
    rule = request.url_rule
    if request.routing_exception is not None or rule is None:
        return  # 404/405 M_UNRECOGNIZED, whoever asks
    if getattr(current_app.view_functions.get(rule.endpoint), _PUBLIC, False):
        return
    origin = await verify_request()
    g.federation_origin = origin
    # The server is up: what it is owed goes out now, whatever its backoff (as Synapse).
    services().federation_sender.on_remote_contact(origin)


async def verify_request() -> str:
    """Check the current request's ``X-Matrix`` headers; return the origin.

    Raises:
        MatrixError: 401 or 400 ``M_UNAUTHORIZED`` (see the module docstring); 400
            ``M_NOT_JSON``/``M_BAD_JSON`` for a PUT or POST whose body is not a
            JSON object (the spec requires one).
    """
    s = services()
    content = await json_body() if request.method in ("PUT", "POST") else None
    try:
        auths = [
            auth
            for value in request.headers.getlist("Authorization")
            if (auth := parse_authorization(value)) is not None
        ]
        origin, signed = request_to_check(
            auths, request.method, request_target(), s.config.server_name, content
        )
    except MalformedAuthHeader as e:
        raise MatrixError(400, "M_UNAUTHORIZED", str(e)) from None
    except AuthHeaderError as e:
        raise _unauthorized(str(e)) from None
    try:
        await s.keyring.verify_json(origin, signed, int(time.time() * 1000))
    except SignatureError as e:
        raise _unauthorized(f"request not signed by {origin}: {e}") from None
    g.user_id = origin  # the access log's "who"
    return origin
