"""Invites over federation both ways, rejections and knocks in rooms elsewhere
(federation/invites.py, federation/remote_memberships.py, rooms/out_of_band.py), in
process: a remote server that signs real PDUs, and a fake network for our requests.
Every refused case is checked from the attacker's side: the error, and nothing stored."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import VerifyKey

from pocketserver.cache import MemoryBudget
from pocketserver.core.crypto import (
    SignatureError,
    generate_signing_key,
    get_verify_key,
    key_id,
    sign_json,
    verify_signed_json,
)
from pocketserver.core.event_signing import verify_event_signatures
from pocketserver.core.events import compute_event_id
from pocketserver.core.redaction import redact
from pocketserver.core.room_versions import get_room_version
from pocketserver.errors import MatrixError
from pocketserver.federation.errors import FederationHttpError, FederationUnreachable
from pocketserver.federation.history import FederationHistory
from pocketserver.federation.invites import InviteReceiver
from pocketserver.federation.remote_memberships import RemoteMemberships
from pocketserver.rooms.create import RoomSettings, create_room
from pocketserver.rooms.out_of_band import OutOfBandMemberships
from pocketserver.rooms.reading import EventReader
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import PersistedEvent, RoomWriter
from pocketserver.storage import events as event_store
from pocketserver.storage import out_of_band as oob_store
from pocketserver.storage import stream as stream_store
from pocketserver.storage.db import Database
from pocketserver.streams.notifier import EVENTS, Notifier

from .conftest import ALICE, BOB, LOCAL, RBOB, REMOTE, RemoteServer, current_state, event_count

MEMBER = "m.room.member"
GHOST = f"@ghost:{LOCAL}"


class FakeRemoteNet:
    """Our outbound requests: answered by handlers per (method, verb), recorded."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str, Any]] = []
        self.handlers: dict[tuple[str, str], Callable[[str, str, Any], Any]] = {}

    def _answer(self, method: str, destination: str, path: str, body: Any) -> Any:
        self.requests.append((method, destination, path, copy.deepcopy(body)))
        verb = path.split("/")[4]
        handler = self.handlers.get((method, verb))
        if handler is None:
            raise FederationUnreachable(destination, "connection refused")
        return handler(destination, path, body)

    async def get_json(self, destination: str, path: str, **kwargs: Any) -> Any:
        return self._answer("GET", destination, path, kwargs.get("query"))

    async def put_json(self, destination: str, path: str, content: object, **kwargs: Any) -> Any:
        return self._answer("PUT", destination, path, content)


class Rig:
    def __init__(self, writer: RoomWriter, remote: RemoteServer, notifier: Notifier) -> None:
        self.writer, self.remote, self.notifier = writer, remote, notifier
        self.store: RoomStore = writer.store
        self.pushed: list[PersistedEvent] = []
        self.keys_asked: list[str] = []
        self.active = {ALICE, BOB}
        self.oob = OutOfBandMemberships(self.store, notifier, [self.pushed.append])
        self.net = FakeRemoteNet()
        local_key = get_verify_key(writer._signing_key)

        async def keys_for(
            pdu: Mapping[str, object], room_version: str
        ) -> Mapping[str, Mapping[str, VerifyKey]]:
            self.keys_asked.append(str(pdu.get("sender")).split(":", 1)[1])
            keys = {**remote.keys, LOCAL: {key_id(local_key): local_key}}
            verify_event_signatures(pdu, room_version, keys)  # raises SignatureError
            return keys

        async def user_active(user_id: str) -> bool:
            return user_id in self.active

        self.receiver = InviteReceiver(
            writer,
            FederationHistory(self.store, EventReader(self.store)),
            self.oob,
            LOCAL,
            writer._signing_key,
            keys_for,
            user_active,
        )

        async def verify_json(server: str, obj: Mapping[str, object], ts: int) -> None:
            if server != REMOTE:
                raise SignatureError(f"no keys of {server}")
            verify_signed_json(obj, server, remote.keys[REMOTE])

        self.outbound = RemoteMemberships(
            self.net, self.oob, LOCAL, writer._signing_key, keys_for, verify_json
        )


@pytest.fixture
def rig(writer: RoomWriter, remote: RemoteServer, notifier: Notifier) -> Rig:
    return Rig(writer, remote, notifier)


def _remote_room(remote: RemoteServer, version: str) -> tuple[str, dict[str, Any]]:
    """A room on the remote server: create, Bob's join, a name. Returns the room ID
    and the events by name."""
    room_id, create_id, create = remote.create_room(version, RBOB)
    join_id, join = remote.build(
        version, room_id, RBOB, MEMBER, {"membership": "join"},
        state_key=RBOB, prev=[create_id], auth=[create_id], depth=2,
    )  # fmt: skip
    auth = [join_id] if get_room_version(version).hydra else [create_id, join_id]
    name_id, name = remote.build(
        version, room_id, RBOB, "m.room.name", {"name": "Remote room"},
        state_key="", prev=[join_id], auth=auth, depth=3,
    )  # fmt: skip
    return room_id, {
        "create": (create_id, create),
        "join": (join_id, join),
        "name": (name_id, name),
        "auth": auth,
    }


def _invite(
    remote: RemoteServer, version: str, room_id: str, events: dict[str, Any], target: str = ALICE
) -> tuple[str, dict[str, Any]]:
    name_id = events["name"][0]
    return remote.build(
        version, room_id, RBOB, MEMBER, {"membership": "invite"},
        state_key=target, prev=[name_id], auth=events["auth"], depth=4,
    )  # fmt: skip


def _body(
    version: str, pdu: dict[str, Any], events: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {
        "room_version": version,
        "event": pdu,
        "invite_room_state": [events["create"][1], events["name"][1]],
        **extra,
    }


def _memberships(db: Database, user_id: str) -> dict[str, stream_store.Membership]:
    return {m.room_id: m for m in db.read_sync(stream_store.current_memberships, user_id)}


async def _refused(coro: Any, status: int, errcode: str) -> MatrixError:
    with pytest.raises(MatrixError) as caught:
        await coro
    assert (caught.value.status, caught.value.errcode) == (status, errcode), caught.value
    return caught.value


# --- inbound invites ---------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "10", "12"])
async def test_invite_to_a_room_elsewhere_is_signed_and_held_out_of_band(
    rig: Rig, remote: RemoteServer, db: Database, notifier: Notifier, version: str
) -> None:
    room_id, events = _remote_room(remote, version)
    invite_id, invite = _invite(remote, version, room_id, events)
    before = notifier.position
    answer = await rig.receiver.receive(REMOTE, room_id, invite_id, _body(version, invite, events))
    # Our signature is added over the redacted event; the remote's stays.
    local_key = get_verify_key(rig.writer._signing_key)
    verify_signed_json(redact(answer, version), LOCAL, {key_id(local_key): local_key})
    assert REMOTE in answer["signatures"]
    found = _memberships(db, ALICE)[room_id]
    assert (found.membership, found.event_id, found.out_of_band) == ("invite", invite_id, True)
    row = db.read_sync(oob_store.get, ALICE, room_id)
    assert row is not None
    assert {(s["type"], s["state_key"]) for s in row.stripped_state} == {
        ("m.room.create", ""),
        ("m.room.name", ""),
    }
    assert all(set(s) == {"type", "state_key", "content", "sender"} for s in row.stripped_state)
    assert row.servers[0] == REMOTE
    # Alice's /sync is woken; push sees the invite as a live event.
    assert notifier.position > before
    assert notifier.changed_since(ALICE, (), {EVENTS: before})
    assert not notifier.changed_since(BOB, (), {EVENTS: before})
    assert [p.event_id for p in rig.pushed] == [invite_id]
    # A retry (the inviting server did not get our answer) stores nothing twice.
    count = event_count(db)
    await rig.receiver.receive(REMOTE, room_id, invite_id, _body(version, invite, events))
    assert event_count(db) == count


async def test_out_of_band_invite_survives_a_restart(tmp_path: Path, remote: RemoteServer) -> None:
    path = tmp_path / "restart.db"
    database = Database(path, memory_bytes=16 << 20, synchronous="normal")
    store = RoomStore(database, MemoryBudget(64 << 20))
    writer = RoomWriter(store, LOCAL, generate_signing_key("a_1"), Notifier())
    rig = Rig(writer, remote, Notifier())
    room_id, events = _remote_room(remote, "10")
    invite_id, invite = _invite(remote, "10", room_id, events)
    await rig.receiver.receive(REMOTE, room_id, invite_id, _body("10", invite, events))
    database.close()
    reopened = Database(path, memory_bytes=16 << 20, synchronous="normal")
    try:
        found = _memberships(reopened, ALICE)[room_id]
        assert (found.membership, found.out_of_band) == ("invite", True)
        row = reopened.read_sync(oob_store.get, ALICE, room_id)
        assert row is not None
        assert len(row.stripped_state) == 2
    finally:
        reopened.close()


def _mutated(pdu: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(pdu)
    out.update(changes)
    return out


async def test_refused_invites_store_nothing(
    rig: Rig, remote: RemoteServer, db: Database, notifier: Notifier
) -> None:
    version = "10"
    room_id, events = _remote_room(remote, version)
    invite_id, invite = _invite(remote, version, room_id, events)
    count, position = event_count(db), notifier.position

    async def refused(
        body: dict[str, Any], status: int, errcode: str, *, origin: str = REMOTE, eid: str = ""
    ) -> MatrixError:
        return await _refused(
            rig.receiver.receive(origin, room_id, eid or invite_id, body), status, errcode
        )

    # A server inviting on behalf of a user that is not its own.
    await refused(_body(version, invite, events), 403, "M_FORBIDDEN", origin="evil.test")
    # An invite for a user of another server (we must not sign it for them).
    other_id, other = _invite(remote, version, room_id, events, target=f"@x:{REMOTE}")
    await refused(_body(version, other, events), 400, "M_INVALID_PARAM", eid=other_id)
    # A local user that does not exist, or is deactivated.
    ghost_id, ghost = _invite(remote, version, room_id, events, target=GHOST)
    await refused(_body(version, ghost, events), 403, "M_FORBIDDEN", eid=ghost_id)
    # A bad signature: the event altered after signing (the ID is recomputed to match).
    forged = _mutated(invite, origin_server_ts=invite["origin_server_ts"] + 1)
    forged_id = compute_event_id(forged, version)
    await refused(_body(version, forged, events), 403, "M_FORBIDDEN", eid=forged_id)
    # Signed by another key claiming to be the remote server.
    impostor = RemoteServer(REMOTE, "r_evil")
    _, unsigned = remote.build(
        version, room_id, RBOB, MEMBER, {"membership": "invite"},
        state_key=ALICE, prev=[events["name"][0]], auth=events["auth"], depth=4,
    )  # fmt: skip
    bare = {k: v for k, v in unsigned.items() if k not in ("signatures", "hashes")}
    imp_id, imp = impostor.sign(bare, version)
    await refused(_body(version, imp, events), 403, "M_FORBIDDEN", eid=imp_id)
    # A room version we do not know.
    err = await refused(
        {**_body(version, invite, events), "room_version": "99"}, 400, "M_INCOMPATIBLE_ROOM_VERSION"
    )
    assert err.extra == {"room_version": "99"}
    # The path's event ID is not the event's.
    await refused(_body(version, invite, events), 400, "M_INVALID_PARAM", eid="$other")
    # Not an invite.
    join_id, join = remote.build(
        version, room_id, RBOB, MEMBER, {"membership": "join"},
        state_key=ALICE, prev=[events["name"][0]], auth=events["auth"], depth=4,
    )  # fmt: skip
    await refused(_body(version, join, events), 400, "M_INVALID_PARAM", eid=join_id)
    # Another room than the path's.
    await _refused(
        rig.receiver.receive(
            REMOTE, "!elsewhere:remote.test", invite_id, _body(version, invite, events)
        ),
        400,
        "M_INVALID_PARAM",
    )
    # No body parts.
    await refused({"event": invite}, 400, "M_MISSING_PARAM")
    await refused({"room_version": version}, 400, "M_MISSING_PARAM")
    assert event_count(db) == count
    assert notifier.position == position
    assert _memberships(db, ALICE) == {}
    assert _memberships(db, GHOST) == {}
    assert rig.pushed == []


async def test_forged_invite_room_state_is_not_shown(
    rig: Rig, remote: RemoteServer, db: Database
) -> None:
    version = "10"
    room_id, events = _remote_room(remote, version)
    invite_id, invite = _invite(remote, version, room_id, events)
    impostor = RemoteServer(REMOTE, "r_evil")
    _, fake_name = impostor.build(
        version, room_id, RBOB, "m.room.topic", {"topic": "send me your password"},
        state_key="", prev=[events["join"][0]], auth=events["auth"], depth=3,
    )  # fmt: skip
    other_room_id, other_events = _remote_room(remote, version)
    body = {
        "room_version": version,
        "event": invite,
        "invite_room_state": [
            events["create"][1],
            fake_name,  # signed by a key that is not the remote's
            other_events["name"][1],  # genuine, but of another room
            {"type": "m.room.avatar", "state_key": "", "content": {"url": "mxc://r/a"},
             "sender": RBOB},  # an old-style stripped event: kept, as Synapse keeps it
            "not an event",
            {"type": "m.room.join_rules"},  # no content
        ],
    }  # fmt: skip
    await rig.receiver.receive(REMOTE, room_id, invite_id, body)
    row = db.read_sync(oob_store.get, ALICE, room_id)
    assert row is not None
    assert [(s["type"], s["content"]) for s in row.stripped_state] == [
        ("m.room.create", events["create"][1]["content"]),
        ("m.room.avatar", {"url": "mxc://r/a"}),
    ]
    assert other_room_id != room_id


async def test_stripped_state_signed_by_many_servers_costs_few_key_fetches(
    rig: Rig, remote: RemoteServer, db: Database
) -> None:
    version = "10"
    room_id, events = _remote_room(remote, version)
    invite_id, invite = _invite(remote, version, room_id, events)
    others = []
    for n in range(10):
        server = RemoteServer(f"s{n}.test")
        _, pdu = server.build(
            version, room_id, f"@u:s{n}.test", "m.room.topic", {"topic": str(n)},
            state_key="", prev=[events["join"][0]], auth=events["auth"], depth=3,
        )  # fmt: skip
        others.append(pdu)
    body = {"room_version": version, "event": invite, "invite_room_state": others}
    rig.keys_asked.clear()
    await rig.receiver.receive(REMOTE, room_id, invite_id, body)
    asked_for_state = [s for s in rig.keys_asked if s != REMOTE]
    assert len(set(asked_for_state)) <= 4
    row = db.read_sync(oob_store.get, ALICE, room_id)
    assert row is not None
    assert row.stripped_state == []  # none of them is validly signed


async def test_invite_to_a_room_we_hold_goes_through_the_writer(
    rig: Rig, writer: RoomWriter, remote: RemoteServer, db: Database
) -> None:
    room_id = await create_room(
        writer, ALICE, RoomSettings(room_version="10", preset="public_chat")
    )
    await remote.send(writer, room_id, RBOB, MEMBER, {"membership": "join"}, RBOB)
    invite_id, invite = await remote.event(
        writer, room_id, RBOB, MEMBER, {"membership": "invite"}, BOB
    )
    answer = await rig.receiver.receive(
        REMOTE, room_id, invite_id, {"room_version": "10", "event": invite}
    )
    assert LOCAL in answer["signatures"]
    assert current_state(db, room_id)[(MEMBER, BOB)] == invite_id
    assert _memberships(db, BOB)[room_id].out_of_band is False
    assert db.read_sync(oob_store.get, BOB, room_id) is None
    # In a room we hold, the invite is room state like any member event: a user ID of
    # ours without an account may be invited, as Synapse accepts it (SyTest
    # 50server-acl-endpoints); nothing is kept out of band for it.
    ghost_id, ghost = await remote.event(
        writer, room_id, RBOB, MEMBER, {"membership": "invite"}, GHOST
    )
    await rig.receiver.receive(REMOTE, room_id, ghost_id, {"room_version": "10", "event": ghost})
    assert current_state(db, room_id)[(MEMBER, GHOST)] == ghost_id
    assert db.read_sync(oob_store.get, GHOST, room_id) is None
    # An invite the room's auth rules refuse (the sender is not in the room) is refused
    # and changes nothing.
    stranger = f"@stranger:{REMOTE}"
    bad_id, bad = await remote.event(
        writer, room_id, stranger, MEMBER, {"membership": "invite"}, ALICE
    )
    state = current_state(db, room_id)
    await _refused(
        rig.receiver.receive(REMOTE, room_id, bad_id, {"room_version": "10", "event": bad}),
        403,
        "M_FORBIDDEN",
    )
    assert current_state(db, room_id) == state
    assert _memberships(db, ALICE)[room_id].membership == "join"
    # The wrong room version for a room we hold is refused.
    invite2_id, invite2 = await remote.event(
        writer, room_id, RBOB, MEMBER, {"membership": "invite"}, ALICE
    )
    await _refused(
        rig.receiver.receive(REMOTE, room_id, invite2_id, {"room_version": "9", "event": invite2}),
        400,
        "M_INVALID_PARAM",
    )


# --- rejecting a remote invite -------------------------------------------------------------


async def _held_invite(rig: Rig, remote: RemoteServer, version: str = "10") -> tuple[str, str]:
    room_id, events = _remote_room(remote, version)
    invite_id, invite = _invite(remote, version, room_id, events)
    rig.remote_events = events  # type: ignore[attr-defined]
    await rig.receiver.receive(REMOTE, room_id, invite_id, _body(version, invite, events))
    return room_id, invite_id


@pytest.mark.parametrize("version", ["1", "10", "12"])
async def test_reject_goes_through_make_and_send_leave(
    rig: Rig, remote: RemoteServer, db: Database, notifier: Notifier, version: str
) -> None:
    room_id, invite_id = await _held_invite(rig, remote, version)
    events = rig.remote_events  # type: ignore[attr-defined]
    sent: list[dict[str, Any]] = []

    def make_leave(destination: str, path: str, query: Any) -> Any:
        assert destination == REMOTE
        template: dict[str, Any] = {
            "type": MEMBER, "room_id": room_id, "sender": ALICE, "state_key": ALICE,
            "content": {"membership": "leave"}, "depth": 5, "origin_server_ts": 1,
            "prev_events": remote._edges(version, [invite_id], {invite_id: _stored(db, invite_id)}),
            "auth_events": remote._edges(version, [*events["auth"], invite_id],
                                         {**remote.pdus, invite_id: _stored(db, invite_id)}),
        }  # fmt: skip
        if get_room_version(version).event_ids_in_pdu:
            template["origin"] = REMOTE
        return {"room_version": version, "event": template}

    def send_leave(destination: str, path: str, body: Any) -> Any:
        sent.append(body)
        return {}

    rig.net.handlers[("GET", "make_leave")] = make_leave
    rig.net.handlers[("PUT", "send_leave")] = send_leave
    row = db.read_sync(oob_store.get, ALICE, room_id)
    assert row is not None
    before = notifier.position
    await rig.outbound.leave(ALICE, row, "no thanks")
    assert len(sent) == 1
    leave = sent[0]
    assert leave["content"] == {"membership": "leave", "reason": "no thanks"}
    local_key = get_verify_key(rig.writer._signing_key)
    verify_signed_json(redact(leave, version), LOCAL, {key_id(local_key): local_key})
    found = _memberships(db, ALICE)[room_id]
    assert (found.membership, found.out_of_band) == ("leave", True)
    assert notifier.changed_since(ALICE, (), {EVENTS: before})
    path = rig.net.requests[-1][2]
    assert path.startswith("/_matrix/federation/v2/send_leave/")


def _stored(db: Database, event_id: str) -> dict[str, Any]:
    ev = db.read_sync(event_store.get_event, event_id)
    assert ev is not None
    return ev.pdu


async def test_reject_when_the_inviting_server_is_gone_is_local(
    rig: Rig, remote: RemoteServer, db: Database
) -> None:
    room_id, invite_id = await _held_invite(rig, remote)
    row = db.read_sync(oob_store.get, ALICE, room_id)
    assert row is not None
    await rig.outbound.leave(ALICE, row, None)  # every request fails: unreachable
    assert rig.net.requests, "the servers were tried first"
    found = _memberships(db, ALICE)[room_id]
    assert (found.membership, found.out_of_band) == ("leave", True)
    leave = _stored(db, found.event_id)
    assert leave["prev_events"] == [invite_id]
    assert leave["sender"] == ALICE
    assert leave["content"] == {"membership": "leave"}
    local_key = get_verify_key(rig.writer._signing_key)
    verify_signed_json(redact(leave, "10"), LOCAL, {key_id(local_key): local_key})


async def test_a_wrong_leave_template_is_not_signed(
    rig: Rig, remote: RemoteServer, db: Database
) -> None:
    """A server answering make_leave with another event (a join of the user, or
    another user's leave) gets nothing signed; the rejection is then local."""
    room_id, _ = await _held_invite(rig, remote)
    for wrong in ({"membership": "join"}, {"membership": "leave"}):
        rig.net.handlers[("GET", "make_leave")] = lambda d, p, q, w=wrong: {
            "room_version": "10",
            "event": {"type": MEMBER, "room_id": room_id, "sender": ALICE,
                      "state_key": ALICE if w["membership"] == "join" else BOB,
                      "content": w, "depth": 5, "prev_events": [], "auth_events": [],
                      "origin_server_ts": 1},
        }  # fmt: skip
        rig.net.handlers[("PUT", "send_leave")] = lambda d, p, b: pytest.fail("signed it")
        row = db.read_sync(oob_store.get, ALICE, room_id)
        assert row is not None
        await rig.outbound.leave(ALICE, row, None)
    assert _memberships(db, ALICE)[room_id].membership == "leave"


# --- outbound invites ----------------------------------------------------------------------


def _invitee_server_signs(remote: RemoteServer) -> Callable[[str, str, Any], Any]:
    def answer(destination: str, path: str, body: Any) -> Any:
        assert destination == REMOTE
        event = body["event"]
        version = body["room_version"]
        signed = sign_json(redact(event, version), REMOTE, remote.signing_key)
        out = dict(event)
        out["signatures"] = {**event["signatures"], REMOTE: signed["signatures"][REMOTE]}
        return {"event": out}

    return answer


async def _local_room(writer: RoomWriter, version: str = "10") -> str:
    return await create_room(
        writer, ALICE, RoomSettings(room_version=version, preset="private_chat", name="Here")
    )


@pytest.mark.parametrize("version", ["1", "10", "12"])
async def test_outbound_invite_is_countersigned_then_stored(
    rig: Rig, writer: RoomWriter, remote: RemoteServer, db: Database, version: str
) -> None:
    room_id = await _local_room(writer, version)
    rig.net.handlers[("PUT", "invite")] = _invitee_server_signs(remote)
    persisted = await writer.send_event(
        room_id, ALICE, MEMBER, {"membership": "invite"}, RBOB, remote_sign=rig.outbound.sign_invite
    )
    assert current_state(db, room_id)[(MEMBER, RBOB)] == persisted.event_id
    stored = _stored(db, persisted.event_id)
    assert set(stored["signatures"]) == {LOCAL, REMOTE}
    method, destination, path, body = rig.net.requests[-1]
    assert (method, destination) == ("PUT", REMOTE)
    assert path.startswith("/_matrix/federation/v2/invite/")
    assert body["room_version"] == version
    types = [e["type"] for e in body["invite_room_state"]]
    assert "m.room.create" in types
    assert "m.room.name" in types
    # Full PDUs (MSC4311), as Synapse 1.163 sends them.
    assert all("signatures" in e and "hashes" in e for e in body["invite_room_state"])


async def test_outbound_invite_refused_or_unreachable_stores_nothing(
    rig: Rig, writer: RoomWriter, remote: RemoteServer, db: Database
) -> None:
    room_id = await _local_room(writer)
    count, state = event_count(db), current_state(db, room_id)

    async def invite() -> PersistedEvent:
        return await writer.send_event(
            room_id, ALICE, MEMBER, {"membership": "invite"}, RBOB,
            remote_sign=rig.outbound.sign_invite,
        )  # fmt: skip

    def refuse(d: str, p: str, b: Any) -> Any:
        raise FederationHttpError(d, 403, "M_FORBIDDEN", "not welcome", None)

    rig.net.handlers[("PUT", "invite")] = refuse
    await _refused(invite(), 403, "M_FORBIDDEN")
    del rig.net.handlers[("PUT", "invite")]  # unreachable
    await _refused(invite(), 502, "M_UNKNOWN")

    def incompatible(d: str, p: str, b: Any) -> Any:
        raise FederationHttpError(d, 400, "M_INVALID_PARAM", "bad", None)

    rig.net.handlers[("PUT", "invite")] = incompatible
    await _refused(invite(), 502, "M_UNKNOWN")

    # An answer that is another event, or our event without a valid signature.
    def altered(d: str, p: str, b: Any) -> Any:
        answer = _invitee_server_signs(remote)(d, p, b)
        answer["event"]["content"] = {"membership": "join"}
        return answer

    def unsigned(d: str, p: str, b: Any) -> Any:
        return {"event": b["event"]}

    def impostor(d: str, p: str, b: Any) -> Any:
        return _invitee_server_signs(RemoteServer(REMOTE, "r_evil"))(d, p, b)

    for bad in (altered, unsigned, impostor, lambda d, p, b: {"nothing": 1}):
        rig.net.handlers[("PUT", "invite")] = bad
        await _refused(invite(), 502, "M_UNKNOWN")
    assert event_count(db) == count
    assert current_state(db, room_id) == state


def _v2_unknown(status: int, errcode: str | None) -> Callable[[str, str, Any], Any]:
    def answer(d: str, p: str, b: Any) -> Any:
        raise FederationHttpError(d, status, errcode, None, None)

    return answer


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize(("status", "errcode"), [(404, None), (400, "M_UNRECOGNIZED")])
async def test_outbound_invite_falls_back_to_v1(
    rig: Rig,
    writer: RoomWriter,
    remote: RemoteServer,
    db: Database,
    version: str,
    status: int,
    errcode: str | None,
) -> None:
    """A server without ``v2/invite`` is asked ``v1/invite`` in rooms of versions 1-2
    (the event as the body, the stripped state in its unsigned, the answer in
    ``[200, {...}]``), as Synapse does (SyTest 35room-invite.pl)."""
    room_id = await _local_room(writer, version)
    v2_unknown = _v2_unknown(status, errcode)

    def answer(d: str, p: str, b: Any) -> Any:
        if p.startswith("/_matrix/federation/v2/"):
            return v2_unknown(d, p, b)
        event = b
        signed = sign_json(redact(event, version), REMOTE, remote.signing_key)
        out = dict(event)
        out["signatures"] = {**event["signatures"], REMOTE: signed["signatures"][REMOTE]}
        return [200, {"event": out}]

    rig.net.handlers[("PUT", "invite")] = answer
    persisted = await writer.send_event(
        room_id, ALICE, MEMBER, {"membership": "invite"}, RBOB, remote_sign=rig.outbound.sign_invite
    )
    assert current_state(db, room_id)[(MEMBER, RBOB)] == persisted.event_id
    assert set(_stored(db, persisted.event_id)["signatures"]) == {LOCAL, REMOTE}
    paths = [path for _, _, path, _ in rig.net.requests]
    assert paths[0].startswith("/_matrix/federation/v2/invite/")
    assert paths[1].startswith("/_matrix/federation/v1/invite/")
    body = rig.net.requests[1][3]
    assert body["event_id"] == persisted.event_id
    assert body["state_key"] == RBOB
    types = [e["type"] for e in body["unsigned"]["invite_room_state"]]
    assert "m.room.create" in types


async def test_outbound_invite_no_v1_fallback_for_later_versions_or_real_errors(
    rig: Rig, writer: RoomWriter, remote: RemoteServer, db: Database
) -> None:
    """v1/invite carries only v1/v2 events: a v3+ room answers 400
    ``M_UNSUPPORTED_ROOM_VERSION`` (as Synapse); a 404 with an errcode (the endpoint
    exists) is passed on and v1 is not asked. Nothing is stored."""
    room_id = await _local_room(writer, "10")
    old_room = await _local_room(writer, "1")
    count = event_count(db)
    states = {r: current_state(db, r) for r in (room_id, old_room)}

    def invite(room: str) -> Any:
        return writer.send_event(
            room, ALICE, MEMBER, {"membership": "invite"}, RBOB,
            remote_sign=rig.outbound.sign_invite,
        )  # fmt: skip

    rig.net.handlers[("PUT", "invite")] = _v2_unknown(404, None)
    await _refused(invite(room_id), 400, "M_UNSUPPORTED_ROOM_VERSION")
    assert all("/v2/" in path for _, _, path, _ in rig.net.requests)
    rig.net.handlers[("PUT", "invite")] = _v2_unknown(404, "M_NOT_FOUND")
    await _refused(invite(old_room), 404, "M_NOT_FOUND")
    assert all("/v2/" in path for _, _, path, _ in rig.net.requests)
    # v1 itself unknown or wrongly answered: 502, nothing stored.
    rig.net.handlers[("PUT", "invite")] = _v2_unknown(404, None)
    await _refused(invite(old_room), 502, "M_UNKNOWN")
    rig.net.handlers[("PUT", "invite")] = lambda d, p, b: (
        _v2_unknown(404, None)(d, p, b) if "/v2/" in p else [500, {"event": b}]
    )
    await _refused(invite(old_room), 502, "M_UNKNOWN")
    assert event_count(db) == count
    assert {r: current_state(db, r) for r in states} == states


@pytest.mark.parametrize(("version", "accepted"), [("6", False), ("12", False), ("5", True)])
async def test_outbound_invite_answer_with_a_float_is_bad_json(
    rig: Rig, writer: RoomWriter, remote: RemoteServer, db: Database, version: str, accepted: bool
) -> None:
    """The invitee's server returns our invite, validly signed, with a float added (not
    covered by the event ID or signatures): in v6+ rooms that is not canonical JSON,
    400 ``M_BAD_JSON`` as Synapse (SyTest 35room-invite.pl), nothing stored; before
    v6 floats are allowed and the invite goes through."""
    room_id = await _local_room(writer, version)
    count, state = event_count(db), current_state(db, room_id)

    def floaty(d: str, p: str, b: Any) -> Any:
        b["event"]["bad_val"] = 1.1
        return _invitee_server_signs(remote)(d, p, b)

    rig.net.handlers[("PUT", "invite")] = floaty
    invite = writer.send_event(
        room_id, ALICE, MEMBER, {"membership": "invite"}, RBOB, remote_sign=rig.outbound.sign_invite
    )
    if accepted:
        persisted = await invite
        assert current_state(db, room_id)[(MEMBER, RBOB)] == persisted.event_id
        return
    await _refused(invite, 400, "M_BAD_JSON")
    assert event_count(db) == count
    assert current_state(db, room_id) == state


async def test_an_invite_the_auth_rules_refuse_is_never_sent(
    rig: Rig, writer: RoomWriter, db: Database
) -> None:
    room_id = await _local_room(writer)
    rig.net.handlers[("PUT", "invite")] = lambda d, p, b: pytest.fail("sent")
    # Bob (local) is not in the room: he may not invite.
    await _refused(
        writer.send_event(
            room_id,
            BOB,
            MEMBER,
            {"membership": "invite"},
            RBOB,
            remote_sign=rig.outbound.sign_invite,
        ),
        403,
        "M_FORBIDDEN",
    )
    assert rig.net.requests == []


# --- knocking on a room elsewhere -------------------------------------------------------------


async def test_knock_through_make_and_send_knock(
    rig: Rig, remote: RemoteServer, db: Database
) -> None:
    version = "10"
    room_id, events = _remote_room(remote, version)

    def make_knock(destination: str, path: str, query: Any) -> Any:
        assert "10" in query["ver"]
        return {
            "room_version": version,
            "event": {"type": MEMBER, "room_id": room_id, "sender": ALICE, "state_key": ALICE,
                      "content": {"membership": "knock"}, "depth": 4, "origin_server_ts": 1,
                      "prev_events": [events["name"][0]], "auth_events": events["auth"]},
        }  # fmt: skip

    def send_knock(destination: str, path: str, body: Any) -> Any:
        assert body["content"] == {"membership": "knock", "reason": "let me in"}
        return {"knock_room_state": [events["create"][1], events["name"][1]]}

    rig.net.handlers[("GET", "make_knock")] = make_knock
    rig.net.handlers[("PUT", "send_knock")] = send_knock
    await rig.outbound.knock(ALICE, room_id, [REMOTE], "let me in")
    found = _memberships(db, ALICE)[room_id]
    assert (found.membership, found.out_of_band) == ("knock", True)
    row = db.read_sync(oob_store.get, ALICE, room_id)
    assert row is not None
    assert {s["type"] for s in row.stripped_state} == {"m.room.create", "m.room.name"}
    # Withdrawn: the server we knocked through is asked first; it is gone, so locally.
    await rig.outbound.leave(ALICE, row, None)
    assert _memberships(db, ALICE)[room_id].membership == "leave"


async def test_knock_refused_stores_nothing(rig: Rig, remote: RemoteServer, db: Database) -> None:
    room_id, _ = _remote_room(remote, "10")

    def refuse(d: str, p: str, q: Any) -> Any:
        raise FederationHttpError(d, 403, "M_FORBIDDEN", "You are not allowed to knock", None)

    rig.net.handlers[("GET", "make_knock")] = refuse
    count = event_count(db)
    await _refused(rig.outbound.knock(ALICE, room_id, [REMOTE], None), 403, "M_FORBIDDEN")
    rig.net.handlers.clear()
    await _refused(rig.outbound.knock(ALICE, room_id, [REMOTE], None), 502, "M_UNKNOWN")
    assert event_count(db) == count
    assert _memberships(db, ALICE) == {}


async def test_inbound_invites_are_rate_limited_per_invitee(
    writer: RoomWriter, remote: RemoteServer, notifier: Notifier, db: Database
) -> None:
    """``rc_invites`` per invitee: a server flooding one of our users with genuine
    invites gets 429 past the burst, and the refused invite is not stored."""
    from pocketserver.config.model import RateLimit, RoomRateLimits
    from pocketserver.rooms.limits import RoomActionLimits

    rig = Rig(writer, remote, notifier)
    rig.receiver._limits = RoomActionLimits(RoomRateLimits(invites_per_user=RateLimit(0.001, 2)))
    rooms = [_remote_room(remote, "10") for _ in range(3)]
    for room_id, events in rooms[:2]:
        invite_id, invite = _invite(remote, "10", room_id, events)
        await rig.receiver.receive(REMOTE, room_id, invite_id, _body("10", invite, events))
    room_id, events = rooms[2]
    invite_id, invite = _invite(remote, "10", room_id, events)
    await _refused(
        rig.receiver.receive(REMOTE, room_id, invite_id, _body("10", invite, events)),
        429,
        "M_LIMIT_EXCEEDED",
    )
    assert room_id not in _memberships(db, ALICE)
    assert len(_memberships(db, ALICE)) == 2
