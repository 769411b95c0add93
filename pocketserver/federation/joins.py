"""The resident side of joins, leaves and knocks: other servers' users entering or
leaving rooms that live here.

server-server-api.md "Joining Rooms" (``GET /make_join``, ``PUT /v2/send_join``),
"Leaving Rooms (Rejecting Invites)" (``make_leave``, ``v2/send_leave``) and "Knocking
upon a room" (``make_knock``, ``send_knock``). The dance is the same for all three:

1. ``make_*``: we build the event as the room is now (prev and auth events), check
   that the auth rules would let it in, and hand it back unsigned with the room
   version. Errors: 404 unknown room, 403 ACL or auth rules, 400
   ``M_INCOMPATIBLE_ROOM_VERSION`` (with ``room_version``) when the asking server does
   not support the room's version.
2. ``send_*``: the other server signed it; we check its shape (400 ``M_INVALID_PARAM``
   as the spec asks for a wrong type, membership, sender or state key), take it
   through the room writer like any other PDU (signatures, hashes, auth) and answer.
   A join is answered with the state before it and the auth chain, a knock with the
   stripped state the knocking user may see.

Restricted rooms (room versions 8+, client-server-api "Restricted rooms"): when a
user who is neither invited nor joined asks to join, and they are joined to one of
the rooms the join rule allows (as far as this server can tell: only rooms we are in
count), we name one of our users who may invite in ``join_authorised_via_users_server``
and, on ``send_join``, countersign the event, as the spec requires of the authorising
server. ``M_UNABLE_TO_AUTHORISE_JOIN`` when we know none of the allowed rooms,
``M_UNABLE_TO_GRANT_JOIN`` when none of our users may invite.

The big answers (a join's state and auth chain) are returned as event IDs, for the
route to stream in batches (``FederationHistory.pdus_of``): a room's state is never
held whole.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from nacl.signing import SigningKey, VerifyKey

from pocketserver.core.crypto import SignatureError, sign_json
from pocketserver.core.events import EventFormatError, check_canonical_json, compute_event_id
from pocketserver.core.locality import server_of
from pocketserver.core.power_levels import get_named_level, get_user_power_level
from pocketserver.core.redaction import redact
from pocketserver.core.room_versions import get_room_version
from pocketserver.errors import MatrixError, bad_json, forbidden, invalid_param, not_found
from pocketserver.federation.history import FederationHistory
from pocketserver.rooms.store import RoomStore, StateKey
from pocketserver.rooms.writer import MissingEventsError, PersistedEvent, RoomWriter
from pocketserver.storage import dag
from pocketserver.storage import events as event_store

MEMBER = "m.room.member"
JOIN_AUTHORISED_VIA = "join_authorised_via_users_server"
MAX_HEROES = 5
_STRIPPED_TYPES = (
    "m.room.create",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.join_rules",
    "m.room.canonical_alias",
    "m.room.encryption",
)
"""The state a knocking (or invited) user is shown (client-server-api "Stripped state":
servers SHOULD include these), plus the user's own membership."""

KeysFor = Callable[[Mapping[str, object], str], Awaitable[Mapping[str, Mapping[str, VerifyKey]]]]
"""The verify keys of the servers that must have signed a PDU (from the keyring),
valid at the event's time: ``(pdu, room_version) -> {server: {key_id: key}}``."""


def _content(pdu: Mapping[str, object]) -> Mapping[str, object]:
    content = pdu.get("content")
    return content if isinstance(content, Mapping) else {}


@dataclass(frozen=True, slots=True)
class JoinAnswer:
    """``send_join``: the stored join event and what to stream with it."""

    event: dict[str, object]
    state_ids: list[str]
    auth_chain_ids: list[str]
    members_omitted: bool
    servers_in_room: list[str]


class ResidentMemberships:
    """Other servers' users joining, leaving and knocking on rooms that live here."""

    def __init__(
        self,
        writer: RoomWriter,
        history: FederationHistory,
        server_name: str,
        signing_key: SigningKey,
        keys_for: KeysFor,
    ) -> None:
        self.writer = writer
        self.store: RoomStore = writer.store
        self.history = history
        self.server_name = server_name
        self._signing_key = signing_key
        self._keys_for = keys_for

    # --- make_join / make_leave / make_knock ----------------------------------------------

    async def make(
        self,
        origin: str,
        room_id: str,
        user_id: str,
        membership: str,
        supported_versions: Sequence[str] | None,
    ) -> dict[str, object]:
        """``GET /make_{join,leave,knock}/{roomId}/{userId}``: the event template.

        ``supported_versions`` is the ``ver`` query parameter (make_join and
        make_knock; ignored for make_leave). Absent, it means ``["1"]`` (joins-v1.yaml:
        "Defaults to room version 1"; knocks.yaml says the same).
        """
        if server_of(user_id) != origin:
            raise forbidden("The user must be on the requesting server")
        if supported_versions is None and membership in ("join", "knock"):
            supported_versions = ["1"]
        room_version = await self.store.room_version(room_id)
        if room_version is None:
            raise not_found("Unknown room")
        await self.history.check_acl(origin, room_id)
        if membership in ("join", "knock") and not await self._still_joined(room_id):
            # All our users have left: our state may be stale and nobody here can
            # authorise anything (Synapse: 404 "Not an active room on this server").
            raise not_found("Not an active room on this server")
        if supported_versions is not None and room_version not in supported_versions:
            raise MatrixError(
                400,
                "M_INCOMPATIBLE_ROOM_VERSION",
                f"Your homeserver does not support the features required to {membership}"
                f" this room (room version {room_version})",
                room_version=room_version,
            )
        if membership == "knock" and not get_room_version(room_version).knocking:
            raise MatrixError(
                400,
                "M_INCOMPATIBLE_ROOM_VERSION",
                f"Room version {room_version} does not support knocking",
                room_version=room_version,
            )
        content: dict[str, object] = {"membership": membership}
        if membership == "join":
            authoriser = await self._restricted_join_authoriser(room_id, room_version, user_id)
            if authoriser is not None:
                content[JOIN_AUTHORISED_VIA] = authoriser
        _, template = await self.writer.event_template(
            room_id, user_id, MEMBER, content, user_id, origin=origin
        )
        return {"room_version": room_version, "event": template}

    async def _still_joined(self, room_id: str) -> bool:
        return self.server_name in await self.joined_servers(room_id)

    async def _restricted_join_authoriser(
        self, room_id: str, room_version: str, user_id: str
    ) -> str | None:
        """The local user to name in ``join_authorised_via_users_server``, or None when
        the room is not restricted or the user needs no authorisation (invited or
        joined already). Raises when a restricted join cannot be authorised here."""
        version = get_room_version(room_version)
        state = await self.store.current_state_ids(room_id)
        rules_id = state.get(("m.room.join_rules", ""))
        rules = await self.store.get_event(rules_id) if rules_id else None
        rule = _content(rules.pdu).get("join_rule") if rules else None
        restricted = (rule == "restricted" and version.restricted_join_rule) or (
            rule == "knock_restricted" and version.knock_restricted_join_rule
        )
        if not restricted or rules is None:
            return None
        current = await self._membership(state, user_id)
        if current in ("join", "invite"):
            return None
        allow = _content(rules.pdu).get("allow")
        allowed_rooms = [
            str(entry["room_id"])
            for entry in (allow if isinstance(allow, list) else [])
            if isinstance(entry, Mapping)
            and entry.get("type") == "m.room_membership"
            and isinstance(entry.get("room_id"), str)
        ]
        known = [r for r in allowed_rooms if await self.store.room_version(r) is not None]
        if not known:
            raise MatrixError(
                400,
                "M_UNABLE_TO_AUTHORISE_JOIN",
                "This server is in none of the rooms the join rule allows",
            )
        for allowed in known:
            if await self._membership(await self.store.current_state_ids(allowed), user_id) == (
                "join"
            ):
                break
        else:
            raise forbidden("You do not belong to any of the required rooms to join this room")
        authoriser = await self._local_inviter(state, room_version)
        if authoriser is None:
            raise MatrixError(
                400, "M_UNABLE_TO_GRANT_JOIN", "No user of this server may invite to this room"
            )
        return authoriser

    async def _membership(self, state: Mapping[StateKey, str], user_id: str) -> str | None:
        event_id = state.get((MEMBER, user_id))
        event = await self.store.get_event(event_id) if event_id else None
        membership = _content(event.pdu).get("membership") if event else None
        return membership if isinstance(membership, str) else None

    async def _local_inviter(self, state: Mapping[StateKey, str], room_version: str) -> str | None:
        """A joined local user whose power level reaches the room's ``invite`` level
        (the highest such user, for stability)."""
        version = get_room_version(room_version)
        found = await self.store.get_events(
            [state[k] for k in (("m.room.create", ""), ("m.room.power_levels", "")) if k in state]
        )
        create = found.get(state.get(("m.room.create", ""), ""))
        if create is None:
            return None
        pl_event = found.get(state.get(("m.room.power_levels", ""), ""))
        pl_content = _content(pl_event.pdu) if pl_event else None
        invite_level = get_named_level(
            pl_content, "invite", 0, integer_only=version.integer_only_power_levels
        )
        local_members = [
            event_id
            for (kind, key), event_id in state.items()
            if kind == MEMBER and server_of(key) == self.server_name
        ]
        members = await self.store.get_events(local_members)
        best: tuple[float, str] | None = None
        for ev in members.values():
            if _content(ev.pdu).get("membership") != "join":
                continue
            user = str(ev.pdu.get("state_key"))
            level = get_user_power_level(user, pl_content, create.pdu, room_version=room_version)
            if level >= invite_level and (best is None or (level, user) > best):
                best = (level, user)
        return None if best is None else best[1]

    # --- send_join / send_leave / send_knock ----------------------------------------------

    async def _receive(
        self, origin: str, room_id: str, event_id: str, pdu: object, membership: str
    ) -> tuple[str, PersistedEvent]:
        if not isinstance(pdu, dict):
            raise invalid_param("The request body must be the signed membership event")
        room_version = await self.store.room_version(room_id)
        if room_version is None:
            raise not_found("Unknown room")
        await self.history.check_acl(origin, room_id)
        try:
            # First, as Synapse's event_from_pdu_json: a float in a v6+ room is
            # M_BAD_JSON whatever else is wrong (SyTest 35room-invite.pl).
            check_canonical_json(pdu, room_version)
        except EventFormatError as e:
            raise bad_json(f"The event is malformed: {e}") from None
        sender = pdu.get("sender")
        if pdu.get("type") != MEMBER:
            raise invalid_param("The event is not an m.room.member event")
        if _content(pdu).get("membership") != membership:
            raise invalid_param(f"The event's membership is not {membership}")
        if not isinstance(sender, str) or server_of(sender) != origin:
            # 403 as Synapse ("User not from origin"; SyTest 30room-join, 35room-invite).
            raise forbidden("The event's sender is not a user of the requesting server")
        if pdu.get("state_key") != sender:
            raise invalid_param("The event's state_key is not its sender")
        if pdu.get("room_id") != room_id:
            raise invalid_param("The event is for another room")
        try:
            computed = compute_event_id(pdu, room_version)
        except (EventFormatError, KeyError, TypeError, ValueError):
            raise bad_json("The event is malformed") from None
        if computed != event_id:
            raise invalid_param("The event ID in the path does not match the event")
        via = _content(pdu).get(JOIN_AUTHORISED_VIA)
        if membership == "join" and isinstance(via, str) and server_of(via) == self.server_name:
            pdu = self._countersign(pdu, room_version)
        try:
            keys = await self._keys_for(pdu, room_version)
            persisted = await self.writer.receive_pdu(pdu, room_version, keys)
        except EventFormatError as e:
            raise bad_json(f"The event is malformed: {e}") from None
        except SignatureError as e:
            raise forbidden(f"The event's signatures do not verify: {e}") from None
        except MissingEventsError as e:
            raise invalid_param(f"The event names events this server does not have: {e}") from None
        if persisted.rejected is not None:
            raise forbidden(f"The {membership} is not allowed: {persisted.rejected}")
        if persisted.soft_failed:
            raise forbidden(f"The {membership} is not allowed in the room's current state")
        return room_version, persisted

    def _countersign(self, pdu: dict[str, object], room_version: str) -> dict[str, object]:
        """Add our signature (over the redacted event, as for any PDU) to a restricted
        join we authorised."""
        signed = sign_json(redact(pdu, room_version), self.server_name, self._signing_key)
        out = dict(pdu)
        out["signatures"] = signed["signatures"]
        return out

    async def send_join(
        self, origin: str, room_id: str, event_id: str, pdu: object, omit_members: bool
    ) -> JoinAnswer:
        """``PUT /v2/send_join/{roomId}/{eventId}``: accept the join and answer the state
        before it (members left out on request, but the heroes kept for rooms without
        a name or alias, as joins-v2.yaml suggests) and the auth chain of the join and
        of that state (without repeating the state)."""
        _, persisted = await self._receive(origin, room_id, event_id, pdu, "join")
        stored = await self.store.get_event(persisted.event_id)
        assert stored is not None
        state = await self.store.group_state(stored.state_before)
        servers = await self._servers_in(state)
        kept = dict(state)
        if omit_members:
            heroes = await self._hero_keys(state, str(stored.pdu.get("sender")))
            kept = {k: v for k, v in state.items() if k[0] != MEMBER or k in heroes}
        state_ids = sorted(kept.values())
        chain = await self.store.auth_chain_ids([*state_ids, persisted.event_id])
        # The state's events may be left out of the chain only when members are omitted
        # (joins-v2.yaml "auth_chain"); a full answer repeats them. Oldest first: a
        # joining server that takes the state from the chain in order (SyTest's fake
        # server does) ends with the newest power levels, not whichever sorts last.
        chain_ids = await self.store.db.read(
            event_store.oldest_first,
            chain - (set(state_ids) if omit_members else set()) - {persisted.event_id},
        )
        return JoinAnswer(
            event=stored.pdu,
            state_ids=state_ids,
            auth_chain_ids=chain_ids,
            members_omitted=omit_members,
            servers_in_room=sorted(servers),
        )

    async def send_leave(self, origin: str, room_id: str, event_id: str, pdu: object) -> None:
        """``PUT /v2/send_leave/{roomId}/{eventId}``: accept the leave."""
        await self._receive(origin, room_id, event_id, pdu, "leave")

    async def send_knock(
        self, origin: str, room_id: str, event_id: str, pdu: object
    ) -> list[dict[str, object]]:
        """``PUT /send_knock/{roomId}/{eventId}``: accept the knock and answer the
        state the knocking user may see (``knock_room_state``): full PDUs including the
        create event (knocks.yaml, spec v1.16, MSC4311; as Synapse 1.163 sends them),
        which the knocking server strips for its client."""
        room_version = await self.store.room_version(room_id)
        if room_version is not None and not get_room_version(room_version).knocking:
            raise MatrixError(
                400,
                "M_INCOMPATIBLE_ROOM_VERSION",
                f"Room version {room_version} does not support knocking",
                room_version=room_version,
            )
        await self._receive(origin, room_id, event_id, pdu, "knock")
        state = await self.store.current_state_ids(room_id)
        wanted = [state[(t, "")] for t in _STRIPPED_TYPES if (t, "") in state]
        found = await self.store.get_events(wanted)
        return [found[i].pdu for i in wanted if i in found]

    async def _servers_in(self, state: Mapping[StateKey, str]) -> set[str]:
        members = await self.store.get_events(
            [event_id for (kind, _), event_id in state.items() if kind == MEMBER]
        )
        servers = {
            server_of(str(ev.pdu.get("state_key")))
            for ev in members.values()
            if _content(ev.pdu).get("membership") == "join"
        }
        return {s for s in servers if s is not None}

    async def _hero_keys(self, state: Mapping[StateKey, str], joiner: str) -> set[StateKey]:
        """The member events a joiner needs for the room's name when the room has no
        name and no canonical alias (up to five joined or invited members other than
        the joiner, oldest membership first, as the sync summary's heroes)."""
        if ("m.room.name", "") in state or ("m.room.canonical_alias", "") in state:
            return set()
        keys = [k for k in state if k[0] == MEMBER and k[1] != joiner]
        members = await self.store.get_events([state[k] for k in keys])
        candidates = sorted(
            (ev.stream_ordering, (MEMBER, str(ev.pdu.get("state_key"))))
            for ev in members.values()
            if _content(ev.pdu).get("membership") in ("join", "invite")
        )
        return {key for _, key in candidates[:MAX_HEROES]}

    async def joined_servers(self, room_id: str) -> set[str]:
        """The servers with users joined to ``room_id`` now."""
        return await self.store.db.read(dag.joined_servers, room_id)
