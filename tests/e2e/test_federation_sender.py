"""The federation sender in the real server: what other servers are owed is recorded in
the database as events are sent, and survives a restart. (Sending over HTTP is tested
in-process in tests/federation/ until the federation client is wired in.)"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from tests.e2e.clients import User, close_all
from tests.harness import make_config, running_server

REMOTE_USER = "@bob:remote.invalid"


def owed(db: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT r.destination, r.room_id, e.event_id FROM federation_destination_rooms r"
            " JOIN events e USING (stream_ordering) ORDER BY r.destination, r.room_id"
        ).fetchall()
        return [(str(d), str(r), str(e)) for d, r, e in rows]
    finally:
        conn.close()


def test_events_owed_to_other_servers_survive_a_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    db = tmp_path / "data" / "homeserver.db"
    with running_server(config) as server:
        alice = User(server, "alice")
        lonely = alice.create(preset="private_chat")
        alice.text(lonely, "nobody elsewhere")
        room = alice.create(preset="private_chat")
        # A ban of another server's user is this room's own state, and the banned
        # server is told (inviting a remote user needs the federation invite, #10 §4).
        r = alice.post(f"/rooms/{room}/ban", {"user_id": REMOTE_USER})
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 10
        while not owed(db) and time.monotonic() < deadline:
            time.sleep(0.05)
        recorded = owed(db)
        close_all()
    assert "Traceback" not in server.log_text(), server.log_text()
    assert len(recorded) == 1
    destination, room_id, event_id = recorded[0]
    assert (destination, room_id) == ("remote.invalid", room)
    conn = sqlite3.connect(db)
    try:
        (membership,) = conn.execute(
            "SELECT json_extract(json, '$.content.membership') FROM events WHERE event_id = ?",
            (event_id,),
        ).fetchone()
    finally:
        conn.close()
    assert membership == "ban"
    with running_server(config) as again:
        alice2 = User(again, "carol")
        alice2.create(preset="private_chat")
        close_all()
    assert owed(db) == recorded
    assert "Traceback" not in again.log_text(), again.log_text()
