"""Interop with a real Synapse: a partial-state join (issue #11). Synapse holds a
public room of a few hundred members (made through its admin API); a pocketserver
user joins it, Synapse answers ``send_join`` with the members omitted, the room is
usable at once, the resync fills in the members, and afterwards pocketserver's state
of the room is Synapse's."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.federation.conftest import pocket_tls_config
from tests.federation.synapse_peer import SynapsePeer, TestCA, running_synapse
from tests.federation.test_synapse_rooms import _has_message, _pocket_user, _synapse_user
from tests.harness import RunningServer, registration_mac_for_tests, running_server

pytestmark = pytest.mark.slow

MEMBERS = 200
V3 = "/_matrix/client/v3"


@pytest.fixture(scope="module")
def synapse(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[SynapsePeer]:
    fast = {"per_second": 1000, "burst_count": 1000}
    with running_synapse(
        tmp_path_factory.mktemp("synapse"), test_ca, rc_joins_per_room=fast
    ) as peer:
        yield peer


@pytest.fixture(scope="module")
def pocket(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[RunningServer]:
    config = pocket_tls_config(tmp_path_factory.mktemp("pocket"), test_ca)
    with running_server(config) as server:
        yield server
    assert "Traceback" not in server.log_text(), server.log_text()[-5000:]


def admin_token(synapse: SynapsePeer) -> str:
    with synapse.client() as c:
        nonce = c.get("/_synapse/admin/v1/register").json()["nonce"]
        mac = registration_mac_for_tests(synapse.shared_secret, nonce, "boss", "pw", True)
        r = c.post(
            "/_synapse/admin/v1/register",
            json={"nonce": nonce, "username": "boss", "password": "pw", "admin": True, "mac": mac},
        )
    r.raise_for_status()
    return str(r.json()["access_token"])


def fill(synapse: SynapsePeer, token: str, room_id: str, members: int) -> None:
    """``members`` users made and joined with the admin API (no passwords: no bcrypt)."""
    headers = {"Authorization": f"Bearer {token}"}

    def add(i: int) -> None:
        user = f"@m{i:04d}:{synapse.server_name}"
        with synapse.client() as c:
            c.headers.update(headers)
            c.put(f"/_synapse/admin/v2/users/{quote(user)}", json={}).raise_for_status()
            for _ in range(10):
                r = c.post(f"/_synapse/admin/v1/join/{quote(room_id)}", json={"user_id": user})
                if r.status_code == 200:
                    return
                time.sleep(0.3)
            r.raise_for_status()

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(add, range(members)))


def state_set(http: object, room_id: str) -> set[tuple[str, str, str]]:
    r = http.get(f"{V3}/rooms/{quote(room_id)}/state")  # type: ignore[attr-defined]
    assert r.status_code == 200, r.text
    return {(e["type"], e["state_key"], e["event_id"]) for e in r.json()}


def test_partial_state_join_of_a_synapse_room(pocket: RunningServer, synapse: SynapsePeer) -> None:
    boss = admin_token(synapse)
    owner = _synapse_user(synapse, "owner")
    room_id = owner.call(
        "POST", "/createRoom", {"preset": "public_chat", "name": "Big", "room_alias_name": "big"}
    )["room_id"]
    fill(synapse, boss, room_id, MEMBERS)
    dave = _pocket_user(pocket, "dave")

    joined = dave.call("POST", f"/join/{quote('#big:' + synapse.server_name)}", {})
    assert joined == {"room_id": room_id}
    # Usable at once: messages cross both ways.
    dave.send(room_id, "hello from the pi")
    owner.wait_for(_has_message(room_id, "hello from the pi"), "dave's message")
    owner.send(room_id, "hello from synapse")
    dave.wait_for(_has_message(room_id, "hello from synapse"), "owner's message")

    # /joined_members waits for the resync, then answers every member.
    joined_members = dave.call("GET", f"/rooms/{quote(room_id)}/joined_members")["joined"]
    assert len(joined_members) == MEMBERS + 2  # the members, the owner, dave
    deadline = time.monotonic() + 60
    while True:
        ours, theirs = state_set(dave.http, room_id), state_set(owner.http, room_id)
        if ours == theirs or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert ours == theirs
    log = pocket.log_text()
    assert "has its full state" in log, "Synapse did not answer with a partial state"
