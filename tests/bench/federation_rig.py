"""What the federation benches share: real servers on loopback and a small client.

pocketserver runs on 127.0.0.2 (tests/federation/conftest.py ``pocket_tls_config``),
Synapse on 127.0.0.1 and a second Synapse on 127.0.0.3 (tests/federation/synapse_peer.py),
all named by IP literal and port and trusting one throw-away CA, as in the interop tests.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.federation.conftest import pocket_tls_config  # noqa: E402
from tests.federation.synapse_peer import SynapsePeer, TestCA, running_synapse  # noqa: E402
from tests.harness import RunningServer, running_server  # noqa: E402

V3 = "/_matrix/client/v3"
# Synapse hashes passwords with bcrypt: cheap rounds, so that registering 50 members is
# quick; and 50 members join one room faster than its default of one join a second.
SYNAPSE_OVERRIDES: dict[str, object] = {
    "bcrypt_rounds": 4,
    "rc_joins_per_room": {"per_second": 1000, "burst_count": 1000},
}


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def quiesce(pid: int, timeout_s: float = 60.0) -> None:
    """Wait until a server is idle (less than 20 ms CPU in 0.5 s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = cpu_s(pid)
        time.sleep(0.5)
        if cpu_s(pid) - before < 0.02:
            return


class Client:
    """A logged-in user of either server (httpx, synchronous)."""

    def __init__(self, http: httpx.Client, login: dict[str, str]) -> None:
        self.http = http
        self.http.headers["Authorization"] = f"Bearer {login['access_token']}"
        self.user_id = login["user_id"]
        self.since: str | None = None
        self._txn = 0

    def call(self, method: str, path: str, body: object = None, **params: Any) -> Any:
        r = self.http.request(method, V3 + path, json=body, params=params or None)
        if r.status_code != 200:
            raise RuntimeError(f"{self.user_id}: {method} {path}: {r.status_code} {r.text}")
        return r.json()

    def send(self, room_id: str, body: str) -> str:
        self._txn += 1
        path = f"/rooms/{quote(room_id)}/send/m.room.message/b{self._txn}-{time.time_ns()}"
        return str(self.call("PUT", path, {"msgtype": "m.text", "body": body})["event_id"])

    def sync_to_now(self) -> None:
        self.since = self.call("GET", "/sync", timeout=0)["next_batch"]

    def wait_for(
        self, found: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 60.0
    ) -> None:
        """Long-poll /sync from the last position until ``found`` holds for the timeline
        events of one answer."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            answer = self.call("GET", "/sync", since=self.since, timeout=30000)
            self.since = answer["next_batch"]
            events = [
                ev
                for room in answer.get("rooms", {}).get("join", {}).values()
                for ev in room.get("timeline", {}).get("events", [])
            ]
            if found(events):
                return
        raise RuntimeError(f"{self.user_id}: not seen in {timeout_s}s")

    def close(self) -> None:
        self.http.close()


def has_body(body: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda events: any(ev.get("content", {}).get("body") == body for ev in events)


@dataclass
class Servers:
    ca: TestCA
    pocket: RunningServer | None
    synapse: SynapsePeer
    synapse2: SynapsePeer | None


@contextlib.contextmanager
def servers(work: Path, *, pocket: bool = True, second_synapse: bool = True) -> Iterator[Servers]:
    """Start the servers; stop them on the way out."""
    ca = TestCA(work / "ca")
    with contextlib.ExitStack() as stack:
        peer = stack.enter_context(running_synapse(work / "synapse", ca, **SYNAPSE_OVERRIDES))
        peer2 = None
        if second_synapse:
            peer2 = stack.enter_context(
                running_synapse(work / "synapse2", ca, host="127.0.0.3", **SYNAPSE_OVERRIDES)
            )
        server = None
        if pocket:
            (work / "pocket").mkdir()
            server = stack.enter_context(running_server(pocket_tls_config(work / "pocket", ca)))
        yield Servers(ca, server, peer, peer2)


def pocket_user(server: RunningServer, name: str) -> Client:
    return Client(server.client(), server.register(name))


def synapse_user(peer: SynapsePeer, name: str) -> Client:
    return Client(peer.client(), peer.register(name))


def room_with_remote(owner: Client, owner_server: str, guest: Client, alias: str) -> str:
    """A public room of ``owner`` that ``guest`` (of another server) joined by alias."""
    room_id = str(owner.call("POST", "/createRoom", {"preset": "public_chat"})["room_id"])
    full_alias = f"#{alias}:{owner_server}"
    owner.call("PUT", f"/directory/room/{quote(full_alias)}", {"room_id": room_id})
    joined = guest.call("POST", f"/join/{quote(full_alias)}", {})
    if joined["room_id"] != room_id:
        raise RuntimeError(f"joined {joined} instead of {room_id}")
    return room_id
