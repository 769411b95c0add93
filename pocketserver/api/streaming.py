"""Request bodies that routes stream (uploads), with backpressure.

Quart's ASGI layer appends every received chunk to the request body as fast as the
client sends it, so a route that writes to a slow SD card would let an upload pile
up in memory. For the paths in ``app.STREAMED_BODY_PREFIXES`` the request gets a
:class:`StreamedBody` instead: no whole-body size limit (the route enforces its own
while reading) and at most :data:`HIGH_WATER` bytes buffered before the connection
stops reading from the socket until the route has taken them.

The same connection class also sends an answer held in memory as one body message.
"""

from __future__ import annotations

from typing import Any

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable
from quart.utils import encode_headers
from quart.wrappers.response import DataBody
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers.request import TrioBody, TrioRequest

HIGH_WATER = 256 * 1024
STREAMED_PREFIXES = ("/_matrix/media/",)


class StreamedBody(TrioBody):
    """A body read by iteration only, buffering at most about ``HIGH_WATER`` bytes."""

    def __init__(self, expected_content_length: int | None) -> None:
        super().__init__(expected_content_length, None)
        self._room = trio.Event()
        self._room.set()

    def append(self, data: bytes) -> None:
        super().append(data)
        if len(self._data) >= HIGH_WATER:
            self._room = trio.Event()

    async def __anext__(self) -> bytes:
        data = await super().__anext__()
        self._room.set()
        return data

    async def wait_for_room(self) -> None:
        await self._room.wait()


FEDERATION_TXN_PREFIX = "/_matrix/federation/v1/send/"
FEDERATION_TXN_MAX_BYTES = 12 * 1024 * 1024
"""A federation transaction may hold 50 PDUs and 100 EDUs of up to 64 KiB each
(server-server-api.md "Transactions", "Size limits"): more than a client request's
``max_request_body_size`` allows, so its body may be this large (a signed request:
unsigned ones are refused before anything is done with the body)."""


class StreamingRequest(TrioRequest):
    """A request whose body is a :class:`StreamedBody` on the streamed paths, and a
    larger body limit for federation transactions."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.path.startswith(STREAMED_PREFIXES):
            self.body = StreamedBody(self.content_length)
        elif self.path.startswith(FEDERATION_TXN_PREFIX):
            limit = max(self.max_content_length or 0, FEDERATION_TXN_MAX_BYTES)
            self.max_content_length = limit
            self.body = self.body_class(self.content_length, limit)


class BackpressureHTTPConnection(TrioASGIHTTPConnection):
    """Stops receiving a streamed body while its buffer is full; sends an in-memory
    answer (every JSON answer) as one body message."""

    async def _send_response(self, send: ASGISendCallable, response: Any) -> None:
        """Quart sends each body chunk, then an empty last one; an answer held in memory
        goes in one ``http.response.body`` message instead (the same bytes on the wire,
        one pass less through Quart's and hypercorn's send paths per response)."""
        body = getattr(response, "response", None)
        if not isinstance(body, DataBody):
            await super()._send_response(send, response)
            return
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": encode_headers(response.headers),
                "trailers": False,
            }
        )
        await send(
            {
                "type": "http.response.body",
                "body": body.data[body.begin : body.end],
                "more_body": False,
            }
        )

    async def handle_messages(  # type: ignore[override]
        self, nursery: trio.Nursery, request: Any, receive: ASGIReceiveCallable
    ) -> None:
        body = request.body
        if not isinstance(body, StreamedBody):
            await super().handle_messages(nursery, request, receive)
            return
        while True:
            await body.wait_for_room()
            message = await receive()
            if message["type"] == "http.request":
                body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    body.set_complete()
            elif message["type"] == "http.disconnect":
                break
        nursery.cancel_scope.cancel()
