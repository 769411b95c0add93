"""The application service API through the real server, with a small fake
application service on loopback registered by a registration file
(app_service_config_files)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import yaml

from tests.appservice.fake_as import FakeAppService, Seen, serving
from tests.harness import RunningServer, make_config, running_server

V3 = "/_matrix/client/v3"
AS_TOKEN = "as-token-of-the-bridge"
HS_TOKEN = "hs-token-of-the-bridge"
AS_AUTH = {"Authorization": f"Bearer {AS_TOKEN}"}
_names = itertools.count(1)


def write_registration(directory: Path, url: str | None) -> Path:
    path = directory / "bridge.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "id": "bridge",
                "url": url,
                "as_token": AS_TOKEN,
                "hs_token": HS_TOKEN,
                "sender_localpart": "bridgebot",
                "namespaces": {
                    "users": [{"regex": "@br_.*:test.local", "exclusive": True}],
                    "aliases": [{"regex": "#br_.*:test.local", "exclusive": True}],
                    "rooms": [],
                },
                "rate_limited": False,
                "protocols": ["fakenet"],
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def bridge() -> Iterator[FakeAppService]:
    with serving(FakeAppService(hs_token=HS_TOKEN)) as site:
        yield site


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, bridge: FakeAppService
) -> Iterator[RunningServer]:
    directory = tmp_path_factory.mktemp("as-server")
    registration = write_registration(directory, bridge.url)
    config = make_config(
        directory,
        app_service_config_files=[str(registration)],
        enable_registration=True,
        # Few messages for normal users (the service's users are exempt: rate_limited: false).
        rc_message={"per_second": 0.01, "burst_count": 4},
    )
    with running_server(config) as s:
        yield s
    assert "Traceback" not in s.log_text(), s.log_text()


def _user(server: RunningServer) -> tuple[str, dict[str, str]]:
    answer = server.register(f"person{next(_names)}")
    return answer["user_id"], {"Authorization": f"Bearer {answer['access_token']}"}


def _as_register(c: httpx.Client, localpart: str, token: str = AS_TOKEN) -> httpx.Response:
    return c.post(
        f"{V3}/register",
        json={"type": "m.login.application_service", "username": localpart},
        headers={"Authorization": f"Bearer {token}"},
    )


def test_registration_acting_as_users_and_login(server: RunningServer) -> None:
    with server.client() as c:
        r = _as_register(c, "br_alice")
        assert r.status_code == 200, r.text
        assert r.json()["user_id"] == "@br_alice:test.local"
        assert {"access_token", "device_id"} <= r.json().keys()
        r = c.post(
            f"{V3}/register",
            json={
                "type": "m.login.application_service",
                "username": "br_quiet",
                "inhibit_login": True,
            },
            headers=AS_AUTH,
        )
        assert r.json() == {"user_id": "@br_quiet:test.local", "home_server": "test.local"}
        who = c.get(f"{V3}/account/whoami", headers=AS_AUTH).json()
        assert who["user_id"] == "@bridgebot:test.local"
        who = c.get(
            f"{V3}/account/whoami", params={"user_id": "@br_alice:test.local"}, headers=AS_AUTH
        ).json()
        assert who["user_id"] == "@br_alice:test.local"
        # The deprecated query-string form of the as_token works as the header does.
        who = c.get(
            f"{V3}/account/whoami",
            params={"user_id": "@br_alice:test.local", "access_token": AS_TOKEN},
        )
        if who.status_code == 200:  # query-string tokens land on another branch
            assert who.json()["user_id"] == "@br_alice:test.local"
        r = c.post(
            f"{V3}/login",
            json={
                "type": "m.login.application_service",
                "identifier": {"type": "m.id.user", "user": "br_alice"},
            },
            headers=AS_AUTH,
        )
        assert r.status_code == 200, r.text
        assert r.json()["user_id"] == "@br_alice:test.local"
        flows = c.get(f"{V3}/login").json()["flows"]
        assert {"type": "m.login.application_service"} in flows


def test_attackers_are_refused_and_nothing_changes(server: RunningServer) -> None:
    user_id, auth = _user(server)
    with server.client() as c:
        # A normal user cannot take a name in the exclusive namespace...
        r = c.post(
            f"{V3}/register",
            json={"username": "br_mallory", "password": "long enough password"},
        )
        assert (r.status_code, r.json()["errcode"]) == (400, "M_EXCLUSIVE")
        r = c.get(f"{V3}/register/available", params={"username": "br_mallory"})
        assert r.json()["errcode"] == "M_EXCLUSIVE"
        # ...nor an alias there.
        room_id = c.post(f"{V3}/createRoom", json={}, headers=auth).json()["room_id"]
        alias = quote("#br_stolen:test.local")
        r = c.put(f"{V3}/directory/room/{alias}", json={"room_id": room_id}, headers=auth)
        assert (r.status_code, r.json()["errcode"]) == (400, "M_EXCLUSIVE")
        r = c.post(f"{V3}/createRoom", json={"room_alias_name": "br_stolen2"}, headers=auth)
        assert (r.status_code, r.json()["errcode"]) == (400, "M_EXCLUSIVE")
        # The service cannot create users outside its namespace...
        r = _as_register(c, "someone_else")
        assert (r.status_code, r.json()["errcode"]) == (400, "M_EXCLUSIVE")
        # ...nor act as a user outside it, or one it has not registered.
        for target in (user_id, "@br_nobody:test.local", "@br_x:elsewhere.example"):
            r = c.get(f"{V3}/account/whoami", params={"user_id": target}, headers=AS_AUTH)
            assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN"), target
        r = c.put(
            f"{V3}/profile/{user_id}/displayname",
            params={"user_id": user_id},
            json={"displayname": "owned"},
            headers=AS_AUTH,
        )
        assert r.status_code == 403
        # A wrong as_token is an unknown token; a user's token is not an as_token.
        r = _as_register(c, "br_fake", token="not-the-token")
        assert (r.status_code, r.json()["errcode"]) == (401, "M_UNKNOWN_TOKEN")
        r = _as_register(c, "br_fake2", token=auth["Authorization"].split()[1])
        assert (r.status_code, r.json()["errcode"]) == (401, "M_UNKNOWN_TOKEN")
        r = c.post(
            f"{V3}/register", json={"type": "m.login.application_service", "username": "br_x"}
        )
        assert (r.status_code, r.json()["errcode"]) == (401, "M_MISSING_TOKEN")
        r = c.post(
            f"{V3}/login",
            json={"type": "m.login.application_service", "user": "br_alice"},
            headers=auth,
        )
        assert (r.status_code, r.json()["errcode"]) == (401, "M_UNKNOWN_TOKEN")
        # Nothing was created.
        for name in ("br_mallory", "someone_else", "br_fake", "br_fake2", "br_x"):
            r = c.get(f"{V3}/profile/@{name}:test.local")
            assert r.status_code == 404, name
        for name in ("br_stolen", "br_stolen2"):
            r = c.get(f"{V3}/directory/room/{quote(f'#{name}:test.local')}")
            assert r.status_code == 404
        r = c.get(f"{V3}/profile/{user_id}/displayname").json()
        assert r.get("displayname") != "owned"


def test_events_are_pushed_with_the_hs_token(server: RunningServer, bridge: FakeAppService) -> None:
    _, auth = _user(server)
    with server.client() as c:
        assert _as_register(c, "br_carol").status_code == 200
        ghost = {"user_id": "@br_carol:test.local"}
        room_id = c.post(f"{V3}/createRoom", json={"preset": "public_chat"}, headers=auth).json()[
            "room_id"
        ]
        # A room without the service's users is not its business.
        r = c.put(
            f"{V3}/rooms/{room_id}/send/m.room.message/t0",
            json={"msgtype": "m.text", "body": "before"},
            headers=auth,
        )
        before = r.json()["event_id"]
        r = c.post(f"{V3}/rooms/{room_id}/join", params=ghost, json={}, headers=AS_AUTH)
        assert r.status_code == 200, r.text
        r = c.put(
            f"{V3}/rooms/{room_id}/send/m.room.message/t1",
            json={"msgtype": "m.text", "body": "hello bridge"},
            headers=auth,
        )
        event_id = r.json()["event_id"]
        r = c.put(
            f"{V3}/rooms/{room_id}/send/m.room.message/t2",
            params=ghost,
            json={"msgtype": "m.text", "body": "from the bridge"},
            headers=AS_AUTH,
        )
        ghost_event = r.json()["event_id"]
    bridge.wait_for(lambda: {event_id, ghost_event} <= {e["event_id"] for e in bridge.events})
    pushed = {e["event_id"]: e for e in bridge.events}
    assert before not in pushed
    assert pushed[event_id]["content"]["body"] == "hello bridge"
    assert pushed[ghost_event]["sender"] == "@br_carol:test.local"
    joins = [
        e
        for e in bridge.events
        if e["type"] == "m.room.member" and e.get("state_key") == "@br_carol:test.local"
    ]
    assert joins
    assert joins[0]["room_id"] == room_id
    txns = [s for s in bridge.seen if s.path.startswith("/_matrix/app/v1/transactions/")]
    assert all(s.authorization == f"Bearer {HS_TOKEN}" for s in txns)
    assert all(s.method == "PUT" for s in txns)


def test_unknown_users_and_aliases_are_asked_of_the_service(
    server: RunningServer, bridge: FakeAppService
) -> None:
    _, auth = _user(server)
    with server.client() as c:
        room_id = c.post(f"{V3}/createRoom", json={"preset": "public_chat"}, headers=auth).json()[
            "room_id"
        ]

    def create_on_query(seen: Seen) -> None:
        if seen.path == "/_matrix/app/v1/users/@br_dave:test.local":
            with httpx.Client(base_url=server.base_url) as hs:
                _as_register(hs, "br_dave")
        if seen.path == "/_matrix/app/v1/rooms/#br_lobby:test.local":
            with httpx.Client(base_url=server.base_url) as hs:
                hs.put(
                    f"{V3}/directory/room/{quote('#br_lobby:test.local')}",
                    json={"room_id": room_id},
                    headers=AS_AUTH,
                )

    bridge.answers["/_matrix/app/v1/users/@br_dave:test.local"] = (200, {})
    bridge.answers["/_matrix/app/v1/rooms/#br_lobby:test.local"] = (200, {})
    bridge.on_request = create_on_query
    try:
        with server.client() as c:
            r = c.post(
                f"{V3}/rooms/{room_id}/invite",
                json={"user_id": "@br_dave:test.local"},
                headers=auth,
            )
            assert r.status_code == 200, r.text
            _, other = _user(server)
            r = c.post(f"{V3}/join/{quote('#br_lobby:test.local')}", json={}, headers=other)
            assert (r.status_code, r.json()) == (200, {"room_id": room_id})
            # An alias outside every namespace is not asked about.
            r = c.get(f"{V3}/directory/room/{quote('#elsewhere:test.local')}")
            assert r.status_code == 404
    finally:
        bridge.on_request = None
    paths = [s.path for s in bridge.seen]
    assert "/_matrix/app/v1/users/@br_dave:test.local" in paths
    assert "/_matrix/app/v1/rooms/#br_lobby:test.local" in paths
    assert "/_matrix/app/v1/rooms/#elsewhere:test.local" not in paths
    with server.client() as c:
        assert c.get(f"{V3}/profile/@br_dave:test.local").status_code == 200


def test_third_party_lookups_are_forwarded(server: RunningServer, bridge: FakeAppService) -> None:
    _, auth = _user(server)
    meta = {
        "user_fields": ["nick"],
        "location_fields": ["channel"],
        "icon": "mxc://example.org/icon",
        "field_types": {},
        "instances": [{"desc": "Fakenet", "network_id": "fn", "fields": {}}],
    }
    bridge.answers["/_matrix/app/v1/thirdparty/protocol/fakenet"] = (200, meta)
    found = [{"userid": "@br_eve:test.local", "protocol": "fakenet", "fields": {"nick": "eve"}}]
    bridge.answers["/_matrix/app/v1/thirdparty/user/fakenet"] = (200, found)
    with server.client() as c:
        protocols = c.get(f"{V3}/thirdparty/protocols", headers=auth).json()
        assert protocols["fakenet"]["instances"][0]["instance_id"] == "bridge|fn"
        one = c.get(f"{V3}/thirdparty/protocol/fakenet", headers=auth).json()
        assert one["user_fields"] == ["nick"]
        r = c.get(f"{V3}/thirdparty/user/fakenet", params={"nick": "eve"}, headers=auth)
        assert r.json() == found
        r = c.get(f"{V3}/thirdparty/protocol/othernet", headers=auth)
        assert r.status_code == 404
    lookups = [s for s in bridge.seen if s.path == "/_matrix/app/v1/thirdparty/user/fakenet"]
    assert lookups[-1].query == "nick=eve"
    assert lookups[-1].authorization == f"Bearer {HS_TOKEN}"


def test_network_room_lists(server: RunningServer) -> None:
    _, auth = _user(server)
    with server.client() as c:
        room_id = c.post(f"{V3}/createRoom", json={}, headers=auth).json()["room_id"]
        path = f"{V3}/directory/list/appservice/fn/{room_id}"
        r = c.put(path, json={"visibility": "public"}, headers=auth)  # not the service
        assert (r.status_code, r.json()["errcode"]) == (401, "M_UNKNOWN_TOKEN")

        def listed(body: dict[str, object]) -> bool:
            chunk = c.post(f"{V3}/publicRooms", json=body, headers=auth).json()["chunk"]
            return any(room["room_id"] == room_id for room in chunk)

        assert not listed({"third_party_instance_id": "bridge|fn"})
        assert c.put(path, json={"visibility": "public"}, headers=AS_AUTH).status_code == 200
        assert listed({"third_party_instance_id": "bridge|fn"})
        assert not listed({})
        assert listed({"include_all_networks": True})
        assert not listed({"third_party_instance_id": "bridge|other"})
        assert c.delete(path, headers=AS_AUTH).status_code == 200
        assert not listed({"third_party_instance_id": "bridge|fn"})


def test_ping(server: RunningServer, bridge: FakeAppService) -> None:
    bridge.answers["/_matrix/app/v1/ping"] = (200, {})
    with server.client() as c:
        r = c.post(
            "/_matrix/client/v1/appservice/bridge/ping",
            json={"transaction_id": "p1"},
            headers=AS_AUTH,
        )
        assert r.status_code == 200, r.text
        assert isinstance(r.json()["duration_ms"], int)
        r = c.post("/_matrix/client/v1/appservice/other/ping", json={}, headers=AS_AUTH)
        assert r.status_code == 403
    pings = [s for s in bridge.seen if s.path == "/_matrix/app/v1/ping"]
    assert pings[-1].body == {"transaction_id": "p1"}
    bridge.answers["/_matrix/app/v1/ping"] = (500, {"errcode": "M_UNKNOWN"})
    with server.client() as c:
        r = c.post("/_matrix/client/v1/appservice/bridge/ping", json={}, headers=AS_AUTH)
        assert (r.status_code, r.json()["errcode"]) == (502, "M_BAD_STATUS")


def test_queue_survives_a_down_service_and_a_restart(tmp_path: Path) -> None:
    """Events for a service that is down are kept (in SQLite), and delivered once, in
    order, after the server restarts and the service is back."""
    with serving(FakeAppService(hs_token=HS_TOKEN)) as bridge:
        registration = write_registration(tmp_path, bridge.url)
        config = make_config(tmp_path, app_service_config_files=[str(registration)])
        bridge.down = True
        sent = []
        with running_server(config) as s, s.client() as c:
            _, auth = _user(s)
            assert _as_register(c, "br_frank").status_code == 200
            room_id = c.post(f"{V3}/createRoom", json={}, headers=auth).json()["room_id"]
            frank = {"user_id": "@br_frank:test.local"}
            c.post(f"{V3}/rooms/{room_id}/invite", json=frank, headers=auth)
            r = c.post(f"{V3}/rooms/{room_id}/join", params=frank, json={}, headers=AS_AUTH)
            assert r.status_code == 200, r.text
            for i in range(5):
                r = c.put(
                    f"{V3}/rooms/{room_id}/send/m.room.message/m{i}",
                    json={"msgtype": "m.text", "body": f"m{i}"},
                    headers=auth,
                )
                sent.append(r.json()["event_id"])
            bridge.wait_for(lambda: any("transactions" in x.path for x in bridge.seen))
        assert bridge.events == []
        bridge.down = False
        with running_server(config):
            bridge.wait_for(lambda: set(sent) <= {e["event_id"] for e in bridge.events})
        ids = bridge.event_ids()
        assert len(ids) == len(set(ids))  # once each
        positions = [ids.index(e) for e in sent]
        assert positions == sorted(positions)


def test_devices_and_rate_limits(server: RunningServer) -> None:
    _, auth = _user(server)
    with server.client() as c:
        r = _as_register(c, "br_gina")
        device_id = r.json()["device_id"]
        gina = "@br_gina:test.local"
        who = c.get(
            f"{V3}/account/whoami",
            params={"user_id": gina, "device_id": device_id},
            headers=AS_AUTH,
        ).json()
        assert (who["user_id"], who["device_id"]) == (gina, device_id)
        r = c.get(
            f"{V3}/account/whoami", params={"user_id": gina, "device_id": "NOPE"}, headers=AS_AUTH
        )
        assert (r.status_code, r.json()["errcode"]) == (400, "M_UNKNOWN_DEVICE")
        room_id = c.post(f"{V3}/createRoom", json={"preset": "public_chat"}, headers=auth).json()[
            "room_id"
        ]
        c.post(f"{V3}/rooms/{room_id}/join", params={"user_id": gina}, json={}, headers=AS_AUTH)
        statuses = []
        for i in range(8):
            r = c.put(
                f"{V3}/rooms/{room_id}/send/m.room.message/g{i}",
                params={"user_id": gina},
                json={"msgtype": "m.text", "body": str(i)},
                headers=AS_AUTH,
            )
            statuses.append(r.status_code)
        assert statuses == [200] * 8
        for i in range(8):
            r = c.put(
                f"{V3}/rooms/{room_id}/send/m.room.message/u{i}",
                json={"msgtype": "m.text", "body": str(i)},
                headers=auth,
            )
            if r.status_code == 429:
                break
        else:
            pytest.fail("a normal user was never rate limited")
