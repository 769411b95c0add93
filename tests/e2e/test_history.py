"""Room history through the real server: /messages and /context, tokens from /sync,
filters, lazy-loaded members, history visibility, every error; matrix-nio paginating."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import nio
import pytest

from tests.e2e.clients import User, close_all, err
from tests.harness import RunningServer, make_config, running_server

V3 = "/_matrix/client/v3"
MESSAGES = 250


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = make_config(
        tmp_path_factory.mktemp("history"), rc_message={"per_second": 1000, "burst_count": 1000}
    )
    with running_server(config) as s:
        yield s
        close_all()
    assert "Traceback" not in s.log_text(), s.log_text()


def _bodies(chunk: list[dict[str, Any]]) -> list[str]:
    return [e["content"]["body"] for e in chunk if e["type"] == "m.room.message"]


def paginate(user: User, room: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Follow ``end`` until it is absent; return all events and the number of pages."""
    events: list[dict[str, Any]] = []
    pages = 0
    while True:
        page = user.ok(f"/rooms/{room}/messages", **params)
        pages += 1
        assert pages < 200
        events += page["chunk"]
        if "end" not in page:
            return events, pages
        assert page["end"] != params.get("from")
        params["from"] = page["end"]


@pytest.fixture(scope="module")
def big_room(server: RunningServer) -> tuple[User, str, list[str]]:
    alice = User(server, "bigalice")
    room = alice.create(name="big")
    ids = [alice.text(room, f"m{i}") for i in range(MESSAGES)]
    return alice, room, ids


def test_paginate_back_from_sync_prev_batch(big_room) -> None:
    alice, room, _ids = big_room
    flt = json.dumps({"room": {"timeline": {"limit": 10}}})
    joined = alice.sync(filter=flt)["rooms"]["join"][room]
    timeline = joined["timeline"]
    assert timeline["limited"] is True
    assert _bodies(timeline["events"]) == [f"m{i}" for i in range(MESSAGES - 10, MESSAGES)]
    events, pages = paginate(alice, room, dir="b", limit=37, **{"from": timeline["prev_batch"]})
    assert pages >= 7
    assert _bodies(events) == [f"m{i}" for i in reversed(range(MESSAGES - 10))]
    seen = [e["event_id"] for e in events] + [e["event_id"] for e in timeline["events"]]
    assert len(seen) == len(set(seen))
    # The room's beginning is reached: the create event is the last one going back.
    assert events[-1]["type"] == "m.room.create"
    assert all(e["room_id"] == room for e in events)


def test_prev_batch_of_a_whole_room_timeline(server: RunningServer) -> None:
    """A room that fits in an initial sync's timeline (not limited): paging back from its
    prev_batch gives the room from its newest event (as Synapse, whose prev_batch is then
    the sync position; SyTest "GET /rooms/:room_id/messages returns a message" needs a
    page with events and an ``end``), then a page without ``end``."""
    alice = User(server, "wholealice")
    room = alice.create(preset="public_chat")
    alice.text(room, "only")
    timeline = alice.sync()["rooms"]["join"][room]["timeline"]
    assert timeline["limited"] is False
    assert timeline["events"][0]["type"] == "m.room.create"
    ids = [e["event_id"] for e in timeline["events"]]
    page = alice.ok(f"/rooms/{room}/messages", dir="b", **{"from": timeline["prev_batch"]})
    assert [e["event_id"] for e in page["chunk"]] == ids[::-1]
    assert "end" in page
    last = alice.ok(f"/rooms/{room}/messages", dir="b", **{"from": page["end"]})
    assert last["chunk"] == []
    assert "end" not in last
    lazy = alice.ok(
        f"/rooms/{room}/messages",
        dir="b",
        filter=json.dumps({"lazy_load_members": True}),
        **{"from": timeline["prev_batch"]},
    )
    assert [(e["type"], e["state_key"]) for e in lazy["state"]] == [
        ("m.room.member", alice.user_id)
    ]
    # A timeline filter that hides the room's start changes nothing: the page still
    # ends at the room's create event and nothing is missed.
    flt = json.dumps({"room": {"timeline": {"types": ["m.room.message"]}}})
    only = alice.sync(filter=flt)["rooms"]["join"][room]["timeline"]
    assert only["limited"] is False
    assert _bodies(only["events"]) == ["only"]
    back, _ = paginate(alice, room, dir="b", **{"from": only["prev_batch"]})
    assert [e["event_id"] for e in back] == ids[::-1]


def test_prev_batch_of_limited_and_incremental_timelines(server: RunningServer) -> None:
    """Where there are earlier events, paging back from prev_batch gives exactly those:
    never the timeline again, never a gap (a limited initial sync, an incremental one)."""
    alice = User(server, "limitedalice")
    room = alice.create(preset="public_chat")
    ids = [alice.text(room, f"l{i}") for i in range(12)]
    timeline = alice.sync()["rooms"]["join"][room]["timeline"]
    assert timeline["limited"] is True
    assert [e["event_id"] for e in timeline["events"]] == ids[2:]
    back, _ = paginate(alice, room, dir="b", **{"from": timeline["prev_batch"]})
    assert _bodies(back) == ["l1", "l0"]
    assert back[-1]["type"] == "m.room.create"
    since = alice.sync()["next_batch"]
    new = alice.text(room, "later")
    inc = alice.sync(since=since)["rooms"]["join"][room]["timeline"]
    assert inc["limited"] is False
    assert [e["event_id"] for e in inc["events"]] == [new]
    page = alice.ok(f"/rooms/{room}/messages", dir="b", limit=3, **{"from": inc["prev_batch"]})
    assert [e["event_id"] for e in page["chunk"]] == ids[:-4:-1]


def test_paginate_from_next_batch_both_ways(big_room) -> None:
    alice, room, ids = big_room
    next_batch = alice.sync(filter=json.dumps({"room": {"timeline": {"limit": 1}}}))["next_batch"]
    back, _ = paginate(alice, room, dir="b", limit=100, **{"from": next_batch})
    assert [e["event_id"] for e in back if e["type"] == "m.room.message"] == ids[::-1]
    # Forwards from next_batch: nothing yet, and no end.
    page = alice.ok(f"/rooms/{room}/messages", dir="f", **{"from": next_batch})
    assert page["chunk"] == []
    assert "end" not in page
    assert page["start"] == next_batch
    # ... until something is sent.
    new = alice.text(room, "after")
    page = alice.ok(f"/rooms/{room}/messages", dir="f", **{"from": next_batch})
    assert [e["event_id"] for e in page["chunk"]] == [new]
    # A non-empty page carries end even at the live edge (as Synapse; SyTest 31sync/
    # 04timeline): the client continues from it; the empty page after it has none.
    edge = alice.ok(f"/rooms/{room}/messages", dir="f", **{"from": page["end"]})
    assert edge["chunk"] == []
    assert "end" not in edge
    later = alice.text(room, "later")
    page = alice.ok(f"/rooms/{room}/messages", dir="f", **{"from": page["end"]})
    assert [e["event_id"] for e in page["chunk"]] == [later]
    new_ids = [new, later]
    # Forwards from the start of the room sees everything, in the opposite order.
    fwd, _ = paginate(alice, room, dir="f", limit=64)
    assert [e["event_id"] for e in fwd] == [e["event_id"] for e in reversed(back)] + new_ids
    # Without from, backwards starts at the newest event.
    latest = alice.ok(f"/rooms/{room}/messages", dir="b", limit=1)
    assert [e["event_id"] for e in latest["chunk"]] == [later]
    # An empty from is no from.
    empty = alice.ok(f"/rooms/{room}/messages", dir="b", limit=1, **{"from": ""})
    assert [e["event_id"] for e in empty["chunk"]] == [later]


def test_to_token_and_start(big_room) -> None:
    alice, room, _ids = big_room
    first = alice.ok(f"/rooms/{room}/messages", dir="b", limit=5)
    second = alice.ok(f"/rooms/{room}/messages", dir="b", limit=5, **{"from": first["end"]})
    # Forwards from the second page's end up to the first page's end: the second page again.
    again = alice.ok(
        f"/rooms/{room}/messages", dir="f", limit=50, **{"from": second["end"], "to": first["end"]}
    )
    assert [e["event_id"] for e in again["chunk"]] == [
        e["event_id"] for e in reversed(second["chunk"])
    ]
    # Forwards, a page with events has an end to go on from later (as Synapse).
    assert "end" in again
    rest = alice.ok(
        f"/rooms/{room}/messages", dir="f", limit=50, **{"from": again["end"], "to": first["end"]}
    )
    assert rest["chunk"] == []
    assert "end" not in rest
    # Backwards to a token stops there.
    bounded = alice.ok(
        f"/rooms/{room}/messages", dir="b", limit=50, **{"from": first["end"], "to": second["end"]}
    )
    assert [e["event_id"] for e in bounded["chunk"]] == [e["event_id"] for e in second["chunk"]]
    # start echoes from; limit 0 returns nothing but lets the client go on.
    assert second["start"] == first["end"]
    zero = alice.ok(f"/rooms/{room}/messages", dir="b", limit=0, **{"from": first["end"]})
    assert zero["chunk"] == []
    assert zero["end"] == first["end"]
    # A huge limit is capped, not an error.
    assert len(alice.ok(f"/rooms/{room}/messages", dir="b", limit=10**9)["chunk"]) <= 1000


def test_filters_and_lazy_members(server: RunningServer) -> None:
    alice, bob = User(server, "falice"), User(server, "fbob")
    room = alice.create(preset="public_chat")
    bob.join(room)
    alice.text(room, "a1")
    bob.text(room, "b1")
    bob.send(room, {"msgtype": "m.image", "body": "pic", "url": "mxc://x/y"})
    alice.send(room, {"x": 1}, "org.example.custom")

    def chunk(**flt: Any) -> list[dict[str, Any]]:
        return alice.ok(f"/rooms/{room}/messages", dir="b", filter=json.dumps(flt))["chunk"]

    assert _bodies(chunk(types=["m.room.message"])) == ["pic", "b1", "a1"]
    assert [e["type"] for e in chunk(types=["org.example.*"])] == ["org.example.custom"]
    assert "m.room.message" not in {e["type"] for e in chunk(not_types=["m.room.*"])}
    assert {e["sender"] for e in chunk(senders=[bob.user_id])} == {bob.user_id}
    assert bob.user_id not in {e["sender"] for e in chunk(not_senders=[bob.user_id])}
    assert _bodies(chunk(contains_url=True)) == ["pic"]
    assert "pic" not in _bodies(chunk(contains_url=False))
    # A sparse filter still finds its events beyond the first rows read.
    assert len(chunk(types=["m.room.create"])) == 1
    # Lazy-loaded members: the member events of the chunk's senders.
    page = alice.ok(
        f"/rooms/{room}/messages",
        dir="b",
        limit=2,
        filter=json.dumps({"lazy_load_members": True}),
    )
    senders = {e["sender"] for e in page["chunk"]}
    members = {e["state_key"] for e in page["state"] if e["type"] == "m.room.member"}
    assert members == senders
    assert "state" not in alice.ok(f"/rooms/{room}/messages", dir="b", limit=2)


def test_visibility_left_user_and_outsiders(server: RunningServer) -> None:
    alice, bob, eve = User(server, "valice"), User(server, "vbob"), User(server, "veve")
    room = alice.create(preset="public_chat")
    alice.text(room, "before bob")
    bob.join(room)
    alice.text(room, "while bob")
    assert bob.post(f"/rooms/{room}/leave").status_code == 200
    alice.text(room, "after bob")
    seen = _bodies(paginate(bob, room, dir="b")[0])
    assert seen == ["while bob", "before bob"]  # shared history, nothing after the leave
    fwd = _bodies(paginate(bob, room, dir="f", limit=3)[0])
    assert fwd == ["before bob", "while bob"]
    # Never a member: 403.
    assert err(eve.get(f"/rooms/{room}/messages", dir="b")) == (403, "M_FORBIDDEN")
    # World-readable rooms can be read by anyone.
    r = alice.http.put(
        f"{V3}/rooms/{room}/state/m.room.history_visibility/",
        json={"history_visibility": "world_readable"},
    )
    assert r.status_code == 200
    alice.text(room, "for the world")
    assert "for the world" in _bodies(eve.ok(f"/rooms/{room}/messages", dir="b")["chunk"])
    # "joined" history: a later member does not see what came before their join.
    room2 = alice.create(preset="public_chat")
    alice.http.put(
        f"{V3}/rooms/{room2}/state/m.room.history_visibility/",
        json={"history_visibility": "joined"},
    )
    secret = alice.text(room2, "secret")
    eve.join(room2)
    alice.text(room2, "hello eve")
    assert _bodies(paginate(eve, room2, dir="b")[0]) == ["hello eve"]
    assert err(eve.get(f"/rooms/{room2}/context/{secret}")) == (404, "M_NOT_FOUND")


def test_messages_errors(server: RunningServer, big_room) -> None:
    user, room, _ = big_room
    path = f"/rooms/{room}/messages"
    assert err(user.get(path)) == (400, "M_MISSING_PARAM")
    assert err(user.get(path, dir="x")) == (400, "M_INVALID_PARAM")
    for bad in ("nope", "t", "t--3", "t-3-1", "t3-", "tx", "p_", "s1_2"):
        assert err(user.get(path, dir="b", **{"from": bad})) == (400, "M_INVALID_PARAM")
        assert err(user.get(path, dir="b", to=bad)) == (400, "M_INVALID_PARAM")
    for bad in ("ten", "-1", "1.5"):
        assert err(user.get(path, dir="b", limit=bad)) == (400, "M_INVALID_PARAM")
    assert err(user.get(path, dir="b", filter="{nope")) == (400, "M_NOT_JSON")
    assert err(user.get(path, dir="b", filter="[1]")) == (400, "M_BAD_JSON")
    assert err(user.get(path, dir="b", filter='{"types": "x"}')) == (400, "M_BAD_JSON")
    assert err(user.get("/rooms/nonsense/messages", dir="b")) == (400, "M_INVALID_PARAM")
    assert err(user.get("/rooms/!unknown:test.local/messages", dir="b")) == (403, "M_FORBIDDEN")
    r = httpx.get(user.http.base_url.join(f"{V3}{path}"), params={"dir": "b"})
    assert err(r) == (401, "M_MISSING_TOKEN")


def test_context(server: RunningServer, big_room) -> None:
    alice, room, ids = big_room
    middle = ids[100]
    ctx = alice.ok(f"/rooms/{room}/context/{middle}", limit=6)
    assert ctx["event"]["event_id"] == middle
    assert [e["event_id"] for e in ctx["events_before"]] == ids[97:100][::-1]
    assert [e["event_id"] for e in ctx["events_after"]] == ids[101:104]
    state_types = {e["type"] for e in ctx["state"]}
    assert {"m.room.create", "m.room.member", "m.room.name"} <= state_types
    # start and end continue in /messages without gaps.
    back = alice.ok(f"/rooms/{room}/messages", dir="b", limit=2, **{"from": ctx["start"]})
    assert [e["event_id"] for e in back["chunk"]] == ids[95:97][::-1]
    fwd = alice.ok(f"/rooms/{room}/messages", dir="f", limit=2, **{"from": ctx["end"]})
    assert [e["event_id"] for e in fwd["chunk"]] == ids[104:106]
    # limit 0: the event alone; the default is 10 (5 + 5).
    zero = alice.ok(f"/rooms/{room}/context/{middle}", limit=0)
    assert zero["event"]["event_id"] == middle
    assert zero["events_before"] == []
    assert zero["events_after"] == []
    default = alice.ok(f"/rooms/{room}/context/{middle}")
    assert (len(default["events_before"]), len(default["events_after"])) == (5, 5)
    # The filter applies to before, after and state, not to the event.
    lazy = alice.ok(
        f"/rooms/{room}/context/{middle}",
        limit=4,
        filter=json.dumps({"lazy_load_members": True, "not_types": ["m.room.message"]}),
    )
    assert lazy["event"]["event_id"] == middle
    assert lazy["events_before"] == [] or lazy["events_before"][0]["type"] != "m.room.message"
    assert [e["state_key"] for e in lazy["state"]] == [alice.user_id]


def test_context_errors(server: RunningServer, big_room) -> None:
    alice, room, ids = big_room
    other = alice.create()
    other_event = alice.text(other, "elsewhere")
    assert err(alice.get(f"/rooms/{room}/context/$unknown")) == (404, "M_NOT_FOUND")
    assert err(alice.get(f"/rooms/{room}/context/{other_event}")) == (404, "M_NOT_FOUND")
    assert err(alice.get(f"/rooms/{room}/context/{ids[0]}", limit="x")) == (400, "M_INVALID_PARAM")
    assert err(alice.get(f"/rooms/{room}/context/{ids[0]}", filter="{")) == (400, "M_NOT_JSON")
    stranger = User(server, "ctxstranger")
    assert err(stranger.get(f"/rooms/{other}/context/{other_event}")) == (403, "M_FORBIDDEN")


def test_nio_room_messages(server: RunningServer, big_room) -> None:
    alice, room, ids = big_room
    server.register("niohist", "nio pw")
    alice.post(f"/rooms/{room}/invite", {"user_id": f"@niohist:{server.server_name}"})

    async def scenario() -> list[str]:
        client = nio.AsyncClient(server.base_url, f"@niohist:{server.server_name}")
        try:
            assert isinstance(await client.login("nio pw"), nio.LoginResponse)
            assert isinstance(await client.join(room), nio.JoinResponse)
            synced = await client.sync(timeout=0, full_state=True)
            assert isinstance(synced, nio.SyncResponse)
            timeline = synced.rooms.join[room].timeline
            token = timeline.prev_batch
            bodies = [ev.body for ev in timeline.events if isinstance(ev, nio.RoomMessageText)]
            bodies.reverse()
            for _ in range(20):
                page = await client.room_messages(room, token, limit=50)
                assert isinstance(page, nio.RoomMessagesResponse), page
                bodies += [ev.body for ev in page.chunk if isinstance(ev, nio.RoomMessageText)]
                if page.end is None:
                    break
                token = page.end
            ctx = await client.room_context(room, ids[5], limit=2)
            assert isinstance(ctx, nio.RoomContextResponse), ctx
            assert ctx.event.event_id == ids[5]
            return bodies
        finally:
            await client.close()

    bodies = asyncio.run(scenario())
    assert [b for b in bodies if b.startswith("m")] == [f"m{i}" for i in reversed(range(MESSAGES))]


def test_topological_tokens_and_old_stream_tokens(server: RunningServer) -> None:
    """/messages and /context give ``t<depth>-<stream>`` tokens (DAG order); ``t<N>``
    stream tokens (sync prev_batch, and every token given before history went
    topological) and sync tokens keep working and agree with them."""
    alice = User(server, "topoalice")
    room = alice.create(name="topo")
    first = [alice.text(room, f"a{i}") for i in range(6)]
    next_batch = alice.sync(filter=json.dumps({"room": {"timeline": {"limit": 1}}}))["next_batch"]
    stream = int(next_batch[1:].split("_")[0])
    later = [alice.text(room, f"b{i}") for i in range(4)]
    topo = re.compile(r"t[0-9]+-[0-9]+")

    page = alice.ok(f"/rooms/{room}/messages", dir="b", limit=3)
    assert [e["event_id"] for e in page["chunk"]] == later[:0:-1]
    assert topo.fullmatch(page["end"]), page["end"]
    walked, _ = paginate(alice, room, dir="b", limit=4, **{"from": page["end"]})
    assert [e["event_id"] for e in walked if e["type"] == "m.room.message"] == [
        later[0],
        *first[::-1],
    ]
    # A stream token held from before: the boundary after stream position ``stream``
    # (the last "a" message), the same as the sync token of that moment.
    for old in (f"t{stream + 1}", next_batch):
        back = alice.ok(f"/rooms/{room}/messages", dir="b", limit=2, **{"from": old})
        assert [e["event_id"] for e in back["chunk"]] == first[:-3:-1]
        assert topo.fullmatch(back["end"])
        fwd = alice.ok(f"/rooms/{room}/messages", dir="f", limit=10, **{"from": old})
        assert [e["event_id"] for e in fwd["chunk"]] == later
        # ``to`` as a stream token bounds a topological walk.
        bounded = alice.ok(
            f"/rooms/{room}/messages", dir="b", limit=10, **{"from": page["end"], "to": old}
        )
        assert [e["event_id"] for e in bounded["chunk"]] == [later[0]]
    # Below every event (a backfilled position) and beyond the room: no error.
    assert alice.ok(f"/rooms/{room}/messages", dir="b", **{"from": "t-5"})["chunk"] == []
    everything = alice.ok(f"/rooms/{room}/messages", dir="f", limit=50, **{"from": "t-5"})
    assert [e["event_id"] for e in everything["chunk"] if e["type"] == "m.room.message"] == [
        *first,
        *later,
    ]
    beyond = alice.ok(f"/rooms/{room}/messages", dir="b", limit=1, **{"from": "t999999-0"})
    assert [e["event_id"] for e in beyond["chunk"]] == [later[-1]]
    # /context tokens are topological and continue without gaps or repeats.
    ctx = alice.ok(f"/rooms/{room}/context/{later[0]}", limit=2)
    assert topo.fullmatch(ctx["start"])
    assert topo.fullmatch(ctx["end"])
    back = alice.ok(f"/rooms/{room}/messages", dir="b", limit=2, **{"from": ctx["start"]})
    assert [e["event_id"] for e in back["chunk"]] == first[-2::-1][:2]
    fwd = alice.ok(f"/rooms/{room}/messages", dir="f", limit=2, **{"from": ctx["end"]})
    assert [e["event_id"] for e in fwd["chunk"]] == later[2:4]
    # Each bad token is a clean 400, never a 500, and reads nothing.
    for bad in ("t1-", "t1-2-3", "t-1-2", "t12a", "t" + "9" * 19 + "-1"):
        assert err(alice.get(f"/rooms/{room}/messages", dir="b", **{"from": bad})) == (
            400,
            "M_INVALID_PARAM",
        )
