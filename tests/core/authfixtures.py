"""A small builder of rooms and PDUs for auth-rule and state-resolution tests.

Usage::

    room = Room("10")                       # create event by ALICE, creator join
    room.setup(join_rule="public")          # + power levels (ALICE 100) + join rules
    ev = room.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB)
    room.check(ev)                          # check_auth against the cited events
    room.add(ev)                            # store it and update the current state

* Every PDU is in the federation format of the room version: v1/v2 carry their
  ``event_id`` and list ``[id, {"sha256": ...}]`` pairs; from v3 IDs are the real
  reference hashes (so Synapse computes the same IDs) and the dicts also carry
  ``event_id`` for convenience (``Room.pdu_for_synapse`` strips it again).
* ``build`` cites, as ``auth_events``, the current state's events for
  ``auth_types_for_event`` (v12: never the create event); ``prev_events`` is the last
  added event. Pass ``auth=[...]``/``prev=[...]`` (event IDs) to override.
* ``auth_map(ev)`` gives the mapping ``check_auth`` takes: the cited events by
  (type, state_key), plus the create event in v12.
* ``room.events`` maps every added event ID to its PDU; ``room.state`` maps
  (type, state_key) to the current event ID.
"""

from __future__ import annotations

import copy
from typing import Any

from pocketserver.core.auth_rules import auth_types_for_event, check_auth
from pocketserver.core.auth_shape import create_event_id
from pocketserver.core.room_versions import get_room_version

ALICE = "@alice:a.example"
BOB = "@bob:b.example"
CAROL = "@carol:c.example"
DAVE = "@dave:a.example"

Pdu = dict[str, Any]


class Room:
    """An in-memory room: its events and current state. See the module docstring."""

    def __init__(
        self,
        version: str = "10",
        creator: str = ALICE,
        *,
        create_content: dict[str, Any] | None = None,
        creator_join: bool = True,
    ) -> None:
        self.version = version
        self.rv = get_room_version(version)
        self.creator = creator
        self.events: dict[str, Pdu] = {}
        self.state: dict[tuple[str, str], str] = {}
        self.last: list[str] = []
        self._n = 0
        server = creator.split(":", 1)[1]
        self.room_id = "" if self.rv.hydra else f"!room:{server}"
        content: dict[str, Any] = {"room_version": version}
        if not self.rv.implicit_room_creator:
            content["creator"] = creator
        if create_content is not None:
            content.update(create_content)
        create = self.build("m.room.create", creator, content, state_key="", auth=[], prev=[])
        if self.rv.hydra:
            self.room_id = "!" + create["event_id"][1:]
        self.create = create
        self.add(create)
        if creator_join:
            self.send("m.room.member", creator, {"membership": "join"}, state_key=creator)

    # -- building -------------------------------------------------------------------

    def _edges(self, ids: list[str]) -> list[Any]:
        if self.rv.event_ids_in_pdu:
            return [[i, {"sha256": "aGFzaA"}] for i in ids]
        return list(ids)

    def build(
        self,
        etype: str,
        sender: str,
        content: Any,
        *,
        state_key: str | None = None,
        auth: list[str] | None = None,
        prev: list[str] | None = None,
        extra: dict[str, Any] | None = None,
        ts: int | None = None,
    ) -> Pdu:
        """Return a new PDU (not added). ``extra`` sets/overrides top-level keys."""
        self._n += 1
        pdu: Pdu = {
            "type": etype,
            "sender": sender,
            "content": content,
            "depth": self._n,
            "origin_server_ts": ts if ts is not None else 1_000 + self._n,
            "hashes": {"sha256": "aGFzaA"},
            "signatures": {},
        }
        if etype != "m.room.create" or not self.rv.hydra:
            pdu["room_id"] = self.room_id
        if state_key is not None:
            pdu["state_key"] = state_key
        if auth is None:
            keys = auth_types_for_event(self.version, pdu)
            auth = [self.state[k] for k in keys if k in self.state]
        pdu["auth_events"] = self._edges(auth)
        pdu["prev_events"] = self._edges(self.last if prev is None else prev)
        if extra:
            pdu.update(extra)
        if self.rv.event_ids_in_pdu:
            pdu.setdefault("event_id", f"${self._n}:{sender.split(':', 1)[1]}")
        else:
            pdu.pop("event_id", None)
            event_id = create_event_id(self.rv, pdu)
            assert event_id is not None
            pdu["event_id"] = event_id
        return pdu

    def add(self, pdu: Pdu) -> Pdu:
        """Store ``pdu`` (no auth check) and make it the current state / last event."""
        self.events[pdu["event_id"]] = pdu
        if "state_key" in pdu:
            self.state[(pdu["type"], pdu["state_key"])] = pdu["event_id"]
        self.last = [pdu["event_id"]]
        return pdu

    def send(self, etype: str, sender: str, content: Any, **kw: Any) -> Pdu:
        """Build, check with ``check_auth`` (must pass) and add an event."""
        pdu = self.build(etype, sender, content, **kw)
        self.check(pdu)
        return self.add(pdu)

    # -- checking -------------------------------------------------------------------

    def listed(self, pdu: Pdu) -> list[str]:
        """The event IDs ``pdu`` cites in ``auth_events``."""
        entries = pdu.get("auth_events", [])
        return [e[0] if isinstance(e, list) else e for e in entries]

    def auth_map(self, pdu: Pdu) -> dict[tuple[str, str], Pdu]:
        """The ``auth_events`` mapping ``check_auth`` takes for ``pdu``."""
        out: dict[tuple[str, str], Pdu] = {}
        for event_id in self.listed(pdu):
            ev = self.events.get(event_id)
            if ev is not None:
                out[(ev["type"], ev["state_key"])] = ev
        if self.rv.hydra:
            out[("m.room.create", "")] = self.create
        return out

    def check(self, pdu: Pdu) -> None:
        """``check_auth`` against the events ``pdu`` cites (raises AuthError)."""
        check_auth(self.version, pdu, self.auth_map(pdu))

    def state_event(self, etype: str, state_key: str = "") -> Pdu:
        """The current state event for (etype, state_key)."""
        return self.events[self.state[(etype, state_key)]]

    def pdu_for_synapse(self, pdu: Pdu) -> Pdu:
        """A deep copy in pure federation format (no ``event_id`` from v3)."""
        out = copy.deepcopy(pdu)
        if not self.rv.event_ids_in_pdu:
            out.pop("event_id", None)
        return out

    # -- common set-ups -------------------------------------------------------------

    def setup(
        self,
        *,
        join_rule: str | None = "public",
        power: dict[str, Any] | None = None,
        users: dict[str, Any] | None = None,
        allow: list[dict[str, Any]] | None = None,
    ) -> Room:
        """Send power levels (creator 100 unless v12, plus ``users``) and join rules."""
        content: dict[str, Any] = {"users": {} if self.rv.hydra else {self.creator: 100}}
        content["users"].update(users or {})
        content.update(power or {})
        self.send("m.room.power_levels", self.creator, content, state_key="")
        if join_rule is not None:
            rules: dict[str, Any] = {"join_rule": join_rule}
            if allow is not None:
                rules["allow"] = allow
            self.send("m.room.join_rules", self.creator, rules, state_key="")
        return self

    def member(self, user: str, membership: str, sender: str | None = None, **kw: Any) -> Pdu:
        """Send (checked) a membership event for ``user``."""
        content = {"membership": membership, **kw.pop("content", {})}
        return self.send("m.room.member", sender or user, content, state_key=user, **kw)

    def force_member(self, user: str, membership: str) -> Pdu:
        """Add a membership event without checking it (to set up a state)."""
        pdu = self.build("m.room.member", user, {"membership": membership}, state_key=user)
        return self.add(pdu)
