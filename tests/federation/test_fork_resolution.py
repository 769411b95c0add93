"""A room forked between two pocketservers is resolved the same on both (issue #11:
delta state resolution from the auth-chain index, end to end).

Server A (alice, the room's creator) and server B (bob, given power 100) share a
room. B is stopped; alice sets the topic and then takes bob's power away. A is
stopped and B started: bob, who still has power 100 on his branch, sets the topic
later. When both are up, each hears the other's branch: a fork whose resolution is
only right by state resolution v2 (the power levels change is sorted first, then
bob's topic fails its check against it), not by "the latest wins". Both servers end
with the same state: alice's topic and bob at power 0; and the room keeps working.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

from tests.federation.conftest import pocket_tls_config
from tests.federation.synapse_peer import TestCA
from tests.federation.test_synapse_rooms import WAIT_S, Client, _has_message
from tests.harness import RunningServer, running_server


def _client(server: RunningServer, info: dict[str, str]) -> Client:
    return Client(server.client(), info["access_token"], info["user_id"])


def _state(client: Client, room_id: str) -> dict[tuple[str, str], str]:
    events = client.call("GET", f"/rooms/{quote(room_id)}/state")
    return {(ev["type"], ev["state_key"]): ev["event_id"] for ev in events}


def _topic(client: Client, room_id: str) -> str | None:
    r = client.http.get(f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.topic")
    return r.json().get("topic") if r.status_code == 200 else None


def test_a_fork_between_two_servers_resolves_the_same_on_both(
    tmp_path: Path, test_ca: TestCA
) -> None:
    config_a = pocket_tls_config(tmp_path / "a", test_ca, host="127.0.0.2")
    config_b = pocket_tls_config(tmp_path / "b", test_ca, host="127.0.0.3")
    with running_server(config_a) as a:
        alice_info = a.register("alice")
        alice = _client(a, alice_info)
        with running_server(config_b) as b:
            bob_info = b.register("bob")
            bob = _client(b, bob_info)
            room_id = alice.call("POST", "/createRoom", {"preset": "public_chat"})["room_id"]
            bob.call("POST", f"/join/{quote(room_id)}", {}, server_name=a.server_name)
            levels = alice.call("GET", f"/rooms/{quote(room_id)}/state/m.room.power_levels")
            levels["users"][bob.user_id] = 100
            alice.call("PUT", f"/rooms/{quote(room_id)}/state/m.room.power_levels", levels)
            alice.send(room_id, "bob is an admin now")
            bob.wait_for(_has_message(room_id, "bob is an admin now"), "the power change")
            bob.http.close()
        # Branch A, while B is down: a topic, then bob loses his power.
        alice.call("PUT", f"/rooms/{quote(room_id)}/state/m.room.topic", {"topic": "from A"})
        levels["users"][bob.user_id] = 0
        alice.call("PUT", f"/rooms/{quote(room_id)}/state/m.room.power_levels", levels)
        alice.http.close()
    time.sleep(0.1)  # branch B's events are later
    with running_server(config_b) as b:
        bob = _client(b, bob_info)
        # Branch B, while A is down: bob still has power 100 here.
        bob.call("PUT", f"/rooms/{quote(room_id)}/state/m.room.topic", {"topic": "from B"})
        assert _topic(bob, room_id) == "from B"
        with running_server(config_a) as a:
            alice = _client(a, alice_info)
            alice.send(room_id, "alice is back")  # B hears from A: no more backoff
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline:
                state_a, state_b = _state(alice, room_id), _state(bob, room_id)
                if state_a == state_b and _topic(bob, room_id) == "from A":
                    break
                time.sleep(0.5)
            assert _topic(bob, room_id) == "from A", b.log_text()[-4000:]
            assert _topic(alice, room_id) == "from A"
            assert state_a == state_b
            pl = bob.call("GET", f"/rooms/{quote(room_id)}/state/m.room.power_levels")
            assert pl["users"][bob.user_id] == 0
            # The room keeps working across the merged fork, both ways.
            bob.send(room_id, "after the fork")
            alice.wait_for(_has_message(room_id, "after the fork"), "bob's message")
            alice.send(room_id, "seen")
            bob.wait_for(_has_message(room_id, "seen"), "alice's message")
            assert _state(alice, room_id) == _state(bob, room_id)
            alice.http.close()
            bob.http.close()
            for server in (a, b):
                assert "Traceback" not in server.log_text(), server.log_text()[-4000:]
