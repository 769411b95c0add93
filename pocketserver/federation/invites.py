"""Invites over federation, the invited server's side: ``PUT /_matrix/federation/v2/invite``.

server-server-api.md "Inviting to a room" (data/api/server-server/invites-v2.yaml):
another server's user invites one of our users. We check that we are not signing
something other than an invite of one of our users by a user of the asking server
(400 ``M_INVALID_PARAM``, as the spec suggests and Synapse answers), that the room
version is one we support (400 ``M_INCOMPATIBLE_ROOM_VERSION``), that the event's ID
is the one in the path, its signatures and content hash are valid, that the room's
server ACL (when the room is here) lets the origin in, that the invited user exists
and is not deactivated (403 ``M_FORBIDDEN``: "the homeserver does not permit anyone
to invite" that user; Synapse does not check, the invite then lingers unseen), and
``rc_invites``. Then we add our signature and answer the event.

A room we hold takes the invite through the room writer like any PDU (the inviting
server also sends it in a transaction); a room we do not hold gets it as an
out-of-band membership (rooms/out_of_band.py) with the stripped state from
``invite_room_state``.

``invite_room_state`` (spec v1.16+, MSC4311): full PDUs, or stripped events from
older servers. Each full PDU is checked (format, same room, signatures); entries that
fail are dropped, never shown to the client (a forged room name cannot ride along
with a genuine invite). As Synapse 1.163 we do not refuse the invite for them, nor
for a missing ``m.room.create`` (Synapse only logs that, until 2027, for
interoperability with servers that send stripped events): the spec's "SHOULD return
M_INVALID_PARAM" for room version 12 is left for later. An invite from a user our
user ignores is accepted and hidden by /sync (client-server-api "Ignoring Users";
Synapse does the same).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from nacl.signing import SigningKey, VerifyKey

from pocketserver.core.crypto import SignatureError, check_content_hash, sign_json
from pocketserver.core.events import (
    EventFormatError,
    compute_event_id,
    compute_room_id_v12,
    validate_pdu,
)
from pocketserver.core.locality import Locality, server_of
from pocketserver.core.redaction import redact
from pocketserver.core.room_versions import get_room_version
from pocketserver.errors import MatrixError, bad_json, forbidden, invalid_param, missing_param
from pocketserver.federation.history import FederationHistory
from pocketserver.federation.joins import KeysFor
from pocketserver.rooms.client_events import stripped_state
from pocketserver.rooms.limits import RoomActionLimits
from pocketserver.rooms.out_of_band import MAX_STRIPPED_STATE, OutOfBandMemberships
from pocketserver.rooms.writer import MissingEventsError, RoomWriter

log = logging.getLogger(__name__)

MEMBER = "m.room.member"

MAX_SIGNERS = 4
"""Servers whose signatures on stripped state events are checked (key fetches)."""

UserActive = Callable[[str], Awaitable[bool]]
"""Whether a local user ID is a registered, not deactivated account."""


def _content(pdu: Mapping[str, object]) -> Mapping[str, object]:
    content = pdu.get("content")
    return content if isinstance(content, Mapping) else {}


def incompatible_version(room_version: object) -> MatrixError:
    return MatrixError(
        400,
        "M_INCOMPATIBLE_ROOM_VERSION",
        f"This server does not support room version {room_version}",
        room_version=str(room_version),
    )


def check_version(room_version: object) -> str:
    """The room version if we support it.

    Raises:
        MatrixError: 400 ``M_INCOMPATIBLE_ROOM_VERSION`` (with ``room_version``).
    """
    if not isinstance(room_version, str):
        raise bad_json("room_version must be a string")
    try:
        get_room_version(room_version)
    except ValueError:
        raise incompatible_version(room_version) from None
    return room_version


async def sanitise_stripped_state(
    entries: object, room_id: str, room_version: str, keys_for: KeysFor
) -> list[dict[str, object]]:
    """``invite_room_state`` / ``knock_room_state`` as the client may see it: stripped
    events only, each full PDU among them kept only if well formed, of this room and
    validly signed (server-server-api.md, MSC4311: "Entries which are improperly signed
    or formatted SHOULD be removed"). At most :data:`MAX_STRIPPED_STATE`, one per key."""
    if not isinstance(entries, list):
        return []
    kept: dict[tuple[str, str], dict[str, object]] = {}
    signers: set[str] = set()
    for entry in entries[: MAX_STRIPPED_STATE * 2]:
        if not isinstance(entry, dict):
            continue
        kind, key, sender = entry.get("type"), entry.get("state_key"), entry.get("sender")
        if not (isinstance(kind, str) and isinstance(key, str) and isinstance(sender, str)):
            continue
        if not isinstance(entry.get("content"), dict):
            continue
        if "signatures" in entry or "hashes" in entry:
            # Each new signing server may cost a key fetch: a few only, so an invite
            # cannot make us ask many servers (the room's are the creator's and the
            # inviter's, mostly one).
            server = server_of(sender)
            if server is None or (server not in signers and len(signers) >= MAX_SIGNERS):
                continue
            signers.add(server)
            if not await _genuine(entry, room_id, room_version, keys_for):
                log.info("dropping an invalid stripped state event %s in %s", kind, room_id)
                continue
        kept.setdefault((kind, key), stripped_state(entry))
        if len(kept) >= MAX_STRIPPED_STATE:
            break
    return list(kept.values())


async def _genuine(
    pdu: dict[str, object], room_id: str, room_version: str, keys_for: KeysFor
) -> bool:
    try:
        validate_pdu(pdu, room_version)
        if get_room_version(room_version).hydra and pdu.get("type") == "m.room.create":
            in_room = compute_room_id_v12(pdu) == room_id
        else:
            in_room = pdu.get("room_id") == room_id
        if not in_room or not check_content_hash(pdu):
            return False
        await keys_for(pdu, room_version)  # raises if a required signature fails
    except (EventFormatError, SignatureError, KeyError, TypeError, ValueError):
        return False
    return True


class InviteReceiver:
    """``PUT /v2/invite`` for our users; see the module docstring."""

    def __init__(
        self,
        writer: RoomWriter,
        history: FederationHistory,
        out_of_band: OutOfBandMemberships,
        server_name: str,
        signing_key: SigningKey,
        keys_for: KeysFor,
        user_active: UserActive,
        limits: RoomActionLimits | None = None,
    ) -> None:
        self.writer = writer
        self.store = writer.store
        self.history = history
        self.out_of_band = out_of_band
        self.server_name = server_name
        self.locality = Locality(server_name)
        self._signing_key = signing_key
        self._keys_for = keys_for
        self._user_active = user_active
        self._limits = limits

    async def receive(
        self, origin: str, room_id: str, event_id: str, body: Mapping[str, object]
    ) -> dict[str, object]:
        """Check, sign and store the invite; return the event with our signature.

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM``/``M_BAD_JSON``/``M_MISSING_PARAM``/
                ``M_INCOMPATIBLE_ROOM_VERSION``, 403, 429; nothing is stored then.
        """
        if "room_version" not in body:
            raise missing_param("room_version")
        room_version = check_version(body["room_version"])
        pdu = body.get("event")
        if not isinstance(pdu, dict):
            raise missing_param("event")
        invitee = self._check_shape(origin, room_id, pdu)
        try:
            computed = compute_event_id(pdu, room_version)
        except (EventFormatError, KeyError, TypeError, ValueError):
            raise bad_json("The event is malformed") from None
        if computed != event_id:
            raise invalid_param("The event ID in the path does not match the event")
        held = await self.store.room_version(room_id)
        if held is not None:
            if held != room_version:
                raise invalid_param(f"The room's version is {held}, not {room_version}")
            await self.history.check_acl(origin, room_id)
        elif not await self._user_active(invitee):
            # Kept out of band only for someone who can read it. In a room we hold the
            # invite is room state like any member event, which Synapse accepts for any
            # user ID of ours (SyTest 50server-acl-endpoints invites an unknown user).
            raise forbidden("This user cannot be invited")
        try:
            validate_pdu(pdu, room_version)
            keys = await self._keys_for(pdu, room_version)
        except EventFormatError as e:
            raise bad_json(f"The event is malformed: {e}") from None
        except SignatureError as e:
            # 403, as Synapse (SyTest 35room-invite "not signed by the sender").
            raise forbidden(f"The event's signatures do not verify: {e}") from None
        if not check_content_hash(pdu):
            raise invalid_param("The event's content hash does not match")
        if self._limits is not None:  # only genuine invites count
            self._limits.check_invite(str(pdu["sender"]), room_id, invitee)
        signed = self._countersign(pdu, room_version)
        if held is not None and await self._receive_in_room(signed, room_version, keys):
            return signed
        state = await sanitise_stripped_state(
            body.get("invite_room_state"), room_id, room_version, self._keys_for
        )
        stored = {k: v for k, v in signed.items() if k != "unsigned"}
        await self.out_of_band.record(
            invitee,
            room_id,
            room_version,
            computed,
            stored,
            state,
            self._servers(origin, room_id, state),
            origin=origin,
        )
        return signed

    def _check_shape(self, origin: str, room_id: str, pdu: Mapping[str, object]) -> str:
        """The invited user; 400 for anything but an invite of our user by ``origin``'s."""
        if pdu.get("type") != MEMBER or _content(pdu).get("membership") != "invite":
            raise invalid_param("The event is not an m.room.member invite")
        sender, target = pdu.get("sender"), pdu.get("state_key")
        if not isinstance(sender, str) or server_of(sender) != origin:
            # 403 as Synapse ("The invite event was not from the server sending it").
            raise forbidden("The invite's sender is not a user of the requesting server")
        if not isinstance(target, str) or not self.locality.is_mine(target):
            raise invalid_param("The invited user is not a user of this server")
        if pdu.get("room_id") != room_id:
            raise invalid_param("The event is for another room")
        return target

    def _countersign(self, pdu: dict[str, object], room_version: str) -> dict[str, object]:
        signed = sign_json(redact(pdu, room_version), self.server_name, self._signing_key)
        out = dict(pdu)
        out["signatures"] = signed["signatures"]
        return out

    async def _receive_in_room(
        self, pdu: dict[str, object], room_version: str, keys: Mapping[str, Mapping[str, VerifyKey]]
    ) -> bool:
        """A room we hold: the invite goes through the writer. False when it cannot be
        placed yet (its prev events are unknown here): it is then held out of band until
        the room's own traffic brings it."""
        try:
            persisted = await self.writer.receive_pdu(pdu, room_version, keys)
        except MissingEventsError:
            return False
        except EventFormatError as e:
            raise bad_json(f"The event is invalid: {e}") from None
        except SignatureError as e:
            raise forbidden(f"The event's signatures do not verify: {e}") from None
        if persisted.rejected is not None or persisted.soft_failed:
            raise forbidden("The invite is not allowed in this room")
        return True

    def _servers(
        self, origin: str, room_id: str, state: Sequence[Mapping[str, object]]
    ) -> list[str]:
        """Servers that may take a rejection: the inviter's first, then the servers of
        the stripped state's senders and of the room ID (rooms before v12)."""
        found = [origin]
        for entry in state:
            server = server_of(str(entry.get("sender", "")))
            if server is not None:
                found.append(server)
        room_server = server_of(room_id)
        if room_server is not None:
            found.append(room_server)
        return [s for s in dict.fromkeys(found) if s != self.server_name]
