"""Joins of big rooms end to end (issue #11): the real server (a subprocess on
127.0.0.2) joins a room of a few hundred members held by the big-room test peer
(tests/federation/big_room_peer.py, 127.0.0.1), reads and sends at once, and ends up
holding exactly the peer's state."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.federation.big_room_peer import BigRoomPeer, running_big_peer
from tests.federation.conftest import pocket_tls_config
from tests.federation.synapse_peer import TestCA
from tests.harness import RunningServer, running_server, start_server

pytestmark = pytest.mark.slow

V3 = "/_matrix/client/v3"
MEMBERS = 300


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[BigRoomPeer]:
    with running_big_peer(tmp_path_factory.mktemp("big"), test_ca, MEMBERS, 400) as p:
        yield p


@pytest.fixture
def pocket(tmp_path: Path, test_ca: TestCA) -> Iterator[RunningServer]:
    with running_server(pocket_tls_config(tmp_path / "pocket", test_ca)) as server:
        yield server
    assert "Traceback" not in server.log_text(), server.log_text()[-5000:]


def held_state(server: RunningServer, room_id: str) -> dict[tuple[str, str], str]:
    database = server.config["database"]["args"]["database"]  # type: ignore[index]
    path = server.config_path.parent / str(database)
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT type, state_key, event_id FROM current_state WHERE room_id = ?", (room_id,)
        )
        return {(t, k): e for t, k, e in rows}


def synced_members(answer: dict[str, Any], room_id: str) -> int:
    """Members in a sync answer's state and timeline of the room."""
    room = answer["rooms"]["join"][room_id]
    events = room["state"]["events"] + room["timeline"]["events"]
    return len({e["state_key"] for e in events if e["type"] == "m.room.member"})


def join_and_use(pocket: RunningServer, peer: BigRoomPeer) -> tuple[str, dict[str, str]]:
    """Join the peer's room, see it in /sync and send into it; the joiner's login."""
    login = pocket.register("joiner")
    room_id = peer.room.room_id
    with pocket.client() as c:
        c.headers["Authorization"] = f"Bearer {login['access_token']}"
        r = c.post(f"{V3}/join/{quote(room_id)}", params={"server_name": peer.server_name}, json={})
        assert r.status_code == 200, r.text
        # As Element syncs (lazy-loaded members): answered at once, even while partial.
        lazy = '{"room": {"state": {"lazy_load_members": true}}}'
        answer = c.get(f"{V3}/sync", params={"timeout": "0", "filter": lazy}).json()
        joined = answer["rooms"]["join"][room_id]
        names = [e for e in joined["state"]["events"] if e["type"] == "m.room.name"]
        assert names
        assert names[0]["content"]["name"] == f"Big room of {MEMBERS}"
        r = c.put(
            f"{V3}/rooms/{quote(room_id)}/send/m.room.message/t1",
            json={"msgtype": "m.text", "body": "hello big room"},
        )
        assert r.status_code == 200, r.text
        sent = r.json()["event_id"]
    deadline = time.monotonic() + 30
    while peer.room.event_text(sent) is None:  # our sender delivered it to the peer
        assert time.monotonic() < deadline, "the message never reached the peer"
        time.sleep(0.1)
    return room_id, login


def test_full_join_of_a_big_room_holds_the_peers_state(
    pocket: RunningServer, peer: BigRoomPeer
) -> None:
    peer.room.extras.clear()
    peer.honour_omit_members = False
    room_id, _ = join_and_use(pocket, peer)
    assert held_state(pocket, room_id) == peer.room.full_state()
    assert len(peer.room.full_state()) == 400 + 1  # the generated state and our join


def wait_for_full_state(pocket: RunningServer, peer: BigRoomPeer, timeout_s: float = 60) -> None:
    room_id = peer.room.room_id
    deadline = time.monotonic() + timeout_s
    while held_state(pocket, room_id) != peer.room.full_state():
        assert time.monotonic() < deadline, "the resync never completed"
        time.sleep(0.2)


def test_partial_join_is_usable_at_once_and_resyncs_to_the_peers_state(
    pocket: RunningServer, peer: BigRoomPeer
) -> None:
    peer.room.extras.clear()
    peer.honour_omit_members = True
    peer.stats.omit_members_asked = 0
    peer.state_gate.clear()  # hold the resync until the room was used
    try:
        room_id, login = join_and_use(pocket, peer)
        assert peer.stats.omit_members_asked == 1
        held = held_state(pocket, room_id)
        members = [k for k in held if k[0] == "m.room.member"]
        assert members == [("m.room.member", login["user_id"])]  # partial: ours only
    finally:
        peer.state_gate.set()
    wait_for_full_state(pocket, peer)
    with pocket.client() as c:
        c.headers["Authorization"] = f"Bearer {login['access_token']}"
        # A sync without lazy loading has every member.
        answer = c.get(f"{V3}/sync", params={"timeout": "0"}).json()
        assert synced_members(answer, room_id) == MEMBERS + 2
        r = c.get(f"{V3}/rooms/{quote(room_id)}/joined_members")
        assert r.status_code == 200, r.text
        assert len(r.json()["joined"]) == MEMBERS + 2  # the owner, the members, us


def test_members_and_a_sync_without_lazy_loading_wait_for_the_resync(
    pocket: RunningServer, peer: BigRoomPeer
) -> None:
    peer.room.extras.clear()
    peer.honour_omit_members = True
    peer.state_gate.clear()
    timer = threading.Timer(3.0, peer.state_gate.set)
    timer.start()
    try:
        room_id, login = join_and_use(pocket, peer)
        with pocket.client() as c:
            c.headers["Authorization"] = f"Bearer {login['access_token']}"
            c.timeout = 60
            answer = c.get(f"{V3}/sync", params={"timeout": "0"}).json()
            assert synced_members(answer, room_id) == MEMBERS + 2
            r = c.get(f"{V3}/rooms/{quote(room_id)}/members")
        assert r.status_code == 200, r.text
        assert len(r.json()["chunk"]) == MEMBERS + 2
    finally:
        timer.cancel()
        peer.state_gate.set()


def test_a_restart_in_the_middle_of_a_resync_resumes_it(
    tmp_path: Path, test_ca: TestCA, peer: BigRoomPeer
) -> None:
    """The server is killed (SIGKILL: no clean shutdown) while the peer holds its
    ``/state`` answer back; started again, it resyncs the room from the start and ends
    with the peer's state: nothing lost, nothing twice."""
    peer.room.extras.clear()
    peer.honour_omit_members = True
    config = pocket_tls_config(tmp_path / "pocket", test_ca)
    peer.state_gate.clear()
    peer.stats.requests.clear()
    try:
        server = start_server(config)
        try:
            room_id, login = join_and_use(server, peer)
            deadline = time.monotonic() + 30
            while not any("/v1/state/" in r for r in peer.stats.requests):
                assert time.monotonic() < deadline, "no resync started"
                time.sleep(0.1)
        finally:
            server.stop(signal.SIGKILL)
    finally:
        peer.state_gate.set()
    assert len(held_state(server, room_id)) < len(peer.room.full_state())
    with running_server(config) as again:
        wait_for_full_state(again, peer)
        database = again.config["database"]["args"]["database"]  # type: ignore[index]
        with sqlite3.connect(again.config_path.parent / str(database)) as conn:
            partial = conn.execute("SELECT count(*) FROM partial_state_rooms").fetchone()[0]
            events = conn.execute(
                "SELECT count(*), count(DISTINCT event_id) FROM events WHERE room_id = ?",
                (room_id,),
            ).fetchone()
        assert partial == 0
        assert events[0] == events[1]
        # Every state event of the peer's, our join and our message, once each.
        assert events[0] == len(peer.room.full_state()) + 1
        with again.client() as c:
            c.headers["Authorization"] = f"Bearer {login['access_token']}"
            r = c.get(f"{V3}/rooms/{quote(room_id)}/joined_members")
            assert r.status_code == 200, r.text
            assert len(r.json()["joined"]) == MEMBERS + 2
        assert "Traceback" not in again.log_text(), again.log_text()[-5000:]
