"""Third-party invites: the client's ``/invite`` by address, the identity server's
``/3pid/onbind`` notification and another server's ``/exchange_third_party_invite``.

Spec: client-server-api "Third-party invites" (third_party_membership.yaml,
definitions/invite_3pid.yaml); server-server-api "Third-party invites"
(third_party_invite.yaml, ``PUT /_matrix/federation/v1/3pid/onbind``). The service is
:mod:`pocketserver.rooms.third_party_invites`.
"""

from __future__ import annotations

import trio
from quart import Blueprint

from pocketserver.accounts.service import Requester
from pocketserver.api.federation.auth import federation_origin, public
from pocketserver.api.http import json_body, services
from pocketserver.federation.third_party_exchange import receive_exchange
from pocketserver.rooms.third_party_invites import ThreePidInvite

federation_bp = Blueprint("third_party_invites_federation", __name__)


def is_third_party_invite(body: dict[str, object]) -> bool:
    """Whether an ``/invite`` body is the third-party form: it names an address, as
    Synapse decides (``medium`` and ``address`` present)."""
    return "medium" in body and "address" in body


async def invite_by_address(requester: Requester, room_id: str, body: dict[str, object]) -> None:
    """``POST /rooms/{roomId}/invite`` with ``id_server``, ``id_access_token``,
    ``medium`` and ``address`` (each one costs identity server requests: rate-limited
    as a message)."""
    request = ThreePidInvite.parse(body)
    s = services()
    s.ratelimits.message.check(requester.user_id, trio.current_time())
    await s.third_party_invites.invite(requester.user_id, room_id, request)


@federation_bp.route("/_matrix/federation/v1/3pid/onbind", methods=["PUT", "POST"])
@public  # called by identity servers, which do not sign requests (no signedRequest)
async def on_bind() -> dict[str, object]:
    """The identity server reports a binding and the invites waiting for it. The spec
    says PUT; Synapse, Sydent and SyTest use POST: both are served. Unauthenticated by
    design: each invite is proved by the identity server's signature, checked against
    the keys in the room's ``m.room.third_party_invite``."""
    body = await json_body()
    await services().third_party_invites.on_bind(body)
    return {}


@federation_bp.put("/_matrix/federation/v1/exchange_third_party_invite/<room_id>")
async def exchange_third_party_invite(room_id: str) -> dict[str, object]:
    """Another server asks us, the inviter's server, to sign and send the invite its
    user's binding completes (federation/third_party_exchange.py)."""
    body = await json_body()
    await receive_exchange(services().third_party_invites, federation_origin(), room_id, body)
    return {}
