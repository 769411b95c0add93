"""Our users' membership changes that need another server: inviting a user of another
server, rejecting an invite to a room we do not hold, knocking on such a room and
withdrawing the knock.

server-server-api.md:

- "Inviting to a room" (invites-v2.yaml): the invite, built and authorised in our
  room, goes to the invitee's server with the room's stripped state as full PDUs (as
  Synapse 1.163, MSC4311); the answer must be the same event (same ID) with a valid
  signature of that server added. Only then is it stored and sent to the room.
- "Leaving Rooms (Rejecting Invites)" (leaving-v2.yaml): ``make_leave`` then
  ``v2/send_leave`` through a server in the room: the inviter's first, then the
  others we know of. When none answers, the invite is rejected here only, with a
  leave we sign ourselves (as Synapse's ``_generate_local_out_of_band_leave``): a user
  can always get rid of an invite from a server that is gone.
- "Knocking upon a room" (knocks.yaml): ``make_knock`` (with the room versions we
  support) then ``send_knock``, whose ``knock_room_state`` is shown in /sync.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from urllib.parse import quote

from nacl.signing import SigningKey

from pocketserver.core.crypto import SignatureError
from pocketserver.core.events import (
    STRIPPED_STATE_TYPES,
    EventFormatError,
    check_canonical_json,
    compute_event_id,
)
from pocketserver.core.locality import server_of
from pocketserver.core.redaction import redact
from pocketserver.core.room_versions import KNOWN_ROOM_VERSIONS, get_room_version
from pocketserver.errors import MatrixError, bad_json, forbidden, not_found
from pocketserver.federation.errors import (
    FederationBlocked,
    FederationError,
    FederationHttpError,
    unknown_endpoint,
)
from pocketserver.federation.invites import sanitise_stripped_state
from pocketserver.federation.joins import KeysFor
from pocketserver.federation.requests import JsonRequests
from pocketserver.rooms import building
from pocketserver.rooms.out_of_band import OutOfBandMemberships
from pocketserver.rooms.store import StateKey
from pocketserver.storage.out_of_band import OutOfBandMembership

log = logging.getLogger(__name__)

MEMBER = "m.room.member"
V1 = "/_matrix/federation/v1"
V2 = "/_matrix/federation/v2"
TIMEOUT_S = 30.0
MAX_SERVERS_TRIED = 5
"""Servers asked in turn for a leave or knock before giving up."""


VerifyJson = Callable[[str, Mapping[str, object], int], Awaitable[None]]
"""The keyring's check of a server's signature on an object with its keys valid at a
time (``Keyring.verify_json``); raises ``SignatureError``."""


def _path(prefix: str, verb: str, *parts: str) -> str:
    return f"{prefix}/{verb}/" + "/".join(quote(p, safe="") for p in parts)


def _content(pdu: Mapping[str, object]) -> Mapping[str, object]:
    content = pdu.get("content")
    return content if isinstance(content, Mapping) else {}


def remote_refusal(e: FederationError, doing: str) -> MatrixError:
    """The client's error for a failed request to another server: its 403 (and other
    4xx refusals) passed through, as the spec asks ("The error should be passed through
    to clients"); a 400 ``M_INVALID_PARAM``/``M_MISSING_PARAM`` (a fault of one of the
    two servers, not of the client), an endpoint the remote does not serve and anything
    unreachable as 502 (Synapse answers 502 for an unreachable server; the spec's
    "SHOULD fail with a 5xx")."""
    if isinstance(e, FederationHttpError) and 400 <= e.status < 500 and not unknown_endpoint(e):
        errcode = e.errcode or "M_FORBIDDEN"
        if errcode not in ("M_INVALID_PARAM", "M_MISSING_PARAM"):
            extra = {}
            if isinstance(e.body, Mapping) and isinstance(e.body.get("room_version"), str):
                extra["room_version"] = e.body["room_version"]
            return MatrixError(
                e.status,
                errcode,
                f"{e.destination} refused to {doing}: {e.error or f'HTTP {e.status}'}",
                **extra,
            )
    if isinstance(e, FederationBlocked):
        return forbidden(f"cannot {doing}: federation with {e.destination} is not allowed")
    return MatrixError(502, "M_UNKNOWN", f"cannot {doing}: {e}")


class RemoteMemberships:
    """Outbound invites, and leaves and knocks in rooms this server does not hold."""

    def __init__(
        self,
        client: JsonRequests,
        out_of_band: OutOfBandMemberships,
        server_name: str,
        signing_key: SigningKey,
        keys_for: KeysFor,
        verify_json: VerifyJson,
    ) -> None:
        self._verify_json = verify_json
        self.client = client
        self.out_of_band = out_of_band
        self.server_name = server_name
        self._signing_key = signing_key
        self._keys_for = keys_for

    # --- invites --------------------------------------------------------------------

    async def sign_invite(
        self, event_id: str, pdu: dict[str, object], state_before: Mapping[StateKey, str]
    ) -> dict[str, object]:
        """The room writer's :data:`RemoteSign` for an invite of another server's user:
        send it there with the room's stripped state (full PDUs, as Synapse 1.163: the
        state the spec suggests, plus the inviter's member event) and return it with
        that server's signature.

        Raises:
            MatrixError: as :meth:`send_invite`.
        """
        store = self.out_of_band.store
        room_id = str(pdu.get("room_id"))
        room_version = await store.room_version(room_id)
        assert room_version is not None
        keys = [(t, "") for t in STRIPPED_STATE_TYPES]
        keys.append((MEMBER, str(pdu.get("sender"))))
        ids = [state_before[k] for k in keys if k in state_before]
        found = await store.get_events(ids)
        state = [found[i].pdu for i in ids if i in found]
        return await self.send_invite(room_version, event_id, pdu, state)

    async def send_invite(
        self,
        room_version: str,
        event_id: str,
        pdu: Mapping[str, object],
        invite_room_state: Sequence[Mapping[str, object]],
    ) -> dict[str, object]:
        """``PUT /v2/invite`` to the invitee's server; the event with its signature.

        A server that does not know ``v2/invite`` (404/405 without an errcode, or
        ``M_UNRECOGNIZED``) is asked ``v1/invite`` for rooms of versions 1 and 2, with
        the stripped state in the event's ``unsigned.invite_room_state`` and the
        answer wrapped in ``[200, {...}]``, as Synapse falls back (``_do_send_invite``;
        invites-v1.yaml is deprecated but still in the spec). Later room versions
        cannot go over v1: 400 ``M_UNSUPPORTED_ROOM_VERSION`` as Synapse.

        Raises:
            MatrixError: the remote's refusal (403 and other 4xx), 400 ``M_BAD_JSON``
                for an answer whose event is not canonical JSON of the room version
                (as Synapse's ``event_from_pdu_json``), or 502 (unreachable, or an
                answer that is not our event validly signed by that server).
        """
        invitee = str(pdu.get("state_key"))
        destination = server_of(invitee)
        assert destination is not None
        room_id = str(pdu.get("room_id"))
        body = {
            "event": dict(pdu),
            "room_version": room_version,
            "invite_room_state": [dict(e) for e in invite_room_state],
        }
        try:
            try:
                answer = await self.client.put_json(
                    destination, _path(V2, "invite", room_id, event_id), body, timeout_s=TIMEOUT_S
                )
            except FederationHttpError as e:
                if not unknown_endpoint(e):
                    raise
                if not get_room_version(room_version).event_ids_in_pdu:
                    raise MatrixError(
                        400,
                        "M_UNSUPPORTED_ROOM_VERSION",
                        f"{destination} does not support room version {room_version}",
                    ) from None
                answer = await self._send_invite_v1(destination, event_id, pdu, invite_room_state)
        except FederationError as e:
            raise remote_refusal(e, f"invite {invitee}") from None
        returned = answer.get("event") if isinstance(answer, Mapping) else None
        if not isinstance(returned, dict):
            raise MatrixError(502, "M_UNKNOWN", f"{destination} answered the invite without it")
        return await self._check_countersigned(pdu, returned, room_version, event_id, destination)

    async def _send_invite_v1(
        self,
        destination: str,
        event_id: str,
        pdu: Mapping[str, object],
        invite_room_state: Sequence[Mapping[str, object]],
    ) -> object:
        """``PUT /v1/invite``: the event itself is the body; the answer's ``[200, {...}]``
        is unwrapped (anything else is returned as it is, and refused by the caller)."""
        event = dict(pdu)
        unsigned = event.get("unsigned")
        event["unsigned"] = {
            **(unsigned if isinstance(unsigned, Mapping) else {}),
            "invite_room_state": [dict(e) for e in invite_room_state],
        }
        answer = await self.client.put_json(
            destination,
            _path(V1, "invite", str(pdu.get("room_id")), event_id),
            event,
            timeout_s=TIMEOUT_S,
        )
        if isinstance(answer, list) and len(answer) == 2 and answer[0] == 200:
            return answer[1]
        return answer

    async def _check_countersigned(
        self,
        ours: Mapping[str, object],
        returned: dict[str, object],
        room_version: str,
        event_id: str,
        destination: str,
    ) -> dict[str, object]:
        """The returned invite must be the event we sent (same ID: same redacted
        content) and carry a valid signature of the invitee's server; the event we
        store is ours with that signature added."""
        bad = MatrixError(502, "M_UNKNOWN", f"{destination} answered the invite wrongly")
        try:
            check_canonical_json(returned, room_version)
        except EventFormatError as e:
            # 400 M_BAD_JSON as Synapse (event_from_pdu_json; SyTest 35room-invite.pl).
            raise bad_json(
                f"{destination} answered the invite with a malformed event: {e}"
            ) from None
        try:
            if compute_event_id(returned, room_version) != event_id:
                raise bad
        except (EventFormatError, KeyError, TypeError, ValueError):
            raise bad from None
        theirs = returned.get("signatures")
        if not isinstance(theirs, Mapping) or not isinstance(theirs.get(destination), Mapping):
            raise bad
        signed = dict(ours)
        signatures = dict(ours.get("signatures", {}))  # type: ignore[call-overload]
        signatures[destination] = dict(theirs[destination])
        signed["signatures"] = signatures
        ts = signed.get("origin_server_ts")
        try:
            await self._verify_json(
                destination, redact(signed, room_version), ts if isinstance(ts, int) else 0
            )
        except SignatureError:
            raise bad from None
        return signed

    # --- leave (reject an invite, withdraw a knock) ------------------------------------

    async def leave(self, user_id: str, found: OutOfBandMembership, reason: str | None) -> None:
        """Reject an invite or withdraw a knock in a room this server does not hold:
        through the room's servers, else here only (see the module docstring)."""
        content: dict[str, object] = {"membership": "leave"}
        if reason:
            content["reason"] = reason
        for server in found.servers[:MAX_SERVERS_TRIED]:
            try:
                event_id, pdu, version, _ = await self._make_and_send(
                    server, "leave", user_id, found.room_id, content, None
                )
            except (FederationError, MatrixError, ValueError, KeyError, TypeError) as e:
                log.info("leave of %s through %s failed: %s", found.room_id, server, e)
                continue
            await self.out_of_band.record(
                user_id, found.room_id, version, event_id, pdu, [], found.servers
            )
            return
        await self._leave_locally(user_id, found, content)

    async def _leave_locally(
        self, user_id: str, found: OutOfBandMembership, content: dict[str, object]
    ) -> None:
        previous = await self.out_of_band.store.get_event(found.event_id)
        if previous is None:
            raise not_found("the membership to leave is gone")
        version = found.room_version
        pdu: dict[str, object] = {
            "type": MEMBER,
            "room_id": found.room_id,
            "sender": user_id,
            "state_key": user_id,
            "content": content,
            "origin_server_ts": int(time.time() * 1000),
            "depth": min(_int(previous.pdu.get("depth")) + 1, building.MAX_DEPTH),
            "prev_events": building.edges(
                version, [found.event_id], {found.event_id: previous.pdu}
            ),
            "auth_events": building.edges(
                version, [found.event_id], {found.event_id: previous.pdu}
            ),
        }
        if get_room_version(version).event_ids_in_pdu:
            pdu["origin"] = self.server_name
        event_id, signed = building.finish_pdu(pdu, version, self.server_name, self._signing_key)
        await self.out_of_band.record(
            user_id, found.room_id, version, event_id, signed, [], found.servers
        )

    # --- knock ----------------------------------------------------------------------

    async def knock(
        self, user_id: str, room_id: str, servers: Sequence[str], reason: str | None
    ) -> None:
        """Knock on a room this server does not hold through ``servers`` in turn.

        Raises:
            MatrixError: the last server's refusal (passed through), or 502.
        """
        content: dict[str, object] = {"membership": "knock"}
        if reason:
            content["reason"] = reason
        last: MatrixError = not_found("no server to knock through")
        for server in list(dict.fromkeys(servers))[:MAX_SERVERS_TRIED]:
            try:
                event_id, pdu, version, answer = await self._make_and_send(
                    server, "knock", user_id, room_id, content, sorted(KNOWN_ROOM_VERSIONS)
                )
            except FederationError as e:
                last = remote_refusal(e, f"knock on {room_id}")
                continue
            except MatrixError as e:
                last = e
                continue
            state = await sanitise_stripped_state(
                answer.get("knock_room_state"), room_id, version, self._keys_for
            )
            await self.out_of_band.record(
                user_id, room_id, version, event_id, pdu, state, [server, *servers]
            )
            return
        raise last

    # --- the make_*/send_* dance --------------------------------------------------------

    async def _make_and_send(
        self,
        server: str,
        membership: str,
        user_id: str,
        room_id: str,
        content: dict[str, object],
        versions: Sequence[str] | None,
    ) -> tuple[str, dict[str, object], str, Mapping[str, object]]:
        """Ask ``server`` for a template, check it, sign it and send it back; return
        (event ID, signed event, room version, the send answer)."""
        made = await self.client.get_json(
            server,
            _path(V1, f"make_{membership}", room_id, user_id),
            query={"ver": list(versions)} if versions else None,
            timeout_s=TIMEOUT_S,
        )
        if not isinstance(made, Mapping) or not isinstance(made.get("event"), Mapping):
            raise MatrixError(502, "M_UNKNOWN", f"{server} answered make_{membership} wrongly")
        version = str(made.get("room_version", "1"))
        if version not in KNOWN_ROOM_VERSIONS:
            raise MatrixError(
                400,
                "M_INCOMPATIBLE_ROOM_VERSION",
                f"room version {version} is not supported here",
                room_version=version,
            )
        template = dict(made["event"])
        if (
            template.get("type") != MEMBER
            or template.get("state_key") != user_id
            or template.get("sender") != user_id
            or template.get("room_id") != room_id
            or _content(template).get("membership") != membership
        ):
            raise MatrixError(502, "M_UNKNOWN", f"{server} answered a wrong {membership} template")
        template["content"] = {**_content(template), **content}
        template.pop("signatures", None)
        template.pop("hashes", None)
        template.pop("unsigned", None)
        template.pop("event_id", None)
        if get_room_version(version).event_ids_in_pdu:
            template["origin"] = self.server_name
        event_id, signed = building.finish_pdu(
            template, version, self.server_name, self._signing_key
        )
        verb = "send_knock" if membership == "knock" else "send_leave"
        prefix = V1 if membership == "knock" else V2
        answer = await self.client.put_json(
            server, _path(prefix, verb, room_id, event_id), signed, timeout_s=TIMEOUT_S
        )
        return event_id, signed, version, answer if isinstance(answer, Mapping) else {}


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
