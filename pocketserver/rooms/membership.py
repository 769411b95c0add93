"""The membership verbs a client asks for: join, knock, invite, leave, kick, ban, unban.

Spec: client-server-api "Room membership" (data/api/client-server/joining.yaml,
knocking.yaml, inviting.yaml, leaving.yaml, kicking.yaml, banning.yaml). Each verb is
one method here and this is the one place that decides "local or remote?": a room this
server does not hold, an alias or a user of another server.

Joins: another server's alias is asked of its server (``remote_alias``,
federation/remote_directory.py); a room in which no user of ours is joined is joined
through another server (``remote_joins``, federation/remote_join.py: make_join and
send_join) when a server to ask is known: the client's ``via``/``server_name``, the
servers of an invite held out of band, the alias's servers, the server a room ID names.
A room where one of our users is joined is held here: its joins are local events. An
invite of another server's user is sent to that server before it is stored
(``remote_sign``); a knock on a room elsewhere, and leaving an invite or knock held out
of band (an invite from another server to a room we are not in), go through
:class:`~pocketserver.federation.remote_memberships.RemoteMemberships`. Without
federation these answer 403 ``M_FORBIDDEN`` (``errors.federation_unavailable``, as
Synapse when federation is not allowed) and change nothing. Everything local goes
through :class:`RoomClient` and so the room writer and the auth rules.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from pocketserver.accounts.profiles import MAX_AVATAR_URL, MAX_DISPLAYNAME
from pocketserver.core.locality import Locality, server_of
from pocketserver.errors import bad_json, federation_unavailable, not_found
from pocketserver.rooms.client import RoomClient
from pocketserver.rooms.directory import Directory
from pocketserver.rooms.third_party_invites import ThirdPartyInvites
from pocketserver.storage import dag

if TYPE_CHECKING:
    from pocketserver.accounts.guests import GuestAccess
    from pocketserver.accounts.profiles import Profiles
    from pocketserver.accounts.service import Requester
    from pocketserver.appservice.service import AppServices
    from pocketserver.federation.remote_memberships import RemoteMemberships
    from pocketserver.rooms.out_of_band import OutOfBandMemberships
    from pocketserver.rooms.writer import RemoteSign

JOIN_AUTHORISED_VIA = "join_authorised_via_users_server"

RemoteAlias = Callable[[str], Awaitable[tuple[str, list[str]]]]
"""Another server's alias -> (room ID, servers in the room); raises MatrixError."""


class RemoteJoiner(Protocol):
    """Joins through another server (federation/remote_join.py ``RemoteJoins``)."""

    async def join(
        self, user_id: str, room_id: str, servers: Sequence[str], content: Mapping[str, object]
    ) -> object: ...


_NOT_FROM_CLIENTS = ("membership", "reason", "third_party_signed", JOIN_AUTHORISED_VIA)
"""Join body keys that are not copied into the member event: ``reason`` is added on
its own; ``join_authorised_via_users_server`` only this server may name (room v8+
restricted joins: a client naming an admin here would bypass the join rules)."""


def join_content(body: Mapping[str, object], profile: Mapping[str, object]) -> dict[str, object]:
    """The member event content of a join: the user's profile, then the other keys of
    the request body (as Synapse, SyTest 10apidoc/33room-members "can join a room with
    custom content"; a ``displayname``/``avatar_url`` there is a per-room profile).

    Raises:
        MatrixError: 400 ``M_BAD_JSON`` for a profile field that is not a short string.
    """
    custom = {k: v for k, v in body.items() if k not in _NOT_FROM_CLIENTS}
    for key, limit in (("displayname", MAX_DISPLAYNAME), ("avatar_url", MAX_AVATAR_URL)):
        value = custom.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise bad_json(f"{key} must be a string of at most {limit} characters")
    return {**profile, **custom}


class Membership:
    """The membership verbs; see the module docstring."""

    def __init__(
        self,
        rooms: RoomClient,
        directory: Directory,
        profiles: Profiles,
        guests: GuestAccess,
        third_party_invites: ThirdPartyInvites,
        appservices: AppServices,
        locality: Locality,
        remote: RemoteMemberships | None = None,
        out_of_band: OutOfBandMemberships | None = None,
        *,
        remote_alias: RemoteAlias | None = None,
        remote_joins: RemoteJoiner | None = None,
        after_remote_join: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.remote = remote
        """Invites of other servers' users, and leaves and knocks in rooms elsewhere
        (None: those answer ``federation_unavailable`` as before)."""
        self.out_of_band = out_of_band
        self.rooms = rooms
        self.remote_alias = remote_alias
        self.remote_joins = remote_joins
        self.after_remote_join = after_remote_join
        """Called with the room ID once this server joined a room through another
        (rooms/upgrade_follow.py: following an upgrade made elsewhere)."""
        self.directory = directory
        self.profiles = profiles
        self.guests = guests
        self.third_party_invites = third_party_invites
        self.appservices = appservices
        self.locality = locality

    # --- local or remote? ------------------------------------------------------------

    async def resolve(self, room_id_or_alias: str) -> str:
        """The room ID of a room ID or an alias (another server's: asked of it).

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` for neither; 404 for an unknown alias;
                502 when the alias's server cannot be asked (403 without federation).
        """
        return (await self.resolve_with_servers(room_id_or_alias))[0]

    async def resolve_with_servers(self, room_id_or_alias: str) -> tuple[str, list[str]]:
        """The room ID and, for another server's alias, the servers its server named."""
        if room_id_or_alias.startswith("#"):
            if self.locality.is_remote(room_id_or_alias):
                if self.remote_alias is None:
                    raise federation_unavailable(f"cannot look up {room_id_or_alias} on its server")
                return await self.remote_alias(room_id_or_alias)
            return await self.directory.resolve(room_id_or_alias), []
        return room_id_or_alias, []

    async def _join_servers(
        self, room_id: str, via: Sequence[str], alias_servers: Sequence[str]
    ) -> list[str]:
        """The servers to join ``room_id`` through, or [] when the room is held here
        (one of our users is joined to it) or no other server is known."""
        if self.remote_joins is None:
            return []
        if await self.rooms.store.db.read(dag.host_in_room, room_id, self.locality.server_name):
            return []
        named = server_of(room_id)  # rooms before v12 name the server that made them
        servers = [*via, *alias_servers, *([named] if named else [])]
        return [s for s in dict.fromkeys(servers) if self.locality.is_remote(s)]

    async def _check_room_known(self, room_id: str, via: Sequence[str], doing: str) -> None:
        """A room this server does not hold: 403 (federation unavailable) when another
        server could have it (its ID names one, or ``via`` does), else 404 as before.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` or 403 ``M_FORBIDDEN``.
        """
        if await self.rooms.store.room_version(room_id) is not None:
            return
        servers = [s for s in via if self.locality.is_remote(s)]
        if self.locality.is_remote(room_id) or servers:
            raise federation_unavailable(f"cannot {doing} {room_id}: it is on another server")
        raise not_found(f"this server does not know that room (cannot {doing} it)")

    def _check_local_user(self, user_id: str, doing: str) -> None:
        """Raises: MatrixError 403 for a user of another server (nothing is written)."""
        if self.locality.is_remote(user_id):
            raise federation_unavailable(f"cannot {doing} {user_id}, a user of another server")

    def check_invitees(self, user_ids: Sequence[str]) -> None:
        """createRoom's ``invite`` list: without federation, users of another server
        cannot be invited, refused before the room is made.

        Raises:
            MatrixError: 403 ``M_FORBIDDEN``.
        """
        if self.remote is not None:
            return
        for user_id in user_ids:
            self._check_local_user(user_id, "invite")

    def remote_signer_for(self) -> Callable[[str, str], RemoteSign] | None:
        """For createRoom: ``(room_id, invitee) -> RemoteSign`` sending an invite of
        another server's user to that server before it is stored (None without
        federation)."""
        remote = self.remote
        if remote is None:
            return None
        return lambda room_id, invitee: remote.sign_invite

    def _remote_sign(self, target: str, doing: str) -> RemoteSign | None:
        """The signer of an invite of another server's user (None for ours).

        Raises:
            MatrixError: 403 without federation.
        """
        if not self.locality.is_remote(target):
            return None
        if self.remote is None:
            self._check_local_user(target, doing)
            return None
        return self.remote.sign_invite

    # --- the verbs ---------------------------------------------------------------------

    async def join(
        self,
        requester: Requester,
        room_id_or_alias: str,
        *,
        via: Sequence[str] = (),
        reason: str | None = None,
        third_party_signed: object = None,
        content: Mapping[str, object] | None = None,
    ) -> str:
        """``POST /join/{roomIdOrAlias}`` and ``POST /rooms/{roomId}/join``: join (or
        change one's member event content) and return the room ID. ``via``: the servers
        the client names (``via``, ``server_name``); ``third_party_signed``: the proof of
        a third-party invite to exchange first; ``content``: the request body, whose
        other keys (a per-room profile) go into the member event (:func:`join_content`).

        Raises:
            MatrixError: 404 unknown room or alias, 403 (guests, auth rules, the
                refusal of the server joined through), 429, 502 no server could be
                joined through (federation/remote_join.py), 400
                ``M_INCOMPATIBLE_ROOM_VERSION``, and the third-party exchange's errors.
        """
        room_id, alias_servers = await self.resolve_with_servers(room_id_or_alias)
        if self.out_of_band is not None:  # accepting an invite from another server
            held = await self.out_of_band.current(requester.user_id, room_id)
            if held is not None and held.membership == "invite":
                via = [*via, *held.servers]
        servers = await self._join_servers(room_id, via, alias_servers)
        if servers and self.remote_joins is not None and third_party_signed is None:
            if requester.is_guest:
                raise federation_unavailable("guests cannot join rooms on other servers")
            await self.rooms.check_join_limit(requester.user_id, room_id)
            extra = join_content(
                content or {}, await self.profiles.member_content(requester.user_id)
            )
            member = {**extra, **({"reason": reason} if reason else {})}
            await self.remote_joins.join(requester.user_id, room_id, servers, member)
            if self.after_remote_join is not None:
                await self.after_remote_join(room_id)
            return room_id
        await self._check_room_known(room_id, via, "join")
        await self.guests.check_join(requester, room_id)  # guests: only rooms with can_join
        if third_party_signed is not None:  # turn the 3pid invite into an invite first
            await self.third_party_invites.accept_signed(
                requester.user_id, room_id, third_party_signed
            )
        extra = join_content(content or {}, await self.profiles.member_content(requester.user_id))
        content = {**extra, "membership": "join", **({"reason": reason} if reason else {})}
        if await self.rooms.is_current_member_event(room_id, requester.user_id, content):
            return room_id  # joined already with this content: no new event
        await self.rooms.membership(
            requester.user_id,
            room_id,
            requester.user_id,
            "join",
            reason=reason,
            extra=extra,
            ratelimit=True,
        )
        return room_id

    async def knock(
        self,
        requester: Requester,
        room_id_or_alias: str,
        *,
        via: Sequence[str] = (),
        reason: str | None = None,
    ) -> str:
        """``POST /knock/{roomIdOrAlias}``; returns the room ID.

        Raises:
            MatrixError: 404 unknown room or alias, 403 a remote one (or auth rules).
        """
        room_id, alias_servers = await self.resolve_with_servers(room_id_or_alias)
        if self.remote is not None and await self.rooms.store.room_version(room_id) is None:
            named = (*via, *alias_servers, server_of(room_id))
            servers = [s for s in dict.fromkeys(named) if s and self.locality.is_remote(s)]
            if servers:  # a room elsewhere: knock through its servers
                await self.remote.knock(requester.user_id, room_id, servers, reason)
                return room_id
        await self._check_room_known(room_id, via, "knock on")
        await self.rooms.membership(
            requester.user_id, room_id, requester.user_id, "knock", reason=reason
        )
        return room_id

    async def invite(
        self, requester: Requester, room_id: str, target: str, *, reason: str | None = None
    ) -> None:
        """``POST /rooms/{roomId}/invite`` with a user ID.

        A user of another server is invited only once their server signed the invite
        (federation/remote_memberships.py).

        Raises:
            MatrixError: 404 unknown room, 403 (auth rules), 429; for a user of another
                server that server's refusal (403...) or 502 when it cannot be reached
                (nothing is written then).
        """
        remote_sign = self._remote_sign(target, "invite")
        if remote_sign is None:
            await self.appservices.ensure_user_known(target)
        await self.rooms.membership(
            requester.user_id,
            room_id,
            target,
            "invite",
            reason=reason,
            ratelimit=True,
            remote_sign=remote_sign,
        )

    async def leave(self, requester: Requester, room_id: str, *, reason: str | None = None) -> None:
        """``POST /rooms/{roomId}/leave`` (also rejects an invite or withdraws a knock).

        Raises:
            MatrixError: 404 unknown room, 403 (auth rules).
        """
        if self.out_of_band is not None and self.remote is not None:
            found = await self.out_of_band.current(requester.user_id, room_id)
            if found is not None and found.membership in ("invite", "knock"):
                await self.remote.leave(requester.user_id, found, reason)  # a room elsewhere
                return
        await self.rooms.membership(
            requester.user_id, room_id, requester.user_id, "leave", reason=reason
        )

    async def kick(
        self, requester: Requester, room_id: str, target: str, *, reason: str | None = None
    ) -> None:
        """``POST /rooms/{roomId}/kick``: only a target in the room (or invited, knocking).

        Raises:
            MatrixError: 404 unknown room, 403 (auth rules, a target not in the room).
        """
        await self._target_change(requester, room_id, target, "leave", reason=reason, action="kick")

    async def ban(
        self, requester: Requester, room_id: str, target: str, *, reason: str | None = None
    ) -> None:
        """``POST /rooms/{roomId}/ban``. A user of another server may be banned: the
        ban is this room's state, nothing needs to reach their server.

        Raises:
            MatrixError: 404 unknown room, 403 (auth rules).
        """
        await self._target_change(requester, room_id, target, "ban", reason=reason)

    async def unban(
        self, requester: Requester, room_id: str, target: str, *, reason: str | None = None
    ) -> None:
        """``POST /rooms/{roomId}/unban``: only a banned target.

        Raises:
            MatrixError: 404 unknown room, 403 (auth rules, a target not banned).
        """
        await self._target_change(
            requester, room_id, target, "leave", reason=reason, action="unban"
        )

    async def _target_change(
        self,
        requester: Requester,
        room_id: str,
        target: str,
        membership: str,
        *,
        reason: str | None,
        action: str | None = None,
    ) -> None:
        await self.rooms.membership(
            requester.user_id,
            room_id,
            target,
            membership,
            reason=reason,
            action=action,
            ratelimit=True,
        )

    async def set_member_state(
        self, requester: Requester, room_id: str, target: str, content: Mapping[str, object]
    ) -> str:
        """``PUT /rooms/{roomId}/state/m.room.member/{userId}``: a membership change
        written as a state event; an invite of another server's user is refused as
        :meth:`invite` refuses it.

        Raises:
            MatrixError: 403 for a remote invitee; as :meth:`RoomClient.set_state`.
        """
        remote_sign = None
        if content.get("membership") == "invite":
            remote_sign = self._remote_sign(target, "invite")
        return await self.rooms.set_state(
            requester.user_id, room_id, "m.room.member", target, content, remote_sign=remote_sign
        )
