"""How a failed query to another server is told to our client.

Follows Synapse (handlers/profile.py ``get_profile``, handlers/room_list.py
``get_remote_public_room_list``), so clients meet the same answers from either server:

- the server may not be asked (``federation_domain_whitelist``, ``ip_range_blacklist``):
  403 ``M_FORBIDDEN``, as Synapse's ``FederationDeniedError``;
- it answered 404 or 403: that status and errcode, passed on (a 404 is ``M_NOT_FOUND``);
- anything else (unreachable, a timeout, a 5xx, another 4xx, an answer that is not
  the expected JSON or too large): 502 ``M_UNKNOWN``. Never a 500: nothing is wrong
  with this server.
"""

from __future__ import annotations

from pocketserver.errors import MatrixError
from pocketserver.federation.errors import FederationBlocked, FederationError, FederationHttpError


def bad_gateway(what: str) -> MatrixError:
    return MatrixError(502, "M_UNKNOWN", what)


def remote_failure(exc: FederationError, what: str) -> MatrixError:
    """The client's answer for a failed request (``what``: "Failed to fetch profile")."""
    if isinstance(exc, FederationBlocked):
        return MatrixError(403, "M_FORBIDDEN", f"Federation denied with {exc.destination}")
    if isinstance(exc, FederationHttpError) and exc.status == 404:
        return MatrixError(404, "M_NOT_FOUND", exc.error or "not found")
    if isinstance(exc, FederationHttpError) and exc.status == 403:
        return MatrixError(403, "M_FORBIDDEN", exc.error or "forbidden")
    return bad_gateway(what)
