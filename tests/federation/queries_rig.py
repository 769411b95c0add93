"""A scripted other server for the client side of federation queries: answers (or
failures) per (destination, path), every request recorded."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from pocketserver.federation.errors import FederationHttpError


def http_error(destination: str, status: int, errcode: str | None = None) -> FederationHttpError:
    return FederationHttpError(destination, status, errcode, "scripted", None)


@dataclass
class Asked:
    method: str
    destination: str
    path: str
    query: dict[str, Any]
    content: Any


@dataclass
class ScriptedRemote:
    """``answers[(destination, path)]``: a JSON value, an exception to raise, or a
    callable ``(Asked) -> value`` (which may raise)."""

    answers: dict[tuple[str, str], object] = field(default_factory=dict)
    asked: list[Asked] = field(default_factory=list)

    def set(self, destination: str, path: str, answer: object) -> None:
        self.answers[(destination, path)] = answer

    async def _answer(self, asked: Asked) -> Any:
        self.asked.append(asked)
        await trio.lowlevel.checkpoint()
        answer = self.answers.get((asked.destination, asked.path))
        if answer is None:
            raise http_error(asked.destination, 404, "M_UNRECOGNIZED")
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            answer = answer(asked)
        return copy.deepcopy(answer)

    async def get_json(
        self,
        destination: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        timeout_s: float = 60.0,
        max_size: int = 1 << 20,
    ) -> Any:
        return await self._answer(Asked("GET", destination, path, dict(query or {}), None))

    async def post_json(
        self,
        destination: str,
        path: str,
        content: object,
        *,
        query: Mapping[str, Any] | None = None,
        timeout_s: float = 60.0,
        max_size: int = 1 << 20,
    ) -> Any:
        return await self._answer(Asked("POST", destination, path, dict(query or {}), content))

    def to(self, destination: str, path_start: str = "") -> list[Asked]:
        return [
            a for a in self.asked if a.destination == destination and a.path.startswith(path_start)
        ]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- our server answering a signed peer, in process -----------------------------------


@dataclass
class ServingEnv:
    """Our app (``client`` and ``federation``), a fake peer whose keys our keyring
    fetches from a fake network, and our services."""

    app: Any
    peer: Any
    services: Any
    net: Any

    async def get(self, uri: str, peer: Any = None) -> tuple[int, Any]:
        from pocketserver.federation.xmatrix import authorization_header

        who = peer or self.peer
        header = authorization_header(
            who.name, self.services.config.server_name, who.key, "GET", uri, None
        )
        r = await self.app.test_client().get(uri, headers={"Authorization": header})
        return r.status_code, await r.get_json()

    async def post(self, uri: str, body: Any, peer: Any = None) -> tuple[int, Any]:
        from pocketserver.federation.xmatrix import authorization_header

        who = peer or self.peer
        header = authorization_header(
            who.name, self.services.config.server_name, who.key, "POST", uri, body
        )
        r = await self.app.test_client().post(uri, json=body, headers={"Authorization": header})
        return r.status_code, await r.get_json()


async def serving_env(directory: Any, server_name: str, **overrides: Any) -> ServingEnv:
    import dataclasses
    import time

    from pocketserver.app import create_app
    from pocketserver.cache import MemoryBudget
    from pocketserver.config import load_config
    from pocketserver.federation.keyring import Keyring
    from pocketserver.services import build_services
    from tests.federation.peers import FakeNetwork, FakePeer
    from tests.harness import make_config

    services = await build_services(
        load_config(make_config(directory, server_name=server_name, **overrides))
    )
    net = FakeNetwork()
    keyring = Keyring(
        services.db,
        MemoryBudget(32 << 20),
        server_name,
        services.signing_key,
        net,
        clock=lambda: int(time.time() * 1000),
    )
    services = dataclasses.replace(services, keyring=keyring)
    app = create_app(services, ["client", "federation"])
    peer = net.add(FakePeer("peer.example", lambda: int(time.time() * 1000)))
    return ServingEnv(app, peer, services, net)
