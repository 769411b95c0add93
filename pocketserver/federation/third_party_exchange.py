"""Exchanging a third-party invite with another server (server-server-api.md
"Third-party invites", third_party_invite.yaml ``PUT
/_matrix/federation/v1/exchange_third_party_invite/{roomId}``).

- **Asking** (:class:`ThirdPartyForwarder`): the invitee's server, told of a binding by
  the identity server (``/3pid/onbind``) for a room it is not in (or whose invite was
  sent by another server's user), sends the unsigned ``m.room.member`` invite to the
  inviter's server, then to the server the room ID names, as Synapse
  (``FederationClient.forward_third_party_invite``): on to the next when one cannot be
  reached or fails (5xx); another refusal (4xx) is the answer.
- **Answering** (:func:`receive_exchange`): the body must be that invite for the room of
  the path, from the invitee's own server (the origin: only it is told of the binding;
  Synapse does not check this); the room service checks the signed block and the
  identity server's key and sends the invite as its inviter, one of our users
  (rooms/third_party_invites.py ``exchange``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from urllib.parse import quote

from pocketserver.core.identifiers import is_valid_user_id
from pocketserver.core.locality import server_of
from pocketserver.errors import MatrixError, bad_json, forbidden
from pocketserver.federation.errors import FederationError, FederationHttpError
from pocketserver.federation.requests import JsonRequests
from pocketserver.rooms.third_party_invites import ThirdPartyInvites

log = logging.getLogger(__name__)

PATH = "/_matrix/federation/v1/exchange_third_party_invite/"
TIMEOUT_S = 60.0
"""The other server checks the key with the identity server and sends an invite (to a
third server, maybe) before it answers."""
MAX_ANSWER_BYTES = 64 << 10


class ThirdPartyForwarder:
    """See the module docstring ("Asking")."""

    def __init__(self, client: JsonRequests) -> None:
        self._client = client

    async def forward(self, servers: Sequence[str], room_id: str, event: dict[str, object]) -> None:
        """Ask the first of ``servers`` that answers to exchange ``event``.

        Raises:
            MatrixError: a server's refusal (its 4xx status and errcode), or 502
                ``M_UNKNOWN`` when none could be asked.
        """
        for server in servers:
            try:
                await self._client.put_json(
                    server,
                    PATH + quote(room_id, safe=""),
                    event,
                    timeout_s=TIMEOUT_S,
                    max_size=MAX_ANSWER_BYTES,
                )
                return
            except FederationHttpError as e:
                if 400 <= e.status < 500:
                    raise MatrixError(
                        e.status, e.errcode or "M_UNKNOWN", e.error or "refused"
                    ) from None
                log.info("exchanging a third-party invite via %s failed: %s", server, e)
            except FederationError as e:
                log.info("exchanging a third-party invite via %s failed: %s", server, e)
        raise MatrixError(502, "M_UNKNOWN", "Failed to forward third party invite")


def _signed_block(event: Mapping[str, object]) -> Mapping[str, object]:
    content = event.get("content")
    if not isinstance(content, Mapping) or content.get("membership") != "invite":
        raise bad_json("content.membership must be invite")
    third_party = content.get("third_party_invite")
    signed = third_party.get("signed") if isinstance(third_party, Mapping) else None
    if not isinstance(signed, Mapping):
        raise bad_json("content.third_party_invite.signed must be an object")
    return signed


async def receive_exchange(
    invites: ThirdPartyInvites, origin: str, room_id: str, event: Mapping[str, object]
) -> None:
    """``PUT /exchange_third_party_invite/{roomId}`` from ``origin``.

    Raises:
        MatrixError: 400 ``M_BAD_JSON`` for a body that is not a third-party invite of
            this room; 403 ``M_FORBIDDEN`` when ``origin`` is not the invitee's server;
            the room service's refusals (404 a room we are not in, 403 ...).
    """
    if event.get("type") != "m.room.member":
        raise bad_json("type must be m.room.member")
    if event.get("room_id") != room_id:
        raise bad_json("room_id is not the room of the path")
    target, sender = event.get("state_key"), event.get("sender")
    if not isinstance(target, str) or not is_valid_user_id(target):
        raise bad_json("state_key must be a user ID")
    if not isinstance(sender, str) or not is_valid_user_id(sender):
        raise bad_json("sender must be a user ID")
    signed = _signed_block(event)
    if server_of(target) != origin:
        raise forbidden("only the invited user's server may exchange their invite")
    await invites.exchange(room_id, target, signed, sender=sender, forwarded=True)
