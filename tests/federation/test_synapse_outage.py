"""Nothing acknowledged is lost across an outage and a restart (issue #10 "Tests and
acceptance"): a Synapse user is in a pocketserver room; Synapse goes down; alice keeps
talking and pocketserver restarts; when Synapse is back, it gets the room's latest
event (catch-up by the durable sender) and pulls the rest of the gap from pocketserver
(``/get_missing_events``), so bob reads every message in order."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

from tests.federation.conftest import pocket_tls_config
from tests.federation.synapse_peer import TestCA, restart_synapse, start_synapse
from tests.federation.test_synapse_rooms import WAIT_S, Client, _has_message, _pocket_user
from tests.harness import running_server


def _owed(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {
            str(r[0]) for r in conn.execute("SELECT destination FROM federation_destination_rooms")
        }
    finally:
        conn.close()


def test_messages_sent_while_synapse_is_down_arrive_after_a_restart(
    tmp_path: Path, test_ca: TestCA
) -> None:
    synapse = start_synapse(tmp_path / "synapse", test_ca)
    config = pocket_tls_config(tmp_path / "pocket", test_ca)
    db = tmp_path / "pocket" / "data" / "homeserver.db"
    try:
        with running_server(config) as pocket:
            alice = _pocket_user(pocket, "alice")
            info = synapse.register("bob")
            bob = Client(synapse.client(), info["access_token"], info["user_id"])
            room_id = alice.call("POST", "/createRoom", {"preset": "public_chat"})["room_id"]
            bob.call("POST", f"/join/{quote(room_id)}", {}, server_name=pocket.server_name)
            alice.send(room_id, "while up")
            bob.wait_for(_has_message(room_id, "while up"), "the first message")
            synapse.stop()
            for i in range(5):
                alice.send(room_id, f"while down {i}")
            # What Synapse is owed is on disk before pocketserver stops.
            deadline = time.monotonic() + 10
            while synapse.server_name not in _owed(db) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert synapse.server_name in _owed(db)
            bob.http.close()
        with running_server(config) as pocket:
            synapse = restart_synapse(synapse.directory, test_ca, synapse.host, synapse.port)
            bob = Client(synapse.client(), info["access_token"], info["user_id"])
            # Synapse contacting us (or our periodic retry) ends the backoff; alice's
            # next message certainly goes out, and Synapse fetches the gap before it.
            alice = _pocket_user(pocket, "carol")
            deadline = time.monotonic() + WAIT_S
            bodies: list[object] = []
            wanted = [f"while down {i}" for i in range(5)]
            while time.monotonic() < deadline:
                page = bob.call("GET", f"/rooms/{quote(room_id)}/messages", dir="b", limit=50)
                bodies = [ev.get("content", {}).get("body") for ev in reversed(page["chunk"])]
                if all(w in bodies for w in wanted):
                    break
                time.sleep(1)
            got = [b for b in bodies if isinstance(b, str) and b.startswith("while")]
            assert got == ["while up", *wanted], (got, synapse.log_text()[-4000:])
            bob.http.close()
            alice.http.close()
            assert "Traceback" not in pocket.log_text(), pocket.log_text()[-4000:]
    finally:
        synapse.stop()


def test_messages_synapse_sends_while_pocketserver_is_down_arrive_after_its_restart(
    tmp_path: Path, test_ca: TestCA
) -> None:
    """The other direction: pocketserver stops while bob (on Synapse) keeps talking;
    once pocketserver is back and talks to Synapse (which ends Synapse's backoff), the
    messages reach it (Synapse's catch-up, then our /get_missing_events): alice reads
    every one in order, and nothing acknowledged before the stop is lost."""
    synapse = start_synapse(tmp_path / "synapse", test_ca)
    config = pocket_tls_config(tmp_path / "pocket", test_ca)
    try:
        with running_server(config) as pocket:
            alice_info = pocket.register("alice")
            alice = Client(pocket.client(), alice_info["access_token"], alice_info["user_id"])
            info = synapse.register("bob")
            bob = Client(synapse.client(), info["access_token"], info["user_id"])
            room_id = alice.call("POST", "/createRoom", {"preset": "public_chat"})["room_id"]
            bob.call("POST", f"/join/{quote(room_id)}", {}, server_name=pocket.server_name)
            bob.send(room_id, "bob while up")
            alice.wait_for(_has_message(room_id, "bob while up"), "bob's first message")
            alice.http.close()
        wanted = [f"bob while pocket is down {i}" for i in range(5)]
        for body in wanted:
            bob.send(room_id, body)
        with running_server(config) as pocket:
            alice = Client(pocket.client(), alice_info["access_token"], alice_info["user_id"])
            alice.send(room_id, "alice is back")  # Synapse hears from us: no more backoff
            deadline = time.monotonic() + WAIT_S
            bodies: list[object] = []
            while time.monotonic() < deadline:
                page = alice.call("GET", f"/rooms/{quote(room_id)}/messages", dir="b", limit=50)
                bodies = [ev.get("content", {}).get("body") for ev in reversed(page["chunk"])]
                if all(w in bodies for w in wanted):
                    break
                time.sleep(1)
            got = [b for b in bodies if isinstance(b, str) and b.startswith("bob")]
            assert got == ["bob while up", *wanted], (got, synapse.log_text()[-3000:])
            alice.http.close()
            bob.http.close()
            assert "Traceback" not in pocket.log_text(), pocket.log_text()[-4000:]
    finally:
        synapse.stop()
