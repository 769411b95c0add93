"""Creating a room: the events of ``POST /createRoom`` in the spec's order.

Spec: client-server-api "Creation" (data/api/client-server/create_room.yaml):
create event, the creator's join, power levels (with the override), canonical
alias, the preset's join rules / history visibility / guest access, the
``initial_state`` events in order, name and topic, then the invites. Each event
goes through the room writer and so through the auth rules.

:class:`RoomCreator` is the service verb of ``POST /createRoom``: it checks the request
against this server (alias, rate limits, invitees of other servers), makes the room,
then its alias, its directory listing and its invites by address.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pocketserver.core.locality import Locality
from pocketserver.core.power_levels import default_power_levels_content
from pocketserver.core.room_versions import get_room_version
from pocketserver.errors import MatrixError
from pocketserver.rooms.canonical_alias import CANONICAL_ALIAS, new_aliases
from pocketserver.rooms.directory import Directory
from pocketserver.rooms.limits import RoomActionLimits
from pocketserver.rooms.membership import Membership
from pocketserver.rooms.third_party_invites import ThirdPartyInvites, ThreePidInvite
from pocketserver.rooms.writer import RemoteSign, RoomWriter

if TYPE_CHECKING:
    from pocketserver.accounts.profiles import Profiles
    from pocketserver.accounts.service import Requester
    from pocketserver.appservice.service import AppServices

PRESETS: dict[str, dict[str, str]] = {
    "private_chat": {"join_rule": "invite", "history": "shared", "guest": "can_join"},
    "trusted_private_chat": {"join_rule": "invite", "history": "shared", "guest": "can_join"},
    "public_chat": {"join_rule": "public", "history": "shared", "guest": ""},
}
"""``guest`` empty: no ``m.room.guest_access`` event, which means ``forbidden``
(guest_access.md); Synapse sends none for ``public_chat`` and SyTest expects none."""

StateEvent = tuple[str, str, Mapping[str, object]]


@dataclass(frozen=True, slots=True)
class RoomSettings:
    """What a ``createRoom`` request asks for, already type-checked by the API layer."""

    room_version: str
    preset: str = "private_chat"
    name: str | None = None
    topic: str | None = None
    canonical_alias: str | None = None
    invite: Sequence[str] = ()
    is_direct: bool = False
    initial_state: Sequence[StateEvent] = ()
    creation_content: Mapping[str, object] = field(default_factory=dict)
    power_level_content_override: Mapping[str, object] | None = None
    creator_profile: Mapping[str, object] = field(default_factory=dict)


async def create_room(
    writer: RoomWriter,
    creator: str,
    settings: RoomSettings,
    remote_sign_for: Callable[[str, str], RemoteSign] | None = None,
) -> str:
    """Create a room as ``creator`` and return its ID.

    ``remote_sign_for(room_id, invitee)``: how an invitee of another server has their
    server sign the invite (federation/remote_memberships.py); those invites are sent
    last, after the room's initial state (a refusal is the remote server's answer,
    not an invalid initial state), and fail the request as Synapse's createRoom does.

    Raises:
        MatrixError: 400 ``M_UNSUPPORTED_ROOM_VERSION``, 400 ``M_INVALID_PARAM`` (unknown
            preset), 400 ``M_INVALID_ROOM_STATE`` (initial state the auth rules refuse).
    """
    if settings.preset not in PRESETS:
        raise MatrixError(400, "M_INVALID_PARAM", f"unknown preset {settings.preset!r}")
    try:
        version = get_room_version(settings.room_version)
    except ValueError:
        raise MatrixError(
            400, "M_UNSUPPORTED_ROOM_VERSION", f"unsupported room version {settings.room_version!r}"
        ) from None
    trusted = settings.preset == "trusted_private_chat"
    creation = {
        k: v for k, v in settings.creation_content.items() if k not in ("room_version", "creator")
    }
    if version.hydra and trusted and settings.invite:
        extra = creation.get("additional_creators")
        existing = list(extra) if isinstance(extra, list) else []
        creation["additional_creators"] = existing + [
            u for u in settings.invite if u not in existing
        ]
    create = await writer.create_room(settings.room_version, creator, creation)
    room_id = create.room_id

    async def state(event_type: str, content: Mapping[str, object], state_key: str = "") -> None:
        await writer.send_event(room_id, creator, event_type, content, state_key)

    await state("m.room.member", {**settings.creator_profile, "membership": "join"}, creator)
    remote = [u for u in settings.invite if remote_sign_for is not None and _remote(u, writer)]
    try:
        await _send_initial_state(state, creator, settings, trusted, skip=frozenset(remote))
    except MatrixError as e:
        # create_room.yaml 400: "The initial state implied by the parameters to the
        # request is invalid: for example, the user's power_level is set below that
        # necessary to set the room name (M_INVALID_ROOM_STATE)".
        if e.errcode == "M_FORBIDDEN":
            raise MatrixError(400, "M_INVALID_ROOM_STATE", f"initial state: {e.error}") from None
        raise
    for invitee in remote:
        assert remote_sign_for is not None
        await writer.send_event(
            room_id,
            creator,
            "m.room.member",
            _invite_content(settings),
            invitee,
            remote_sign=remote_sign_for(room_id, invitee),
        )
    return room_id


def _remote(user_id: str, writer: RoomWriter) -> bool:
    return Locality(writer.server_name).is_remote(user_id)


def _invite_content(settings: RoomSettings) -> dict[str, object]:
    invite: dict[str, object] = {"membership": "invite"}
    if settings.is_direct:
        invite["is_direct"] = True
    return invite


async def _send_initial_state(
    state: Callable[..., Awaitable[None]],
    creator: str,
    settings: RoomSettings,
    trusted: bool,
    *,
    skip: frozenset[str] = frozenset(),
) -> None:
    """Steps 3-8 of the spec's createRoom order."""
    initial = {(t, sk): content for t, sk, content in settings.initial_state}
    await state("m.room.power_levels", _power_levels(creator, settings, initial, trusted))
    if settings.canonical_alias:
        await state("m.room.canonical_alias", {"alias": settings.canonical_alias})
    preset = PRESETS[settings.preset]
    preset_events: list[tuple[str, Mapping[str, object]]] = [
        ("m.room.join_rules", {"join_rule": preset["join_rule"]}),
        ("m.room.history_visibility", {"history_visibility": preset["history"]}),
    ]
    if preset["guest"]:
        preset_events.append(("m.room.guest_access", {"guest_access": preset["guest"]}))
    for event_type, preset_content in preset_events:
        if (event_type, "") not in initial:
            await state(event_type, preset_content)
    for (event_type, state_key), initial_content in initial.items():
        if event_type != "m.room.power_levels":
            await state(event_type, initial_content, state_key)
    if settings.name is not None:
        await state("m.room.name", {"name": settings.name})
    if settings.topic is not None:
        # create_room.yaml: "an m.room.topic event with a text/plain mimetype"
        # (m.room.topic.yaml: ``topic`` duplicates the text/plain ``m.topic`` entry).
        text = [{"mimetype": "text/plain", "body": settings.topic}]
        await state("m.room.topic", {"topic": settings.topic, "m.topic": {"m.text": text}})
    for invitee in settings.invite:
        if invitee not in skip:
            await state("m.room.member", _invite_content(settings), invitee)


def _power_levels(
    creator: str,
    settings: RoomSettings,
    initial: Mapping[tuple[str, str], Mapping[str, object]],
    trusted: bool,
) -> dict[str, object]:
    version = get_room_version(settings.room_version)
    content = dict(
        initial.get(("m.room.power_levels", ""))
        or default_power_levels_content(creator, settings.room_version)
    )
    if trusted and not version.hydra and settings.invite:
        users = dict(content.get("users") or {})  # type: ignore[call-overload]
        for invitee in settings.invite:
            users[invitee] = users.get(creator, 100)
        content["users"] = users
    if settings.power_level_content_override:
        content.update(settings.power_level_content_override)
    return content


@dataclass(frozen=True, slots=True)
class CreateRoomRequest:
    """A parsed ``POST /createRoom`` body. ``settings.room_version`` empty: the
    configured default; ``settings.canonical_alias`` and ``creator_profile`` are
    filled in by :class:`RoomCreator`."""

    settings: RoomSettings
    visibility: str = "private"
    room_alias_name: str | None = None
    invite_3pid: Sequence[ThreePidInvite] = ()


def check_initial_aliases(initial_state: Sequence[StateEvent], alias: str | None) -> None:
    """A canonical alias in ``initial_state`` may name only the room's new alias (from
    ``room_alias_name``): no other can point at a room that does not exist yet. Checked
    before anything is created (rooms/canonical_alias.py).

    Raises:
        MatrixError: 400 ``M_BAD_ALIAS``.
    """
    for event_type, _, content in initial_state:
        if event_type == CANONICAL_ALIAS:
            for named in new_aliases(content, None):
                if named != alias:
                    raise MatrixError(
                        400, "M_BAD_ALIAS", f"room alias {named} does not point to the room"
                    )


class RoomCreator:
    """``POST /createRoom`` as one service verb."""

    def __init__(
        self,
        writer: RoomWriter,
        membership: Membership,
        directory: Directory,
        profiles: Profiles,
        third_party_invites: ThirdPartyInvites,
        appservices: AppServices,
        limits: RoomActionLimits,
        default_room_version: str,
    ) -> None:
        self.writer = writer
        self.membership = membership
        self.directory = directory
        self.profiles = profiles
        self.third_party_invites = third_party_invites
        self.appservices = appservices
        self.limits = limits
        self.default_room_version = default_room_version

    async def create(self, requester: Requester, request: CreateRoomRequest) -> str:
        """Create the room and return its ID. Everything that can be refused is checked
        before the room is made (except the invites by address, sent after it exists, as
        Synapse does).

        Raises:
            MatrixError: 400 (too many invites, a bad or taken alias, third-party
                invites off, an unsupported room version, invalid initial state), 403
                (an application service outside its alias namespaces, an invitee of
                another server), 429; :func:`create_room`'s errors.
        """
        settings = request.settings
        self.limits.check_invite_count(len(settings.invite))
        self.membership.check_invitees(settings.invite)
        if request.invite_3pid:
            self.third_party_invites.check_enabled()
        alias = None
        if request.room_alias_name is not None:
            alias = await self.directory.check_new_alias(request.room_alias_name)
            service = (
                self.appservices.by_id(requester.app_service) if requester.app_service else None
            )
            self.appservices.check_alias_allowed(alias, service)
        check_initial_aliases(settings.initial_state, alias)
        settings = replace(
            settings,
            room_version=settings.room_version or self.default_room_version,
            canonical_alias=alias,
            creator_profile=await self.profiles.member_content(requester.user_id),
        )
        self.limits.check_room_creation(requester.user_id)
        room_id = await create_room(
            self.writer, requester.user_id, settings, self.membership.remote_signer_for()
        )
        if alias is not None:
            await self.directory.create_alias(alias, room_id, requester.user_id)
        if request.visibility == "public":
            await self.directory.set_visibility(room_id, public=True)
        for by_address in request.invite_3pid:  # after the room exists, as Synapse does
            await self.third_party_invites.invite(requester.user_id, room_id, by_address)
        return room_id
