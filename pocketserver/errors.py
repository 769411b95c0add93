"""Matrix errors: an ``errcode``, a message and the spec's HTTP status.

Services raise :class:`MatrixError`; the web layer turns it into
``{"errcode": ..., "error": ...}`` with the status. Anything else that escapes is
a bug, logged with the request id and answered ``M_UNKNOWN`` 500.
"""

from __future__ import annotations


class MatrixError(Exception):
    """A failure the client should see, as the spec's errcode and status."""

    def __init__(self, status: int, errcode: str, error: str, **extra: object) -> None:
        super().__init__(f"{status} {errcode}: {error}")
        self.status = status
        self.errcode = errcode
        self.error = error
        self.extra = extra

    def to_json(self) -> dict[str, object]:
        return {"errcode": self.errcode, "error": self.error, **self.extra}


def bad_json(error: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", error)


def missing_param(name: str) -> MatrixError:
    return MatrixError(400, "M_MISSING_PARAM", f"missing parameter: {name}")


def invalid_param(error: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", error)


def forbidden(error: str) -> MatrixError:
    return MatrixError(403, "M_FORBIDDEN", error)


def not_found(error: str = "not found") -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", error)


def unknown_token(error: str = "unknown or expired access token") -> MatrixError:
    return MatrixError(401, "M_UNKNOWN_TOKEN", error, soft_logout=False)


def federation_unavailable(what: str) -> MatrixError:
    """A request that needs another server (a remote room, alias or user) while this
    server does not federate yet: a clear error instead of a silent success or a
    misleading 404 (issue #10: "Until a part works, it must answer a clear Matrix error,
    never a silent 200"). 403 ``M_FORBIDDEN`` as Synapse answers when federation with
    that server is not allowed (``FederationDeniedError``, ``federation_domain_whitelist``):
    the same answer a client already meets from a Synapse that does not federate, and
    a 4xx, since nothing is wrong with this server."""
    return MatrixError(403, "M_FORBIDDEN", f"{what}: federation is not available yet")
