"""What the sender needs of the outbound HTTP client: one signed ``PUT`` of JSON.

The real implementation is the federation client (X-Matrix signing, server
discovery, TLS); tests use an in-process fake. ``put_json`` makes one attempt: the
sender decides about retries and backoff.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pocketserver.federation.outbound import LazyFederationClient


class FederationSendError(Exception):
    """A request to another server failed.

    Attributes:
        status: the HTTP status of the answer, or None when there was none (the
            server could not be resolved or reached, TLS failed, the request timed out).
        errcode: the Matrix ``errcode`` of the answer, if it had one.
    """

    def __init__(self, message: str, *, status: int | None = None, errcode: str | None = None):
        super().__init__(message)
        self.status = status
        self.errcode = errcode


class FederationTransport(Protocol):
    async def put_json(
        self,
        destination: str,
        path: str,
        body: dict[str, object],
        timeout: float,  # noqa: ASYNC109 (the client applies it to the whole exchange)
    ) -> dict[str, object]:
        """``PUT https://<destination><path>`` with ``body``, signed as this server.

        Returns:
            The decoded JSON body of a 2xx answer.

        Raises:
            FederationSendError: no answer, a non-2xx answer or a body that is not a
                JSON object.
        """
        ...


class ClientTransport:
    """:class:`FederationTransport` over the server's federation client: its errors
    become :class:`FederationSendError` (with the answer's status and errcode)."""

    def __init__(self, client: LazyFederationClient) -> None:
        self._client = client

    async def put_json(
        self,
        destination: str,
        path: str,
        body: dict[str, object],
        timeout: float,  # noqa: ASYNC109 (the client applies it to the whole exchange)
    ) -> dict[str, object]:
        from pocketserver.federation.errors import FederationError, FederationHttpError

        try:
            answer = await self._client.put_json(destination, path, body, timeout_s=timeout)
        except FederationHttpError as e:
            raise FederationSendError(str(e), status=e.status, errcode=e.errcode) from None
        except FederationError as e:
            raise FederationSendError(str(e)) from None
        if not isinstance(answer, dict):
            raise FederationSendError(f"{destination}: the answer is not a JSON object")
        return answer
