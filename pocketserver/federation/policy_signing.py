"""Asking a room's policy server to sign events (spec v1.18, room_policy.yaml
``POST /_matrix/policy/v1/sign``; server-server-api.md "Asking for a Policy Server
signature on an event").

- Our users' events (:meth:`PolicySigning.sign_local`, the room writer's
  :data:`~pocketserver.rooms.writer.PolicySign`): the signature is required. A refusal
  (the policy server's 4xx Matrix error) is handed to the client verbatim, as the spec
  says and Synapse does (``HttpResponseException.to_synapse_error``); an answer without
  a valid signature is 403 ``M_FORBIDDEN`` (Synapse: "This message has been rejected as
  probable spam"); an unreachable policy server is 502 ``M_UNKNOWN`` (Synapse lets its
  ``RequestSendFailed`` become a 500; nothing is wrong with this server, so a 502). In
  every case the event is not stored or sent.
- Events received over federation without a valid signature
  (:meth:`PolicySigning.resign_remote`): "the homeserver SHOULD ask for a new
  signature" (the policy server's key may have rotated, or the sender did not ask);
  Synapse does too (``is_event_allowed``). Failure only means the event stays unsigned
  and the room writer soft-fails it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from pocketserver.core.policy_server import (
    PolicyServer,
    add_policy_signature,
    has_valid_signature,
    is_exempt,
)
from pocketserver.errors import MatrixError
from pocketserver.federation.errors import FederationError, FederationHttpError
from pocketserver.federation.requests import JsonRequests
from pocketserver.rooms.policy import room_policy
from pocketserver.rooms.store import RoomStore

log = logging.getLogger(__name__)

SIGN_PATH = "/_matrix/policy/v1/sign"
SIGN_TIMEOUT_S = 10.0
"""How long an event's sending waits for the policy server. Synapse waits 30 s (3 s was
too short for its media checks); ours waits under the room's lock, so less."""
SIGN_MAX_ANSWER = 64 * 1024
"""An answer is one signature; anything near this size is not one."""
SPAM = "This message has been rejected as probable spam"


def _client_error(exc: FederationError) -> MatrixError:
    if (
        isinstance(exc, FederationHttpError)
        and 400 <= exc.status < 500
        and isinstance(exc.errcode, str)
        and exc.errcode.startswith("M_")
    ):
        return MatrixError(exc.status, exc.errcode, exc.error or SPAM)
    return MatrixError(502, "M_UNKNOWN", f"the room's policy server is unavailable: {exc}")


class PolicySigning:
    """Gets policy servers' signatures on events; see the module docstring."""

    def __init__(
        self, client: JsonRequests, store: RoomStore, server_name: str, *, timeout_s: float
    ) -> None:
        self.client = client
        self.store = store
        self.server_name = server_name
        self.timeout_s = timeout_s

    async def _ask(
        self, policy: PolicyServer, room_version: str, pdu: Mapping[str, object]
    ) -> dict[str, object] | None:
        """The event with a valid policy signature added, or None if the answer held
        none; raises FederationError when the request failed."""
        answer = await self.client.post_json(
            policy.server_name,
            SIGN_PATH,
            dict(pdu),
            timeout_s=self.timeout_s,
            max_size=SIGN_MAX_ANSWER,
        )
        try:
            signed = add_policy_signature(pdu, policy, answer)
        except ValueError:
            return None
        return signed if has_valid_signature(signed, room_version, policy) else None

    async def sign_local(
        self, policy: PolicyServer, room_version: str, pdu: dict[str, object]
    ) -> dict[str, object]:
        """Our user's event with the policy server's signature (room writer hook).

        Raises:
            MatrixError: the policy server refused (its error, verbatim), gave no valid
                signature (403 ``M_FORBIDDEN``) or could not be asked (502).
        """
        try:
            signed = await self._ask(policy, room_version, pdu)
        except FederationError as e:
            log.info("policy server %s did not sign: %s", policy.server_name, e)
            raise _client_error(e) from None
        if signed is None:
            raise MatrixError(403, "M_FORBIDDEN", SPAM)
        return signed

    async def resign_remote(
        self, room_id: str, room_version: str, pdu: dict[str, object]
    ) -> dict[str, object]:
        """A received event, with a fresh policy signature if the room uses a policy
        server and the event has no valid one yet; otherwise (or if that fails) as it
        was. Never raises for the policy server's failures."""
        if is_exempt(pdu):
            return pdu
        current = await self.store.current_state_ids(room_id)
        policy = await room_policy(self.store, current, self.server_name)
        if policy is None or has_valid_signature(pdu, room_version, policy):
            return pdu
        try:
            signed = await self._ask(policy, room_version, pdu)
        except FederationError as e:
            log.info("policy server %s did not sign a received event: %s", policy.server_name, e)
            return pdu
        return pdu if signed is None else signed
