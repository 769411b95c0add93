"""Relations, threads and bundled aggregations through the real server: edits,
reactions, threads, references, redactions, recursion, the threads list, /sync
bundles, every error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.clients import User, close_all, err
from tests.harness import RunningServer, make_config, running_server

V1 = "/_matrix/client/v1"
V3 = "/_matrix/client/v3"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = make_config(
        tmp_path_factory.mktemp("relations"), rc_message={"per_second": 1000, "burst_count": 1000}
    )
    with running_server(config) as s:
        yield s
        close_all()
    assert "Traceback" not in s.log_text(), s.log_text()


def rel(rel_type: str, parent: str, **content: Any) -> dict[str, Any]:
    return {
        "msgtype": "m.text",
        "body": "x",
        **content,
        "m.relates_to": {"rel_type": rel_type, "event_id": parent},
    }


def relations(user: User, room: str, *parts: str, **params: Any) -> httpx.Response:
    path = "/".join((f"{V1}/rooms/{room}/relations", *parts))
    return user.http.get(path, params=params)


def ids(chunk: list[dict[str, Any]]) -> list[str]:
    return [e["event_id"] for e in chunk]


def event(user: User, room: str, event_id: str) -> dict[str, Any]:
    return user.ok(f"/rooms/{room}/event/{event_id}")


def m_relations(ev: dict[str, Any]) -> dict[str, Any]:
    return dict(ev.get("unsigned", {}).get("m.relations", {}))


@pytest.fixture(scope="module")
def pair(server: RunningServer) -> tuple[User, User, str]:
    alice, bob = User(server, "ralice"), User(server, "rbob")
    room = alice.create(preset="public_chat")
    bob.join(room)
    return alice, bob, room


def test_edits_bundle_latest_valid(pair) -> None:
    alice, bob, room = pair
    original = alice.text(room, "I like cake")
    edit1 = alice.send(
        room, rel("m.replace", original, **{"m.new_content": {"msgtype": "m.text", "body": "1"}})
    )
    edit2 = alice.send(
        room, rel("m.replace", original, **{"m.new_content": {"msgtype": "m.text", "body": "2"}})
    )
    # Not valid: someone else's edit, an edit without m.new_content.
    bob.send(
        room, rel("m.replace", original, **{"m.new_content": {"msgtype": "m.text", "body": "bob"}})
    )
    alice.send(room, rel("m.replace", original))
    got = event(alice, room, original)
    assert got["content"]["body"] == "I like cake"  # the original content is left intact
    replace = m_relations(got)["m.replace"]
    assert replace["event_id"] == edit2
    assert replace["content"]["m.new_content"]["body"] == "2"
    assert replace["sender"] == alice.user_id
    assert replace["room_id"] == room
    # All edits are listed by /relations, newest first.
    listed = relations(alice, room, original, "m.replace").json()
    assert len(listed["chunk"]) == 4
    assert listed["chunk"][-1]["event_id"] == edit1
    # Redacting the newest edit falls back to the one before.
    assert alice.http.put(f"{V3}/rooms/{room}/redact/{edit2}/r1", json={}).status_code == 200
    assert m_relations(event(alice, room, original))["m.replace"]["event_id"] == edit1
    assert edit2 not in ids(relations(alice, room, original).json()["chunk"])
    # A redacted original gets no m.replace bundle.
    assert alice.http.put(f"{V3}/rooms/{room}/redact/{original}/r2", json={}).status_code == 200
    assert "m.replace" not in m_relations(event(alice, room, original))


def test_reactions_listed_not_bundled(pair) -> None:
    alice, bob, room = pair
    msg = alice.text(room, "react to me")
    reaction = bob.send(
        room,
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": msg, "key": "👍"}},
        "m.reaction",
    )
    other = alice.send(
        room,
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": msg, "key": "🎉"}},
        "m.reaction",
    )
    assert m_relations(event(alice, room, msg)) == {}
    chunk = relations(alice, room, msg, "m.annotation").json()["chunk"]
    assert ids(chunk) == [other, reaction]
    assert ids(relations(alice, room, msg, "m.annotation", "m.reaction").json()["chunk"]) == [
        other,
        reaction,
    ]
    assert relations(alice, room, msg, "m.annotation", "m.room.message").json()["chunk"] == []
    assert relations(alice, room, msg, "m.thread").json()["chunk"] == []
    # A redacted reaction disappears.
    assert bob.http.put(f"{V3}/rooms/{room}/redact/{reaction}/r3", json={}).status_code == 200
    assert ids(relations(alice, room, msg).json()["chunk"]) == [other]


def test_thread_bundle_and_references(server: RunningServer, pair) -> None:
    alice, bob, room = pair
    carol = User(server, "rcarol")
    carol.join(room)
    root = alice.text(room, "thread root")
    replies = [bob.send(room, rel("m.thread", root, body=f"reply {i}")) for i in range(3)]
    edit = bob.send(
        room,
        rel("m.replace", replies[-1], **{"m.new_content": {"msgtype": "m.text", "body": "r2!"}}),
    )
    ref = carol.send(room, rel("m.reference", root))
    bundle = m_relations(event(alice, room, root))
    thread = bundle["m.thread"]
    assert thread["count"] == 3
    assert thread["latest_event"]["event_id"] == replies[-1]
    assert thread["current_user_participated"] is True  # alice sent the root
    assert m_relations(thread["latest_event"])["m.replace"]["event_id"] == edit
    assert bundle["m.reference"] == {"chunk": [{"event_id": ref}]}
    assert m_relations(event(carol, room, root))["m.thread"]["current_user_participated"] is False
    assert m_relations(event(bob, room, root))["m.thread"]["current_user_participated"] is True
    # Bundles in /messages, /context and /relations too.
    page = alice.ok(f"/rooms/{room}/messages", dir="b", limit=20)
    by_id = {e["event_id"]: e for e in page["chunk"]}
    assert m_relations(by_id[root])["m.thread"]["count"] == 3
    assert m_relations(by_id[replies[-1]])["m.replace"]["event_id"] == edit
    ctx = alice.ok(f"/rooms/{room}/context/{root}", limit=2)
    assert m_relations(ctx["event"])["m.thread"]["count"] == 3
    listed = relations(alice, room, root, "m.thread").json()["chunk"]
    assert ids(listed) == replies[::-1]
    assert m_relations(listed[0])["m.replace"]["event_id"] == edit
    # A redacted reply no longer counts.
    assert bob.http.put(f"{V3}/rooms/{room}/redact/{replies[-1]}/r4", json={}).status_code == 200
    thread = m_relations(event(alice, room, root))["m.thread"]
    assert (thread["count"], thread["latest_event"]["event_id"]) == (2, replies[1])


def test_relations_pagination_and_recursion(pair) -> None:
    alice, bob, room = pair
    root = alice.text(room, "parent")
    children = [bob.send(room, rel("m.reference", root, body=f"c{i}")) for i in range(7)]
    grandchild = alice.send(
        room,
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": children[0], "key": "k"}},
        "m.reaction",
    )
    great = bob.send(room, rel("m.reference", grandchild))
    greater = bob.send(room, rel("m.reference", great))
    # Default: newest first, 5 at a time, then next_batch.
    first = relations(alice, room, root).json()
    assert ids(first["chunk"]) == children[::-1][:5]
    assert "prev_batch" not in first
    assert "recursion_depth" not in first
    second = relations(alice, room, root, **{"from": first["next_batch"]}).json()
    assert ids(second["chunk"]) == children[1::-1]
    assert second["prev_batch"] == first["next_batch"]
    assert "next_batch" not in second
    # Forwards, oldest first.
    fwd = relations(alice, room, root, dir="f", limit=4).json()
    assert ids(fwd["chunk"]) == children[:4]
    rest = relations(alice, room, root, dir="f", limit=4, **{"from": fwd["next_batch"]}).json()
    assert ids(rest["chunk"]) == children[4:]
    assert "next_batch" not in rest
    # to: stop at an earlier page's token.
    bounded = relations(alice, room, root, limit=50, to=first["next_batch"]).json()
    assert ids(bounded["chunk"]) == children[::-1][:5]
    # Recursion: three levels, not four; rel_type filters every level.
    deep = relations(alice, room, root, limit=50, recurse="true").json()
    assert deep["recursion_depth"] == 3
    assert ids(deep["chunk"]) == [great, grandchild, *children[::-1]]
    assert greater not in ids(deep["chunk"])
    flat = relations(alice, room, root, limit=50, recurse="false").json()
    assert ids(flat["chunk"]) == children[::-1]
    assert flat["recursion_depth"] == 1
    refs = relations(alice, room, root, "m.reference", limit=50, recurse="true").json()
    assert great not in ids(refs["chunk"])  # reached only through an annotation
    # A /messages token works as from.
    token = alice.ok(f"/rooms/{room}/messages", dir="b", limit=1)["start"]
    assert (
        ids(relations(alice, room, root, limit=50, **{"from": token}).json()["chunk"])
        == children[::-1]
    )


def test_relations_errors(server: RunningServer, pair) -> None:
    alice, bob, room = pair
    msg = alice.text(room, "p")
    other_room = alice.create()
    elsewhere = alice.text(other_room, "q")
    assert err(relations(alice, room, "$nope")) == (404, "M_NOT_FOUND")
    assert err(relations(alice, room, elsewhere)) == (404, "M_NOT_FOUND")
    assert err(relations(bob, other_room, elsewhere)) == (403, "M_FORBIDDEN")
    assert err(relations(alice, "!unknown:test.local", msg)) == (403, "M_FORBIDDEN")
    assert err(relations(alice, "bad", msg)) == (400, "M_INVALID_PARAM")
    assert err(relations(alice, room, msg, dir="x")) == (400, "M_INVALID_PARAM")
    assert err(relations(alice, room, msg, recurse="yes")) == (400, "M_INVALID_PARAM")
    assert err(relations(alice, room, msg, limit="-2")) == (400, "M_INVALID_PARAM")
    assert err(relations(alice, room, msg, **{"from": "garbage"})) == (400, "M_INVALID_PARAM")
    assert err(relations(alice, room, msg, to="t")) == (400, "M_INVALID_PARAM")
    r = httpx.get(alice.http.base_url.join(f"{V1}/rooms/{room}/relations/{msg}"))
    assert err(r) == (401, "M_MISSING_TOKEN")


def test_threads_list(server: RunningServer) -> None:
    alice, bob = User(server, "talice"), User(server, "tbob")
    room = alice.create(preset="public_chat")
    bob.join(room)
    t1 = alice.text(room, "t1")
    t2 = bob.text(room, "t2")
    t3 = bob.text(room, "t3")
    alice.send(room, rel("m.thread", t1))
    bob.send(room, rel("m.thread", t2))
    bob.send(room, rel("m.thread", t3))
    bob.send(room, rel("m.thread", t1))  # t1 is now the most recently active
    alice.text(room, "not a thread")

    def threads(user: User, **params: Any) -> dict[str, Any]:
        r = user.http.get(f"{V1}/rooms/{room}/threads", params=params)
        assert r.status_code == 200, r.text
        return dict(r.json())

    listed = threads(alice)
    assert ids(listed["chunk"]) == [t1, t3, t2]
    assert "next_batch" not in listed
    assert m_relations(listed["chunk"][0])["m.thread"]["count"] == 2
    assert ids(threads(alice, include="participated")["chunk"]) == [t1]
    assert ids(threads(bob, include="participated")["chunk"]) == [t1, t3, t2]
    # Pagination.
    page = threads(alice, limit=1)
    seen = ids(page["chunk"])
    while "next_batch" in page:
        page = threads(alice, limit=1, **{"from": page["next_batch"]})
        seen += ids(page["chunk"])
    assert seen == [t1, t3, t2]
    # Errors.
    for params, expected in (
        ({"include": "some"}, (400, "M_INVALID_PARAM")),
        ({"limit": "0"}, (400, "M_INVALID_PARAM")),
        ({"limit": "x"}, (400, "M_INVALID_PARAM")),
        ({"from": "zzz"}, (400, "M_INVALID_PARAM")),
    ):
        assert err(alice.http.get(f"{V1}/rooms/{room}/threads", params=params)) == expected
    stranger = User(server, "tstranger")
    assert err(stranger.http.get(f"{V1}/rooms/{room}/threads")) == (403, "M_FORBIDDEN")


def test_sync_bundles_on_limited_timelines(server: RunningServer) -> None:
    alice = User(server, "salice")
    room = alice.create()
    root = alice.text(room, "root")
    reply = alice.send(room, rel("m.thread", root))
    for i in range(5):
        alice.text(room, f"filler {i}")
    limited = alice.sync(filter=json.dumps({"room": {"timeline": {"limit": 7}}}))
    timeline = limited["rooms"]["join"][room]["timeline"]
    assert timeline["limited"] is True
    by_id = {e["event_id"]: e for e in timeline["events"]}
    assert m_relations(by_id[root])["m.thread"]["latest_event"]["event_id"] == reply
    # Not limited: the client aggregates what it receives itself.
    since = limited["next_batch"]
    root2 = alice.text(room, "root2")
    alice.send(room, rel("m.thread", root2))
    later = alice.sync(since=since)["rooms"]["join"][room]["timeline"]
    assert later["limited"] is False
    assert all("m.relations" not in e["unsigned"] for e in later["events"])


def test_sending_refuses_bad_relations(pair) -> None:
    alice, bob, room = pair
    root = alice.text(room, "root")
    reply = bob.send(room, rel("m.thread", root))
    # A thread cannot start from an event with a relation.
    r = alice.http.put(f"{V3}/rooms/{room}/send/m.room.message/bad1", json=rel("m.thread", reply))
    assert err(r) == (400, "M_UNKNOWN")
    # The same annotation twice: refused; a retry of the first transaction is not.
    react = {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}}
    first = alice.http.put(f"{V3}/rooms/{room}/send/m.reaction/re1", json=react)
    assert first.status_code == 200
    again = alice.http.put(f"{V3}/rooms/{room}/send/m.reaction/re1", json=react)
    assert again.json()["event_id"] == first.json()["event_id"]
    dup = alice.http.put(f"{V3}/rooms/{room}/send/m.reaction/re2", json=react)
    assert err(dup) == (400, "M_DUPLICATE_ANNOTATION")
    # Another key, another user: fine; after a redaction, the same key is fine again.
    other = {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "🎉"}}
    assert alice.http.put(f"{V3}/rooms/{room}/send/m.reaction/re3", json=other).status_code == 200
    assert bob.http.put(f"{V3}/rooms/{room}/send/m.reaction/re4", json=react).status_code == 200
    redacted = first.json()["event_id"]
    assert alice.http.put(f"{V3}/rooms/{room}/redact/{redacted}/rr", json={}).status_code == 200
    assert alice.http.put(f"{V3}/rooms/{room}/send/m.reaction/re5", json=react).status_code == 200
    assert len(relations(alice, room, root, "m.annotation").json()["chunk"]) == 3


def test_ignored_users_hidden(server: RunningServer) -> None:
    alice, bob, eve = User(server, "ialice"), User(server, "ibob"), User(server, "ieve")
    room = alice.create(preset="public_chat")
    bob.join(room)
    eve.join(room)
    root = alice.text(room, "root")
    bob.send(room, rel("m.thread", root, body="from bob"))
    eve_reply = eve.send(room, rel("m.thread", root, body="from eve"))
    eve.text(room, "eve speaks")
    r = bob.http.put(
        f"{V3}/user/{bob.user_id}/account_data/m.ignored_user_list",
        json={"ignored_users": {eve.user_id: {}}},
    )
    assert r.status_code == 200, r.text
    page = bob.ok(f"/rooms/{room}/messages", dir="b", limit=50)["chunk"]
    assert eve.user_id not in {e["sender"] for e in page if "state_key" not in e}
    assert eve.user_id in {e["state_key"] for e in page if e["type"] == "m.room.member"}
    thread = m_relations(event(bob, room, root))["m.thread"]
    assert thread["count"] == 1
    assert thread["latest_event"]["sender"] == bob.user_id
    assert eve_reply not in ids(relations(bob, room, root).json()["chunk"])
    # Alice ignores nobody: she sees both.
    assert m_relations(event(alice, room, root))["m.thread"]["count"] == 2
