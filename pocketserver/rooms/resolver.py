"""State resolution over the database: delta resolution from the auth-chain index.

Resolving the states at a fork of a big room used to load every event of every state
set and of their auth chains (a 20,000-member room: the whole room, as parsed PDUs).
State resolution v2 only *reads* a few of them (rooms/fragments/v2-state-res.md
"Algorithm"): the full conflicted set (the conflicted events and the auth difference),
their auth events, the unconflicted events the authorisation rules look up while
the conflicted events are checked, and the power levels events the mainline ordering
walks through. So here the auth difference comes from the auth-chain index
(:func:`pocketserver.storage.auth_chain_queries.auth_difference`, integer rows) and only
those events are loaded; the pure resolver (``core.state_res``) gets them with the
difference (its ``auth_difference`` argument). Room v1 (state res v1) keeps the
full load: its algorithm sorts whole auth chains.

A big resolution runs the pure algorithm in a worker thread (one at a time), so the
event loop keeps serving other rooms while it works; every load before it is a
``db.read``, which yields as well.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import trio

from pocketserver.core.auth_rules import auth_types_for_event
from pocketserver.core.events import auth_event_ids
from pocketserver.core.room_versions import StateResAlgorithm, get_room_version
from pocketserver.core.state_res import resolve_state
from pocketserver.core.state_res_base import separate
from pocketserver.rooms.store import RoomStore
from pocketserver.storage import auth_chain_queries, auth_chains

StateKey = tuple[str, str]
Pdu = Mapping[str, object]

CREATE = ("m.room.create", "")
POWER_LEVELS = ("m.room.power_levels", "")
JOIN_RULES = ("m.room.join_rules", "")

THREAD_THRESHOLD = 200
"""Events handed to the pure resolver above which it runs in a worker thread."""
STEP_BUDGET_S = 0.02
"""How long one run of the auth difference's steps may hold a worker thread."""
THREAD_STATE_ENTRIES = 2000
"""State entries (all sets together) above which even splitting the sets into
conflicted and unconflicted state (set operations on every entry) runs in a worker
thread, and so does the pure resolver: a 20,000-member room's states take a second
of CPU on a small board, which must not stall the event loop."""


@dataclass(frozen=True, slots=True)
class Unstored:
    """An event the state sets may hold that is not stored yet (the writer resolves
    the state after a new event before it stores it)."""

    event_id: str
    pdu: Pdu
    auth_ids: Sequence[str]


@dataclass(frozen=True, slots=True)
class ResolverStatistics:
    resolutions: int
    delta_resolutions: int
    events_loaded: int
    """Events loaded for the resolutions so far (what the index saves shows here)."""


class StateResolver:
    """Resolves state sets whose events are stored (or given as :class:`Unstored`)."""

    def __init__(self, store: RoomStore) -> None:
        self.store = store
        self._limiter = trio.CapacityLimiter(1)
        self._resolutions = 0
        self._delta = 0
        self._loaded = 0

    def statistics(self) -> ResolverStatistics:
        return ResolverStatistics(self._resolutions, self._delta, self._loaded)

    async def resolve(
        self,
        room_version: str,
        states: Sequence[Mapping[StateKey, str]],
        unstored: Unstored | None = None,
    ) -> dict[StateKey, str]:
        """The resolved state of ``states`` (state resolution of the room's version).

        Args:
            room_version: The room's version.
            states: The state maps (one is returned as a copy).
            unstored: A not yet stored event that the states may hold.

        Returns:
            The resolved state map.
        """
        if len(states) == 1:
            return dict(states[0])
        self._resolutions += 1
        version = get_room_version(room_version)
        if version.state_res is StateResAlgorithm.V1:
            return await self._resolve_full(room_version, states, unstored)
        big = sum(len(s) for s in states) > THREAD_STATE_ENTRIES
        split = functools.partial(separate, states, missing_key_conflicts=True)
        if big:
            unconflicted, conflicted = await trio.to_thread.run_sync(split, limiter=self._limiter)
        else:
            unconflicted, conflicted = split()
        if not conflicted:
            return unconflicted
        self._delta += 1
        conflicted_ids = {e for ids in conflicted.values() for e in ids}
        pending = unstored if unstored is not None and unstored.event_id in conflicted_ids else None
        extra = {pending.event_id: list(pending.auth_ids)} if pending is not None else {}
        difference = await self._auth_difference([s.values() for s in states], extra)
        full = conflicted_ids | difference
        loaded: dict[str, Pdu] = {}
        if pending is not None:
            loaded[pending.event_id] = pending.pdu
        wanted = set(full)
        if version.state_res is StateResAlgorithm.V2_1:
            # The conflicted state subgraph needs the conflicted events' auth chains.
            wanted |= await self.store.auth_chain_ids(_seeds(conflicted_ids, pending))
        await self._load(wanted, loaded)
        # Their auth events, and what the auth rules look up in the unconflicted state.
        lookups = {unconflicted[k] for k in (CREATE, POWER_LEVELS, JOIN_RULES) if k in unconflicted}
        for event_id in full:
            pdu = loaded.get(event_id)
            if pdu is None:
                continue
            lookups.update(self._auth_ids(pdu, room_version))
            for key in auth_types_for_event(room_version, pdu):
                if key in unconflicted:
                    lookups.add(unconflicted[key])
        await self._load(lookups, loaded)
        await self._load_power_ancestry(loaded, room_version)
        self._loaded += len(loaded)
        resolve = functools.partial(
            resolve_state, room_version, states, loaded, auth_difference=difference
        )
        if big or len(loaded) > THREAD_THRESHOLD:
            return await trio.to_thread.run_sync(resolve, limiter=self._limiter)
        return resolve()

    async def _auth_difference(
        self, sets: Sequence[Collection[str]], unstored: Mapping[str, Sequence[str]]
    ) -> set[str]:
        """The index's auth difference, computed a time budget at a time: each run is
        one ``db.read`` of at most :data:`STEP_BUDGET_S`, with a checkpoint between."""
        holder = auth_chain_queries.Conn()
        steps = auth_chain_queries.auth_difference_steps(holder, sets, unstored)
        try:
            while True:
                done, value = await self.store.db.read(
                    auth_chain_queries.run_steps, holder, steps, STEP_BUDGET_S
                )
                if done:
                    return cast("set[str]", value)
        finally:
            steps.close()

    async def _load(self, event_ids: Iterable[str], into: dict[str, Pdu]) -> None:
        """Load the accepted events among ``event_ids`` not in ``into`` yet (rejected
        events never take part in state resolution)."""
        missing = [e for e in event_ids if e not in into]
        if not missing:
            return
        events = await self.store.get_events(missing)
        for event_id, ev in events.items():
            if ev.rejected is None:
                into[event_id] = ev.pdu

    @staticmethod
    def _auth_ids(pdu: Pdu, room_version: str) -> list[str]:
        ids = list(auth_event_ids(pdu, room_version))
        room_id = pdu.get("room_id")
        if isinstance(room_id, str) and get_room_version(room_version).hydra:
            create = auth_chains.implied_create(room_id, str(pdu.get("type")))
            if create is not None:
                ids.append(create)
        return ids

    async def _load_power_ancestry(self, loaded: dict[str, Pdu], room_version: str) -> None:
        """The mainline ordering walks from power levels events to their power levels
        auth events: load the auth events of every loaded power levels event, until no
        new one appears (a room's power levels history, not its size)."""
        expanded: set[str] = set()
        while True:
            todo = [
                e
                for e, pdu in loaded.items()
                if e not in expanded
                and pdu.get("type") == POWER_LEVELS[0]
                and pdu.get("state_key") == ""
            ]
            if not todo:
                return
            expanded.update(todo)
            await self._load(
                {a for e in todo for a in self._auth_ids(loaded[e], room_version)}, loaded
            )

    async def _resolve_full(
        self,
        room_version: str,
        states: Sequence[Mapping[StateKey, str]],
        unstored: Unstored | None,
    ) -> dict[StateKey, str]:
        """Every event of the state sets and of their auth chains (state res v1)."""
        ids = {eid for s in states for eid in s.values()}
        pending = unstored if unstored is not None and unstored.event_id in ids else None
        seeds = set(ids)
        if pending is not None:
            seeds.discard(pending.event_id)
            seeds.update(pending.auth_ids)
        chain = await self.store.auth_chain_ids(seeds) | (seeds - ids)
        loaded: dict[str, Pdu] = {}
        if pending is not None:
            loaded[pending.event_id] = pending.pdu
        await self._load(ids | chain, loaded)
        self._loaded += len(loaded)
        resolve = functools.partial(resolve_state, room_version, states, loaded)
        if len(loaded) > THREAD_THRESHOLD or sum(len(s) for s in states) > THREAD_STATE_ENTRIES:
            return await trio.to_thread.run_sync(resolve, limiter=self._limiter)
        return resolve()


def _seeds(conflicted_ids: set[str], pending: Unstored | None) -> set[str]:
    """Where the auth chains of the conflicted events start (an unstored event's own
    auth events stand in for it, and count themselves)."""
    if pending is None:
        return conflicted_ids
    return (conflicted_ids - {pending.event_id}) | set(pending.auth_ids)
