"""The failures of outbound federation requests (raised by federation/client.py)."""

from __future__ import annotations


class FederationError(Exception):
    """A request to another server failed; ``destination`` names it."""

    def __init__(self, destination: str, message: str) -> None:
        super().__init__(f"{destination}: {message}")
        self.destination = destination


class FederationBlocked(FederationError):
    """Not allowed: the server is not in ``federation_domain_whitelist``, or it resolves
    only to addresses ``ip_range_blacklist`` blocks. Nothing was sent."""


class FederationUnreachable(FederationError):
    """The server could not be reached: discovery, DNS or the connection failed."""


class FederationTlsError(FederationUnreachable):
    """The TLS handshake failed (the certificate is not valid for the expected name,
    not trusted, or expired)."""


class FederationTimeout(FederationUnreachable):
    """The request's deadline passed before a complete answer."""


class FederationHttpError(FederationError):
    """The server answered with an error status.

    Attributes:
        status: The HTTP status code.
        errcode: The Matrix ``errcode`` of the answer, or None if it had none.
        error: The answer's ``error`` text, or None.
        body: The parsed JSON answer, or None if it was not JSON.
    """

    def __init__(
        self,
        destination: str,
        status: int,
        errcode: str | None,
        error: str | None,
        body: object | None,
    ) -> None:
        super().__init__(destination, f"HTTP {status} {errcode or ''} {error or ''}".rstrip())
        self.status = status
        self.errcode = errcode
        self.error = error
        self.body = body


class FederationResponseTooLarge(FederationError):
    """The answer was longer than the request's ``max_size``."""


class FederationBadResponse(FederationError):
    """A successful answer was not the JSON that was expected."""


def unknown_endpoint(e: FederationHttpError) -> bool:
    """The remote does not serve the endpoint asked: 404/405 without an errcode (older
    servers answer so, with an empty or non-JSON body) or ``M_UNRECOGNIZED`` with 400,
    404 or 405 (client-server-api "Common error codes"; Synapse's
    ``is_unknown_endpoint``). A caller may then ask the endpoint's older version."""
    if e.errcode == "M_UNRECOGNIZED":
        return e.status in (400, 404, 405)
    return e.status in (404, 405) and e.errcode is None
