"""What the E2EE part of federation needs from the outbound client, and how a failed
request is reported to clients.

:class:`FederationRequests` is the subset of
``pocketserver.federation.client.FederationClient`` used here (same names and
arguments), so tests pass a fake remote server and the server passes the real
client. Any exception a request raises counts as that server's failure: the remote
is down, refused, too slow or answered nonsense, and the client is told so in
``failures``, as Synapse does (``_exception_to_failure``).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol
from urllib.parse import quote

log = logging.getLogger(__name__)

USER_DEVICES = "/_matrix/federation/v1/user/devices/"
USER_KEYS_QUERY = "/_matrix/federation/v1/user/keys/query"
USER_KEYS_CLAIM = "/_matrix/federation/v1/user/keys/claim"


class FederationRequests(Protocol):
    async def get_json(self, destination: str, path: str, *, timeout_s: float) -> Any:
        """GET ``path`` of ``destination``; the parsed JSON of a 2xx answer.

        Raises:
            Exception: the request failed (any kind).
        """
        ...

    async def post_json(
        self, destination: str, path: str, content: object, *, timeout_s: float
    ) -> Any:
        """POST ``content`` as JSON; the parsed JSON of a 2xx answer.

        Raises:
            Exception: the request failed (any kind).
        """
        ...


def user_devices_path(user_id: str) -> str:
    return USER_DEVICES + quote(user_id, safe="")


def failure(server: str, exc: BaseException | None) -> dict[str, object]:
    """The ``failures`` entry for ``server``: the remote's HTTP status when it gave
    one (``status`` attribute), else 503."""
    if exc is None:
        return {"status": 503, "message": f"{server} did not answer in time"}
    status = getattr(exc, "status", None)
    if not isinstance(status, int) or isinstance(status, bool):
        status = 503
    return {"status": status, "message": str(exc)[:200] or type(exc).__name__}
