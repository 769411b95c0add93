"""The federation E2EE routes and the client key routes through the real app (built by
``build_services`` with a fake federation client), in process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nacl.signing
import pytest
import trio
from quart import request

from pocketserver.api.federation import auth as federation_auth
from pocketserver.app import create_app
from pocketserver.config import load_config
from pocketserver.errors import MatrixError
from pocketserver.services import Services, build_services
from tests.e2e_keys.keys import device_keys, signed_otk
from tests.harness import make_config

from .conftest import FakeRemotes

SERVER = "local.test"
FED = "/_matrix/federation/v1"


@dataclass
class App:
    services: Services
    client: Any
    remotes: FakeRemotes

    async def call(
        self, method: str, path: str, body: object = None, *, token: str = "", origin: str = ""
    ) -> tuple[int, Any]:
        headers = {"X-Test-Origin": origin} if origin else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        r = await self.client.open(path, method=method, json=body, headers=headers)
        return r.status_code, await r.get_json()

    async def user(self, localpart: str) -> tuple[str, str, str]:
        user_id = await self.services.accounts.register(localpart, "pw")
        status, answer = await self.call(
            "POST",
            "/_matrix/client/v3/login",
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": localpart},
                "password": "pw",
            },
        )
        assert status == 200, answer
        return user_id, answer["device_id"], answer["access_token"]


@pytest.fixture
async def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    remotes = FakeRemotes()

    # Stands in for the X-Matrix check (tested in tests/federation/test_xmatrix.py and
    # test_federation_api.py): the origin comes from a test header; none is a 401.
    async def verify_request() -> str:
        origin = request.headers.get("X-Test-Origin")
        if not origin:
            raise MatrixError(401, "M_UNAUTHORIZED", "no X-Test-Origin")
        return origin

    monkeypatch.setattr(federation_auth, "verify_request", verify_request)
    services = await build_services(
        load_config(make_config(tmp_path, SERVER)), federation_requests=remotes
    )
    quart_app = create_app(services)

    try:
        yield App(services, quart_app.test_client(), remotes)
    finally:
        services.db.close()


async def test_federation_routes_answer_the_authenticated_origin(app: App) -> None:
    alice, device, token = await app.user("alice")
    sk = nacl.signing.SigningKey.generate()
    otk = signed_otk(alice, device, sk, 1)
    status, _ = await app.call(
        "POST",
        "/_matrix/client/v3/keys/upload",
        {
            "device_keys": device_keys(alice, device, sk),
            "one_time_keys": {"signed_curve25519:K": otk},
        },
        token=token,
    )
    assert status == 200
    status, devices = await app.call(
        "GET", f"{FED}/user/devices/{quote(alice, safe='')}", origin="remote.test"
    )
    assert status == 200
    assert [d["device_id"] for d in devices["devices"]] == [device]
    assert isinstance(devices["stream_id"], int)
    status, keys = await app.call(
        "POST", f"{FED}/user/keys/query", {"device_keys": {alice: []}}, origin="remote.test"
    )
    assert status == 200
    assert list(keys["device_keys"][alice]) == [device]
    status, claimed = await app.call(
        "POST",
        f"{FED}/user/keys/claim",
        {"one_time_keys": {alice: {device: "signed_curve25519"}}},
        origin="remote.test",
    )
    assert (status, claimed) == (
        200,
        {"one_time_keys": {alice: {device: {"signed_curve25519:K": otk}}}},
    )
    status, answer = await app.call(
        "GET", f"{FED}/user/devices/{quote('@bob:remote.test', safe='')}", origin="remote.test"
    )
    assert (status, answer["errcode"]) == (404, "M_NOT_FOUND")


async def test_unauthenticated_requests_are_refused_and_claim_nothing(app: App) -> None:
    alice, device, token = await app.user("alice")
    sk = nacl.signing.SigningKey.generate()
    await app.call(
        "POST",
        "/_matrix/client/v3/keys/upload",
        {"one_time_keys": {"signed_curve25519:K": signed_otk(alice, device, sk, 1)}},
        token=token,
    )
    for method, path, body in (
        ("GET", f"{FED}/user/devices/{quote(alice, safe='')}", None),
        ("POST", f"{FED}/user/keys/query", {"device_keys": {alice: []}}),
        (
            "POST",
            f"{FED}/user/keys/claim",
            {"one_time_keys": {alice: {device: "signed_curve25519"}}},
        ),
    ):
        status, answer = await app.call(method, path, body)
        assert (status, answer["errcode"]) == (401, "M_UNAUTHORIZED")
    counts, _ = await app.services.e2e_keys.counts(alice, device)
    assert counts == {"signed_curve25519": 1}


async def test_client_query_of_an_unreachable_server_fails_within_its_timeout(app: App) -> None:
    _, _, token = await app.user("alice")
    app.remotes.hang.add("slow.test")
    started = trio.current_time()
    status, answer = await app.call(
        "POST",
        "/_matrix/client/v3/keys/query",
        {"device_keys": {"@x:slow.test": [], "@y:down.test": []}, "timeout": 300},
        token=token,
    )
    assert status == 200
    assert trio.current_time() - started < 2
    assert set(answer["failures"]) == {"slow.test", "down.test"}
    status, answer = await app.call(
        "POST",
        "/_matrix/client/v3/keys/claim",
        {"one_time_keys": {"@x:slow.test": {"D": "signed_curve25519"}}, "timeout": 300},
        token=token,
    )
    assert status == 200
    assert answer == {
        "one_time_keys": {},
        "failures": {"slow.test": answer["failures"]["slow.test"]},
    }
    [(_, _, _, _, timeout_s), *_] = app.remotes.calls
    assert timeout_s == 0.3


async def test_remote_device_changes_wake_sync_and_reach_keys_changes(app: App) -> None:
    """A remote user in Alice's room changes devices: a waiting /sync wakes with them in
    device_lists.changed, and /keys/changes lists them."""
    from tests.rooms.conftest import RemoteServer

    _, _, token = await app.user("alice")
    status, created = await app.call(
        "POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"}, token=token
    )
    assert status == 200
    bob = "@bob:remote.test"
    remote = RemoteServer("remote.test")
    await remote.send(
        app.services.rooms, created["room_id"], bob, "m.room.member", {"membership": "join"}, bob
    )
    sk = nacl.signing.SigningKey.generate()
    app.remotes.on(
        "GET",
        "remote.test",
        f"{FED}/user/devices/{quote(bob, safe='')}",
        lambda _: {
            "user_id": bob,
            "stream_id": 4,
            "devices": [{"device_id": "D1", "keys": device_keys(bob, "D1", sk)}],
        },
    )
    status, first = await app.call("GET", "/_matrix/client/v3/sync", token=token)
    assert status == 200
    since = first["next_batch"]
    woke: list[Any] = []

    async def long_poll() -> None:
        woke.append(
            await app.call(
                "GET", f"/_matrix/client/v3/sync?since={since}&timeout=10000", token=token
            )
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(app.services.federation_e2e.run)
        nursery.start_soon(long_poll)
        await trio.sleep(0.2)
        started = trio.current_time()
        update = {"user_id": bob, "device_id": "D1", "stream_id": 4}
        await app.services.federation_e2e.on_edu("remote.test", "m.device_list_update", update)
        with trio.fail_after(5):
            while not woke:  # noqa: ASYNC110 (the long-poll task appends when it returns)
                await trio.sleep(0.01)
        assert trio.current_time() - started < 5
        nursery.cancel_scope.cancel()
    status, synced = woke[0]
    assert status == 200
    assert bob in synced["device_lists"]["changed"]
    status, changes = await app.call(
        "GET", f"/_matrix/client/v3/keys/changes?from={since}", token=token
    )
    assert status == 200
    assert bob in changes["changed"]
    status, keys = await app.call(
        "POST", "/_matrix/client/v3/keys/query", {"device_keys": {bob: []}}, token=token
    )
    assert list(keys["device_keys"][bob]) == ["D1"]
    assert keys["failures"] == {}
