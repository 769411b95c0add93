"""A small room builder for state resolution tests, and tests of the builder itself.

``Room.send(state, ...)`` builds a PDU in the room version's format on top of the
state map ``state`` (auth events chosen by the auth events selection algorithm, or
given explicitly), checks it with the real ``check_auth`` and returns its ID and the
state after it. Forks are plain copies of a state map.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Mapping

import pytest

from pocketserver.core.auth_rules import AuthError, auth_types_for_event, check_auth
from pocketserver.core.events import compute_event_id
from pocketserver.core.room_versions import get_room_version

ALICE = "@alice:example.org"
BOB = "@bob:example.org"
CAROL = "@carol:example.org"
DAVE = "@dave:example.org"
EVE = "@eve:example.org"
MALLORY = "@mallory:example.org"
ZARA = "@zara:example.org"

CREATE = ("m.room.create", "")
PL = ("m.room.power_levels", "")
JR = ("m.room.join_rules", "")
TOPIC = ("m.room.topic", "")

State = dict[tuple[str, str], str]


def member(user: str) -> tuple[str, str]:
    return ("m.room.member", user)


class Room:
    """Builds events of one room; ``events`` is the event map for ``resolve_state``."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.rv = get_room_version(version)
        self.events: dict[str, dict[str, object]] = {}
        self.room_id = "!room:example.org"
        self._ts = 0
        self._n = 0
        self._last: str | None = None

    def _edges(self, ids: list[str]) -> list[object]:
        if self.rv.event_ids_in_pdu:
            return [[i, {"sha256": "aGFzaA"}] for i in ids]
        return list(ids)

    def send(
        self,
        state: Mapping[tuple[str, str], str],
        etype: str,
        sender: str,
        content: dict[str, object],
        state_key: str | None = None,
        *,
        auth: list[str] | None = None,
        prev: list[str] | None = None,
        ts: int | None = None,
        depth: int | None = None,
        check: bool = True,
    ) -> tuple[str, State]:
        """Build an event on top of ``state``; return its ID and the state after it."""
        self._n += 1
        self._ts = ts if ts is not None else self._ts + 10
        prev_ids = prev if prev is not None else ([self._last] if self._last else [])
        pdu: dict[str, object] = {
            "type": etype,
            "sender": sender,
            "content": content,
            "origin_server_ts": self._ts,
            "prev_events": self._edges(prev_ids),
            "depth": depth if depth is not None else self._depth(prev_ids),
            "hashes": {"sha256": "aGFzaA"},
            "signatures": {},
        }
        if self.rv.event_ids_in_pdu:
            pdu["origin"] = "example.org"
        if state_key is not None:
            pdu["state_key"] = state_key
        if not (self.rv.hydra and etype == "m.room.create"):
            pdu["room_id"] = self.room_id
        if auth is None:
            keys = auth_types_for_event(self.version, pdu)
            auth = [state[k] for k in keys if k in state and not (self.rv.hydra and k == CREATE)]
        pdu["auth_events"] = self._edges(auth)
        if self.rv.event_ids_in_pdu:
            pdu["event_id"] = f"${self._n}:example.org"
        event_id = compute_event_id(pdu, self.version)
        if check:
            check_auth(self.version, pdu, self.auth_map(event_id, pdu, auth))
        self.events[event_id] = pdu
        self._last = event_id
        if etype == "m.room.create" and self.rv.hydra:
            self.room_id = "!" + event_id[1:]
        after = dict(state)
        if state_key is not None:
            after[(etype, state_key)] = event_id
        return event_id, after

    def _depth(self, prev_ids: list[str]) -> int:
        depths = [self.events[p]["depth"] for p in prev_ids if p in self.events]
        return 1 + max((d for d in depths if isinstance(d, int)), default=0)

    def auth_map(
        self, event_id: str, pdu: Mapping[str, object], auth: list[str]
    ) -> dict[tuple[str, str], Mapping[str, object]]:
        out: dict[tuple[str, str], Mapping[str, object]] = {}
        for a in auth:
            ev = self.events[a]
            out[(str(ev["type"]), str(ev["state_key"]))] = ev
        if self.rv.hydra and pdu["type"] != "m.room.create":
            out[CREATE] = self.events["$" + self.room_id[1:]]
        return out

    def allowed(self, state: Mapping[tuple[str, str], str], event_id: str) -> bool:
        """Would ``event_id`` pass the auth rules against ``state`` (for test oracles)?"""
        pdu = self.events[event_id]
        keys = list(auth_types_for_event(self.version, pdu))
        auth = [state[k] for k in keys if k in state and not (self.rv.hydra and k == CREATE)]
        try:
            check_auth(self.version, pdu, self.auth_map(event_id, pdu, auth))
        except AuthError:
            return False
        return True

    def membership(self, state: Mapping[tuple[str, str], str], user: str) -> str | None:
        """The user's membership in ``state``."""
        event_id = state.get(member(user))
        if event_id is None:
            return None
        content = self.events[event_id]["content"]
        return str(content["membership"]) if isinstance(content, dict) else None

    def pl(self, users: dict[str, int], **levels: object) -> dict[str, object]:
        """Power levels content; v12 creators may not be listed in ``users``."""
        if self.rv.hydra:
            users = {u: v for u, v in users.items() if u != ALICE}
        return {"users": users, **levels}

    def base(self, *joined: str, pl_users: dict[str, int] | None = None) -> State:
        """Alice creates a public room; ``joined`` users join. Returns the state."""
        content: dict[str, object] = {"room_version": self.version}
        if not self.rv.implicit_room_creator:
            content["creator"] = ALICE
        _, s = self.send({}, "m.room.create", ALICE, content, "")
        _, s = self.send(s, "m.room.member", ALICE, {"membership": "join"}, ALICE)
        _, s = self.send(s, "m.room.power_levels", ALICE, self.pl(pl_users or {ALICE: 100}), "")
        _, s = self.send(s, "m.room.join_rules", ALICE, {"join_rule": "public"}, "")
        for user in joined:
            _, s = self.send(s, "m.room.member", user, {"membership": "join"}, user)
        return s


@pytest.mark.parametrize("version", ["1", "2", "3", "10", "11", "12"])
def test_builder_makes_valid_rooms(version: str) -> None:
    room = Room(version)
    state = room.base(BOB, CAROL, pl_users={ALICE: 100, BOB: 50})
    assert set(state) == {CREATE, PL, JR, member(ALICE), member(BOB), member(CAROL)}
    assert all(room.allowed(state, e) for e in state.values() if e != state[CREATE])


def test_builder_refuses_unauthorised_events() -> None:
    room = Room("10")
    state = room.base(BOB)
    with pytest.raises(AuthError):
        room.send(state, "m.room.power_levels", BOB, room.pl({BOB: 100}), "")


def test_v12_room_id_is_the_create_event_id() -> None:
    room = Room("12")
    state = room.base()
    assert room.room_id == "!" + state[CREATE][1:]
    assert "room_id" not in room.events[state[CREATE]]


# --- random rooms for property and differential tests --------------------------------

USERS = [ALICE, BOB, CAROL, DAVE, EVE, MALLORY, ZARA]
_LEVELS = [0, 0, 25, 50, 75, 100]


def _random_event(room: Room, rng: random.Random, state: State) -> tuple[str, State]:
    """Try one random event on ``state`` (may raise AuthError)."""
    joined = [u for u in USERS if room.membership(state, u) == "join"]
    sender = rng.choice(joined) if joined and rng.random() < 0.85 else rng.choice(USERS)
    target = rng.choice(USERS)
    ts = rng.choice([None, None, None, 5000, 5000])  # timestamp ties exercise event ID order
    kind = rng.randrange(9)
    if kind == 0:
        return room.send(state, "m.room.topic", sender, {"topic": str(rng.random())}, "", ts=ts)
    if kind == 1:
        return room.send(state, "m.room.name", sender, {"name": str(rng.random())}, "", ts=ts)
    if kind == 2:
        users = {u: rng.choice(_LEVELS) for u in rng.sample(USERS, rng.randrange(1, 4))}
        users[ALICE] = 100
        extra = {
            k: rng.choice(_LEVELS) for k in ("ban", "kick", "users_default") if rng.random() < 0.2
        }
        levels = room.pl(users, events={"m.room.topic": rng.choice([0, 50])}, **extra)
        return room.send(state, "m.room.power_levels", sender, levels, "", ts=ts)
    if kind == 3:
        rules = ["public", "invite", *(["knock"] if room.rv.knocking else [])]
        rule = rng.choice(rules)
        return room.send(state, "m.room.join_rules", sender, {"join_rule": rule}, "", ts=ts)
    memberships = ["join", "join", "leave", "ban", "invite", "leave"]
    membership = rng.choice([*memberships, *(["knock"] if room.rv.knocking else [])])
    if membership in ("join", "knock"):
        target = sender
    return room.send(state, "m.room.member", sender, {"membership": membership}, target, ts=ts)


def random_forks(room: Room, rng: random.Random, n_forks: int, steps: int) -> list[State]:
    """A room with ``n_forks`` concurrent histories of ``steps`` random valid events
    in all, some forks merged on the way by ``resolve``."""
    from pocketserver.core.state_res import resolve_state

    base = room.base(BOB, CAROL, DAVE, pl_users={ALICE: 100, BOB: 50, CAROL: 25})
    forks = [dict(base)]
    for _ in range(steps):
        i = rng.randrange(len(forks))
        roll = rng.random()
        if roll < 0.15 and len(forks) < n_forks:
            forks.append(dict(forks[i]))
        elif roll < 0.2 and len(forks) > 1:
            j = rng.choice([k for k in range(len(forks)) if k != i])
            forks[i] = resolve_state(room.version, [forks[i], forks[j]], room.events)
        else:
            with contextlib.suppress(AuthError):
                _, forks[i] = _random_event(room, rng, forks[i])
    while len(forks) < n_forks:
        forks.append(dict(forks[-1]))
    return forks
