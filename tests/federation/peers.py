"""In-process fake federation peers for keyring tests: real ed25519 keys, real
signatures, and a fake network that records every request."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import trio
import trio.lowlevel

from pocketserver.core.crypto import (
    NamedSigningKey,
    generate_signing_key,
    get_verify_key,
    key_id,
    make_server_keys_response,
    sign_json,
)

DAY_MS = 24 * 3600 * 1000


class FakePeer:
    """A server with a real signing key that publishes /_matrix/key/v2/server."""

    def __init__(self, name: str, clock: Callable[[], int], version: str = "peer1") -> None:
        self.name = name
        self.clock = clock
        self.key: NamedSigningKey = generate_signing_key(version)
        self.old: dict[str, tuple[object, int]] = {}
        self.valid_for_ms = DAY_MS
        self.up = True
        self.tamper = False
        self.answer_as: str | None = None  # publish keys under another server's name

    @property
    def key_id(self) -> str:
        return key_id(self.key)

    def keys_response(self) -> dict[str, object]:
        body = make_server_keys_response(
            self.answer_as or self.name,
            self.key,
            self.old,  # type: ignore[arg-type]
            self.clock() + self.valid_for_ms,
        )
        if self.tamper:
            body["valid_until_ts"] = int(body["valid_until_ts"]) + 1  # type: ignore[call-overload]
        return body

    def rotate(self, version: str, expired_ts: int) -> None:
        """Retire the current key into old_verify_keys and start a new one."""
        self.old[self.key_id] = (get_verify_key(self.key), expired_ts)
        self.key = generate_signing_key(version)

    def sign(self, obj: Mapping[str, object]) -> dict[str, object]:
        return sign_json(obj, self.name, self.key)


class FakeNotary(FakePeer):
    """A notary that remembers peers' key answers and serves them countersigned."""

    def __init__(self, name: str, clock: Callable[[], int]) -> None:
        super().__init__(name, clock, "notary1")
        self.remembered: dict[str, dict[str, object]] = {}
        self.queries: list[Mapping[str, object]] = []

    def remember(self, peer: FakePeer) -> None:
        self.remembered[peer.name] = peer.keys_response()

    def answer(self, body: Mapping[str, object]) -> dict[str, object]:
        self.queries.append(body)
        asked = body["server_keys"]
        assert isinstance(asked, dict)
        return {
            "server_keys": [
                self.sign(self.remembered[name]) for name in asked if name in self.remembered
            ]
        }


class FakeNetwork:
    """A KeyFetchClient: routes requests to fake peers and records them."""

    def __init__(self) -> None:
        self.peers: dict[str, FakePeer] = {}
        self.requests: list[tuple[str, str, str]] = []
        self.gate: trio.Event | None = None

    def add(self, peer: FakePeer) -> FakePeer:
        self.peers[peer.name] = peer
        return peer

    def count(self, destination: str, method: str = "GET") -> int:
        return sum(1 for m, d, _ in self.requests if d == destination and m == method)

    async def get_json(self, destination: str, path: str) -> object:
        self.requests.append(("GET", destination, path))
        if self.gate is not None:
            await self.gate.wait()
        await trio.lowlevel.checkpoint()
        peer = self.peers.get(destination)
        if peer is None or not peer.up:
            raise ConnectionError(f"{destination} is unreachable")
        assert path == "/_matrix/key/v2/server"
        return peer.keys_response()

    async def post_json(self, destination: str, path: str, body: Mapping[str, object]) -> object:
        self.requests.append(("POST", destination, path))
        await trio.lowlevel.checkpoint()
        peer = self.peers.get(destination)
        if not isinstance(peer, FakeNotary) or not peer.up:
            raise ConnectionError(f"{destination} is unreachable")
        assert path == "/_matrix/key/v2/query"
        return peer.answer(body)
