"""Fixtures for federation tests. Real servers on loopback addresses: pocketserver on
127.0.0.2, Synapse on 127.0.0.1, each with an IP-literal server name and an explicit
port, and a certificate from one throw-away CA that both trust. And for the federation
sender: the room fixtures (a real database and room
writer), an in-process fake of the other servers, and a sender running in a nursery."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

from pocketserver.cache import MemoryBudget
from pocketserver.core.crypto import generate_signing_key
from pocketserver.federation.sender import FederationSender, FederationSendError
from pocketserver.rooms.create import RoomSettings, create_room
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage.db import Database
from pocketserver.streams.notifier import Notifier
from tests.federation.synapse_peer import SynapsePeer, TestCA, free_port, running_synapse
from tests.harness import RunningServer, make_config, running_server

from ..rooms.conftest import ALICE, LOCAL, REMOTE, RemoteServer

JOIN = {"membership": "join"}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "fed.db", memory_bytes=16 << 20, synchronous="normal")
    yield database
    database.close()


@pytest.fixture
def store(db: Database) -> RoomStore:
    return RoomStore(db, MemoryBudget(64 << 20))


@pytest.fixture
def writer(store: RoomStore) -> RoomWriter:
    return RoomWriter(store, LOCAL, generate_signing_key("a_1"), Notifier())


@pytest.fixture
def remote() -> RemoteServer:
    return RemoteServer(REMOTE)


@dataclass
class Sent:
    destination: str
    txn_id: str
    body: dict[str, Any]

    @property
    def bodies(self) -> list[str]:
        return [p["content"].get("body", p["type"]) for p in self.body["pdus"]]

    def edus(self, edu_type: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.body["edus"] if edu_type is None or e["edu_type"] == edu_type]


@dataclass
class FakeFederation:
    """The other servers: records every transaction; a server can be down (no
    answer) or held (its next transactions wait until released)."""

    sent: list[Sent] = field(default_factory=list)
    down: set[str] = field(default_factory=set)
    attempts: Counter[str] = field(default_factory=Counter)
    in_flight: Counter[str] = field(default_factory=Counter)
    most_in_flight: Counter[str] = field(default_factory=Counter)
    gate: trio.Event | None = None

    async def put_json(
        self,
        destination: str,
        path: str,
        body: dict[str, object],
        timeout: float,  # noqa: ASYNC109 (the sender's interface)
    ) -> dict[str, object]:
        assert path.startswith("/_matrix/federation/v1/send/")
        assert timeout > 0
        self.attempts[destination] += 1
        self.in_flight[destination] += 1
        self.most_in_flight[destination] = max(
            self.most_in_flight[destination], self.in_flight[destination]
        )
        try:
            if self.gate is not None:
                await self.gate.wait()
            await trio.lowlevel.checkpoint()
            if destination in self.down:
                raise FederationSendError(f"{destination}: connection refused")
            self.sent.append(Sent(destination, path.rsplit("/", 1)[1], copy.deepcopy(body)))
            return {"pdus": {}}
        finally:
            self.in_flight[destination] -= 1

    def to(self, destination: str) -> list[Sent]:
        return [s for s in self.sent if s.destination == destination]


class FakeClock:
    """Wall-clock milliseconds the test moves by hand (backoff is stored in these)."""

    def __init__(self) -> None:
        self.ms = 1_700_000_000_000

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def fed() -> FakeFederation:
    return FakeFederation()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll ``condition`` (it reads the database or the fake's records) until it holds."""
    with trio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 (nothing to wait on: a condition to poll)
            await trio.sleep(0.01)


async def settle() -> None:
    """Let the sender's tasks (and their database threads) run for a while."""
    for _ in range(20):
        await trio.sleep(0.01)


@dataclass
class Running:
    sender: FederationSender
    scope: trio.CancelScope


class SenderHarness:
    """Starts and stops senders over one database, as restarts of the server would."""

    def __init__(
        self,
        nursery: trio.Nursery,
        db: Database,
        store: RoomStore,
        writer: RoomWriter,
        fed: FakeFederation,
        clock: FakeClock,
    ) -> None:
        self.nursery, self.db, self.store, self.writer = nursery, db, store, writer
        self.fed, self.clock = fed, clock
        self.current: Running | None = None

    async def start(self, **kwargs: Any) -> FederationSender:
        options: dict[str, Any] = {
            "now_ms": self.clock,
            "wake_spacing_s": 0.0,
            "wake_period_s": 0.05,
            "short_retries": (),
        }
        options.update(kwargs)
        sender = FederationSender(self.db, self.store, LOCAL, self.fed, **options)
        self.writer.add_listener(sender.on_persisted)
        scope = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await sender.run(task_status=task_status)

        await self.nursery.start(run)
        self.current = Running(sender, scope)
        return sender

    async def stop(self) -> None:
        assert self.current is not None
        self.writer._listeners.remove(self.current.sender.on_persisted)
        self.current.scope.cancel()
        await settle()
        self.current = None


@pytest.fixture
async def harness(
    db: Database, store: RoomStore, writer: RoomWriter, fed: FakeFederation, clock: FakeClock
) -> AsyncIterator[SenderHarness]:
    async with trio.open_nursery() as nursery:
        yield SenderHarness(nursery, db, store, writer, fed, clock)
        nursery.cancel_scope.cancel()


async def room_with(writer: RoomWriter, *servers: RemoteServer) -> str:
    """A public room of ALICE's that a user of each remote server joined."""
    room_id = await create_room(
        writer, ALICE, RoomSettings(room_version="10", preset="public_chat")
    )
    for server in servers:
        user = f"@user:{server.name}"
        joined = await server.send(writer, room_id, user, "m.room.member", JOIN, user)
        assert joined.accepted, joined.rejected
    return room_id


async def say(writer: RoomWriter, room_id: str, *bodies: str) -> None:
    for body in bodies:
        await writer.send_event(
            room_id, ALICE, "m.room.message", {"msgtype": "m.text", "body": body}
        )


# --- real servers on loopback -----------------------------------------------------------


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def synapse(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[SynapsePeer]:
    with running_synapse(tmp_path_factory.mktemp("synapse"), test_ca) as peer:
        yield peer


def pocket_tls_config(
    directory: Path, ca: TestCA, host: str = "127.0.0.2", **overrides: object
) -> Path:
    """A pocketserver config for federating on loopback: named ``host:port`` (an IP
    literal, so peers need no DNS), a TLS listener on that port for federation, keys and
    media, with a certificate from the test CA, and a plain HTTP client listener on
    another port first (``RunningServer.base_url``, so test clients need no CA). It
    trusts the test CA and may reach loopback only."""
    port = free_port(host)
    cert, key = ca.issue(host, f"pocket-{host}")
    values: dict[str, object] = {
        "listeners": [
            {
                "port": 0,
                "bind_addresses": [host],
                "type": "http",
                "x_forwarded": False,
                "resources": [{"names": ["client", "media"]}],
            },
            {
                "port": port,
                "bind_addresses": [host],
                "type": "http",
                "tls": True,
                "x_forwarded": False,
                "resources": [{"names": ["client", "federation", "keys", "media", "openid"]}],
            },
        ],
        "tls_certificate_path": str(cert),
        "tls_private_key_path": str(key),
        "federation_custom_ca_list": [str(ca.ca_path)],
        "ip_range_whitelist": ["127.0.0.0/8"],
        "rc_message": {"per_second": 1000, "burst_count": 1000},
    }
    values.update(overrides)
    return make_config(directory, server_name=f"{host}:{port}", **values)


def federation_url(server: RunningServer) -> str:
    """Where other servers reach ``server``: its TLS listener, named by its server name."""
    return f"https://{server.server_name}"


@pytest.fixture(scope="module")
def pocket_tls(
    tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA
) -> Iterator[RunningServer]:
    with running_server(pocket_tls_config(tmp_path_factory.mktemp("pocket"), test_ca)) as server:
        yield server
