"""Invites by third-party identifier (an email address) through an identity server.

Spec: client-server-api "Third-party invites" (``POST /rooms/{roomId}/invite`` with
``id_server``, ``id_access_token``, ``medium``, ``address``; ``createRoom``'s
``invite_3pid``), server-server-api "Third-party invites" (``/3pid/onbind``) and
identity-service-api.md (``/lookup``, ``/store-invite``, ``/pubkey/isvalid``).

- **Invite**: the inviter must be joined and reach the room's invite level *before*
  the identity server is asked anything. A bound address becomes a plain invite of
  the user it is bound to; otherwise the identity server stores the invite and the
  room gets an ``m.room.third_party_invite`` (state key: the identity server's token)
  with its display name and public keys.
- **Exchange**: when the identity server reports a binding (``onbind``) or the
  invitee joins with a ``third_party_signed`` block, the block must verify under a
  public key of that ``m.room.third_party_invite`` and the identity server must still
  vouch for that key at its ``key_validity_url`` (a revoked key or an unreachable
  identity server refuses it). The server then sends the ``m.room.member`` invite as
  the original inviter, with ``content.third_party_invite`` (``display_name``,
  ``signed``); the auth rules (``core/auth_thirdparty.py``) allow it even if the
  inviter has left since.
- **Over federation** (server-server-api.md "Third-party invites"): only the inviter's
  server can sign the invite as the inviter. When this server is not in the room, or the
  inviter is another server's user, the unsigned invite is sent to the inviter's server
  (then the server the room ID names, as Synapse) at ``PUT
  /_matrix/federation/v1/exchange_third_party_invite/{roomId}``
  (federation/third_party_exchange.py), which checks it as above and sends it, to the
  invitee's server first (``/invite``) when the invitee is another server's user.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from pocketserver.core.auth_thirdparty import signing_public_keys
from pocketserver.core.identifiers import (
    is_valid_room_id,
    is_valid_server_name,
    is_valid_user_id,
)
from pocketserver.core.locality import Locality, server_of
from pocketserver.core.power_levels import (
    InvalidPowerLevel,
    get_named_level,
    get_user_power_level,
)
from pocketserver.core.room_versions import get_room_version
from pocketserver.errors import MatrixError, bad_json, forbidden, missing_param, not_found
from pocketserver.net.addresses import AddressBlocked
from pocketserver.net.identity import (
    IdentityClient,
    IdentityServerError,
    IdentityServerRefused,
)
from pocketserver.rooms.client import RoomClient
from pocketserver.rooms.writer import RemoteSign
from pocketserver.storage import dag
from pocketserver.storage import users as user_store
from pocketserver.storage.events import StoredEvent

log = logging.getLogger(__name__)

MEMBER = "m.room.member"
THIRD_PARTY_INVITE = "m.room.third_party_invite"

MAX_ONBIND_INVITES = 64
"""Invites handled from one ``onbind`` notification; more is refused (400)."""

_ROOM_FIELDS = (
    ("m.room.canonical_alias", "alias", "room_alias"),
    ("m.room.name", "name", "room_name"),
    ("m.room.avatar", "url", "room_avatar_url"),
    ("m.room.join_rules", "join_rule", "room_join_rules"),
)
"""store-invite's optional fields: (state type, content key, request field)."""

Forward = Callable[[Sequence[str], str, dict[str, object]], Awaitable[None]]
"""``(servers, room_id, event)``: asks the first of ``servers`` that answers to exchange
the unsigned invite ``event`` (federation/third_party_exchange.py); raises MatrixError."""


@dataclass(frozen=True, slots=True)
class ThreePidInvite:
    """One third-party invite as a client asks for it (``invite_3pid.yaml``)."""

    id_server: str
    id_access_token: str
    medium: str
    address: str

    @classmethod
    def parse(cls, body: Mapping[str, object]) -> ThreePidInvite:
        """Raises: MatrixError 400 ``M_MISSING_PARAM`` / ``M_BAD_JSON`` /
        ``M_INVALID_PARAM`` (an ``id_server`` that is not ``host[:port]``)."""
        values: dict[str, str] = {}
        for key in ("id_server", "id_access_token", "medium", "address"):
            value = body.get(key)
            if value is None:
                raise missing_param(key)
            if not isinstance(value, str) or not value:
                raise bad_json(f"{key} must be a non-empty string")
            values[key] = value
        if not is_valid_server_name(values["id_server"]):
            raise MatrixError(400, "M_INVALID_PARAM", "id_server must be a host name[:port]")
        return cls(**values)


def _content(event: StoredEvent | None) -> Mapping[str, object]:
    content = event.pdu.get("content") if event is not None else None
    return content if isinstance(content, Mapping) else {}


def _identity_error(e: Exception) -> MatrixError:
    """An identity server failure as the client sees it."""
    if isinstance(e, AddressBlocked):
        # The client picked the identity server; this server does not connect there.
        return MatrixError(
            400, "M_SERVER_NOT_TRUSTED", "this server does not send requests to that address"
        )
    return MatrixError(502, "M_UNKNOWN", str(e))


class ThirdPartyInvites:
    """See the module docstring."""

    def __init__(
        self,
        rooms: RoomClient,
        identity: IdentityClient,
        server_name: str,
        *,
        lookups_enabled: bool = True,
        forward: Forward | None = None,
        remote_sign: RemoteSign | None = None,
    ) -> None:
        self._rooms = rooms
        self._forward = forward
        """None: no federation, an exchange that needs another server is refused."""
        self._remote_sign = remote_sign
        """Has the invitee's server sign the invite of another server's user."""
        self._store = rooms.store
        self._identity = identity
        self._server_name = server_name
        self._locality = Locality(server_name)
        self._lookups_enabled = lookups_enabled

    def check_enabled(self) -> None:
        """Raises: MatrixError 403 ``M_FORBIDDEN`` when ``enable_3pid_lookup`` is off
        (Synapse's answer and wording)."""
        if not self._lookups_enabled:
            raise forbidden("Looking up third-party identifiers is denied from this server")

    # --- inviting ----------------------------------------------------------------------

    async def invite(self, inviter: str, room_id: str, request: ThreePidInvite) -> None:
        """Invite the person behind ``request``'s address to the room as ``inviter``.

        Raises:
            MatrixError: 404 unknown room; 403 ``M_FORBIDDEN`` (lookups are off, not
                joined, below the invite level, or the auth rules); 400
                ``M_SERVER_NOT_TRUSTED`` (an identity server address ``ip_range_blacklist``
                refuses); 502 (identity server unreachable, refusing or unusable).
        """
        self.check_enabled()
        room_version, state = await self._state(room_id, inviter)
        self._check_may_invite(inviter, room_version, state)
        try:
            mxid = await self._identity.lookup(
                request.id_server, request.id_access_token, request.medium, request.address
            )
            if mxid is not None:
                await self._rooms.membership(inviter, room_id, mxid, "invite")
                return
            fields = self._store_invite_fields(inviter, room_id, request, state)
            stored = await self._identity.store_invite(
                request.id_server, request.id_access_token, fields
            )
        except (AddressBlocked, IdentityServerError, IdentityServerRefused) as e:
            log.info("third-party invite to %s via %s failed: %s", room_id, request.id_server, e)
            raise _identity_error(e) from None
        await self._rooms.writer.send_event(
            room_id, inviter, THIRD_PARTY_INVITE, stored.event_content(), stored.token
        )

    async def _state(
        self, room_id: str, inviter: str
    ) -> tuple[str, dict[tuple[str, str], StoredEvent]]:
        """The room version and the few current state events an invite reads."""
        room_version = await self._store.room_version(room_id)
        if room_version is None:
            raise not_found(f"unknown room {room_id}")
        ids = await self._store.current_state_ids(room_id)
        keys = [
            ("m.room.create", ""),
            ("m.room.power_levels", ""),
            (MEMBER, inviter),
            *((event_type, "") for event_type, _, _ in _ROOM_FIELDS),
        ]
        wanted = {key: ids[key] for key in keys if key in ids}
        events = await self._store.get_events(wanted.values())
        return room_version, {k: events[eid] for k, eid in wanted.items() if eid in events}

    @staticmethod
    def _check_may_invite(
        inviter: str, room_version: str, state: Mapping[tuple[str, str], StoredEvent]
    ) -> None:
        """The auth rules' test for ``m.room.third_party_invite`` (v1 rules 6 and 7:
        the sender is joined and reaches the invite level), made before the identity
        server is asked to store anything."""
        if _content(state.get((MEMBER, inviter))).get("membership") != "join":
            raise forbidden("you are not joined to this room")
        create = state.get(("m.room.create", ""))
        if create is None:
            raise not_found("unknown room")
        pl = state.get(("m.room.power_levels", ""))
        pl_content = _content(pl) if pl is not None else None
        try:
            version = get_room_version(room_version)
            level = get_user_power_level(inviter, pl_content, create.pdu, room_version=version)
            needed = get_named_level(
                pl_content, "invite", 0, integer_only=version.integer_only_power_levels
            )
        except (InvalidPowerLevel, ValueError):
            raise forbidden("the room's power levels cannot be read") from None
        if level < needed:
            raise forbidden("your power level is too low to invite users")

    @staticmethod
    def _store_invite_fields(
        inviter: str,
        room_id: str,
        request: ThreePidInvite,
        state: Mapping[tuple[str, str], StoredEvent],
    ) -> dict[str, object]:
        """store-invite's body: the required fields and what the room says about itself
        (for the identity server's email)."""
        fields: dict[str, object] = {
            "medium": request.medium,
            "address": request.address,
            "room_id": room_id,
            "sender": inviter,
        }
        for event_type, key, field in _ROOM_FIELDS:
            value = _content(state.get((event_type, ""))).get(key)
            if isinstance(value, str):
                fields[field] = value
        room_type = _content(state.get(("m.room.create", ""))).get("type")
        if isinstance(room_type, str):
            fields["room_type"] = room_type
        member = _content(state.get((MEMBER, inviter)))
        name = member.get("displayname")
        fields["sender_display_name"] = name if isinstance(name, str) and name else inviter
        avatar = member.get("avatar_url")
        if isinstance(avatar, str):
            fields["sender_avatar_url"] = avatar
        return fields

    # --- exchanging ----------------------------------------------------------------------

    async def on_bind(self, body: Mapping[str, object]) -> None:
        """``/3pid/onbind``: exchange each of the notification's invites.

        Every invite is tried; as in Synapse, the answer is the last failure, if any.

        Raises:
            MatrixError: 400 for a malformed notification or invite; the failure of an
                exchange (see :meth:`exchange`).
        """
        invites = body.get("invites")
        if invites is None:
            return
        if not isinstance(invites, list):
            raise bad_json("invites must be a list")
        if len(invites) > MAX_ONBIND_INVITES:
            raise MatrixError(400, "M_INVALID_PARAM", "too many invites in one notification")
        failure: MatrixError | None = None
        for invite in invites:
            try:
                await self._on_bind_one(invite)
            except MatrixError as e:
                log.info("third-party invite not exchanged: %s", e)
                failure = e
        if failure is not None:
            raise failure

    async def _on_bind_one(self, invite: object) -> None:
        if not isinstance(invite, Mapping):
            raise bad_json("each invite must be an object")
        room_id, mxid, signed = invite.get("room_id"), invite.get("mxid"), invite.get("signed")
        if not isinstance(room_id, str) or not is_valid_room_id(room_id):
            raise bad_json("invite.room_id must be a room ID")
        if not isinstance(mxid, str) or not is_valid_user_id(mxid):
            raise bad_json("invite.mxid must be a user ID")
        if not self._locality.is_mine(mxid):
            raise MatrixError(400, "M_INVALID_PARAM", f"{mxid} is not a user of this server")
        if await self._store.db.read(user_store.get_user, mxid) is None:
            raise not_found(f"no user {mxid} here")
        if not isinstance(signed, Mapping):
            raise bad_json("invite.signed must be an object")
        sender = invite.get("sender")
        await self.exchange(
            room_id, mxid, signed, sender=sender if isinstance(sender, str) else None
        )

    async def accept_signed(self, user_id: str, room_id: str, signed: object) -> None:
        """A join with ``third_party_signed``: exchange the invite it proves first.

        Raises:
            MatrixError: 400 for a malformed block, 403 if it is not for ``user_id``;
                the failure of the exchange (see :meth:`exchange`).
        """
        if not isinstance(signed, Mapping):
            raise bad_json("third_party_signed must be an object")
        if signed.get("mxid") != user_id:
            raise forbidden("third_party_signed is not for you")
        sender = signed.get("sender")
        await self.exchange(
            room_id, user_id, signed, sender=sender if isinstance(sender, str) else None
        )

    async def exchange(
        self,
        room_id: str,
        target: str,
        signed: Mapping[str, object],
        *,
        sender: str | None = None,
        forwarded: bool = False,
    ) -> None:
        """Turn the room's ``m.room.third_party_invite`` named by ``signed.token`` into
        an invite of ``target``; nothing happens if ``target`` is already invited or
        joined. When this server is not in the room or the inviter is another server's
        user, the exchange is asked of the inviter's server (see the module docstring),
        unless ``forwarded`` (this is that request: it is never passed on).

        Raises:
            MatrixError: 404 unknown room; 403 ``M_FORBIDDEN`` (no such third-party
                invite, another ``sender``, no public key signs ``signed``, the key was
                revoked, the auth rules refuse, or, ``forwarded``, an inviter who is not
                ours); 502 (the key's validity could not be checked, no server could
                be asked, or the invitee's server could not be reached); the answer of
                the server asked; 501 ``M_UNRECOGNIZED`` when that needs federation and
                it is off.
        """
        token = signed.get("token")
        if not isinstance(token, str):
            raise bad_json("signed.token must be a string")
        held = await self._store.db.read(dag.host_in_room, room_id, self._server_name)
        if not held and forwarded:
            raise not_found(f"unknown room {room_id}")
        if not held and self._servers([sender, room_id]):
            await self._ask_elsewhere(room_id, target, signed, sender, [sender, room_id])
            return
        if await self._store.room_version(room_id) is None:
            raise not_found(f"unknown room {room_id}")
        ids = await self._store.current_state_ids(room_id)
        wanted = [ids[k] for k in ((THIRD_PARTY_INVITE, token), (MEMBER, target)) if k in ids]
        events = await self._store.get_events(wanted)
        invite = events.get(ids.get((THIRD_PARTY_INVITE, token), ""))
        if invite is None:
            raise forbidden("no third-party invite with that token in this room")
        membership = _content(events.get(ids.get((MEMBER, target), ""))).get("membership")
        if membership in ("invite", "join"):
            return
        inviter = invite.pdu.get("sender")
        if not isinstance(inviter, str) or (sender is not None and sender != inviter):
            raise forbidden("the third-party invite was sent by someone else")
        if not self._locality.is_mine(inviter):
            if forwarded:
                raise forbidden("the third-party invite was sent by another server's user")
            await self._ask_elsewhere(room_id, target, signed, inviter, [inviter])
            return
        invite_content = _content(invite)
        await self._check_keys(signed, invite_content)
        display_name = invite_content.get("display_name")
        third_party: dict[str, object] = {"signed": dict(signed)}
        if isinstance(display_name, str):
            third_party["display_name"] = display_name
        content = {"membership": "invite", "third_party_invite": third_party}
        remote_sign = self._remote_sign if self._locality.is_remote(target) else None
        if remote_sign is None and self._locality.is_remote(target):
            raise MatrixError(
                501, "M_UNRECOGNIZED", "inviting another server's user needs federation"
            )
        await self._rooms.writer.send_event(
            room_id, inviter, MEMBER, content, target, remote_sign=remote_sign
        )

    async def _ask_elsewhere(
        self,
        room_id: str,
        target: str,
        signed: Mapping[str, object],
        sender: str | None,
        hints: Sequence[str | None],
    ) -> None:
        """Send the unsigned invite to the servers ``hints`` name (server-server-api.md
        "Third-party invites": the invited server "will need to request the inviting
        homeserver to auth the event")."""
        if self._forward is None:
            raise MatrixError(
                501, "M_UNRECOGNIZED", "invites by other servers' users need federation"
            )
        if sender is None:
            raise bad_json("the invite names no sender")
        servers = self._servers(hints)
        if not servers:
            raise not_found(f"unknown room {room_id}")
        event: dict[str, object] = {
            "type": MEMBER,
            "room_id": room_id,
            "sender": sender,
            "state_key": target,
            "content": {"membership": "invite", "third_party_invite": {"signed": dict(signed)}},
        }
        await self._forward(servers, room_id, event)

    def _servers(self, hints: Sequence[str | None]) -> list[str]:
        """The other servers the user or room IDs in ``hints`` name, in order."""
        found = (server_of(hint) for hint in hints if hint is not None)
        return list(dict.fromkeys(s for s in found if s is not None and s != self._server_name))

    async def _check_keys(
        self, signed: Mapping[str, object], invite_content: Mapping[str, object]
    ) -> None:
        """A key that signs ``signed`` must still be valid at its ``key_validity_url``
        (client-server-api "Third-party invites", "Server behaviour": the server in
        the room "MUST validate that the public key used for signing is still valid").
        A key without a URL is taken as valid, as Synapse does."""
        keys = signing_public_keys(signed, invite_content)
        if not keys:
            raise forbidden("the signature matches no public key of the third-party invite")
        failure: MatrixError | None = None
        for public_key, url in keys:
            if url is None:
                return
            try:
                if await self._identity.key_is_valid(url, public_key):
                    return
                failure = forbidden("the identity server no longer vouches for that key")
            except (AddressBlocked, IdentityServerError, IdentityServerRefused) as e:
                log.info("checking a third-party invite key at %s failed: %s", url, e)
                failure = MatrixError(
                    502, "M_UNKNOWN", "the third-party invite's key could not be checked"
                )
        assert failure is not None
        raise failure
