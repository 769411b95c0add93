"""Rate limits through the real server (issue #9): X-Forwarded-For is not trusted by
default, the admin's shared-secret registration is not limited like public sign-up,
and the rc_* limits on joins, invites, room creation, media IDs, presence and
moderators' redactions answer 429 M_LIMIT_EXCEEDED and change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from pocketserver.cli import main
from tests.e2e.clients import V3, User, close_all, err
from tests.harness import RunningServer, make_config, running_server, start_server

SLOW = {"per_second": 0.001, "burst_count": 2}


def login(server: RunningServer, user: str, headers: dict[str, str]) -> httpx.Response:
    with server.client() as c:
        return c.post(
            f"{V3}/login",
            headers=headers,
            json={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": user},
                "password": "wrong",
            },
        )


@pytest.mark.parametrize("trusted", [False, True])
def test_x_forwarded_for_is_ignored_by_default(tmp_path: Path, trusted: bool) -> None:
    overrides: dict[str, object] = {"rc_login": {"address": SLOW}}
    config = make_config(tmp_path, **overrides)
    if trusted:  # the listener behind a proxy: each forwarded address has its own bucket
        import yaml

        data = yaml.safe_load(config.read_text())
        data["listeners"][0]["x_forwarded"] = True
        config.write_text(yaml.safe_dump(data))
    with running_server(config) as server:
        answers = [
            login(server, f"u{i}", {"X-Forwarded-For": f"203.0.113.{i}"}).status_code
            for i in range(4)
        ]
        if trusted:
            assert answers == [403, 403, 403, 403]
            # Only the last address (the one the proxy added) counts: a client that
            # writes its own first entry still lands in the proxy-seen bucket.
            spoofed = [
                login(server, f"v{i}", {"X-Forwarded-For": f"10.0.0.{i}, 198.51.100.7"}).status_code
                for i in range(3)
            ]
            assert spoofed == [403, 403, 429]
        else:
            assert answers == [403, 403, 429, 429]  # one bucket: the real address


def register_via_secret(server: RunningServer, localpart: str) -> httpx.Response:
    from tests.harness import registration_mac_for_tests

    with server.client() as c:
        nonce = c.get("/_synapse/admin/v1/register").json()["nonce"]
        mac = registration_mac_for_tests(server.shared_secret, nonce, localpart, "pw", False)
        return c.post(
            "/_synapse/admin/v1/register",
            json={"nonce": nonce, "username": localpart, "password": "pw", "mac": mac},
        )


def test_shared_secret_registration_is_not_limited_like_sign_up(tmp_path: Path) -> None:
    # Synapse's default rc_registration (0.17/s, burst 3), open sign-up for the comparison.
    config = make_config(
        tmp_path,
        rc_registration={"per_second": 0.17, "burst_count": 3},
        enable_registration=True,
    )
    with running_server(config) as server:
        for i in range(6):  # the register-user command, as an admin would run it
            argv = ["register-user", "-c", str(config), "-u", f"cli{i}", "-p", "pw"]
            assert main([*argv, "--no-admin", server.base_url]) == 0, i
        for i in range(6):
            r = register_via_secret(server, f"api{i}")
            assert r.status_code == 200, (i, r.text)
        # Public sign-up is limited as before: three accounts, then 429.
        with server.client() as c:
            codes = [sign_up(c, f"pub{i}") for i in range(4)]
        assert codes == [200, 200, 200, 429]


def test_wrong_shared_secret_macs_are_limited(tmp_path: Path) -> None:
    config = make_config(tmp_path, rc_registration={"per_second": 0.17, "burst_count": 3})
    with running_server(config) as server, server.client() as c:
        bad = []
        for i in range(5):
            nonce = c.get("/_synapse/admin/v1/register").json()["nonce"]
            body = {"nonce": nonce, "username": f"x{i}", "password": "pw", "mac": "00"}
            bad.append(c.post("/_synapse/admin/v1/register", json=body).status_code)
        # Wrong HMACs count against the address, so the secret cannot be guessed at speed.
        assert bad == [403, 403, 403, 429, 429]
        r = register_via_secret(server, "right")
        assert err(r) == (429, "M_LIMIT_EXCEEDED")


def sign_up(c: httpx.Client, username: str) -> int:
    body: dict[str, object] = {"username": username, "password": "a long password 1"}
    first = c.post(f"{V3}/register", json=body)
    if first.status_code != 401:
        return first.status_code
    body["auth"] = {"type": "m.login.dummy", "session": first.json()["session"]}
    return c.post(f"{V3}/register", json=body).status_code


def test_open_registration_without_verification_refuses_to_start(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, enable_registration=True, enable_registration_without_verification=False
    )
    with pytest.raises(RuntimeError) as e:
        start_server(config)
    assert "enable_registration_without_verification" in str(e.value)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Synapse's defaults for rc_joins/rc_invites/rc_room_creation/rc_presence, tight
    ones where the default burst is large, and a generous rc_message."""
    config = make_config(
        tmp_path_factory.mktemp("limits"),
        rc_message={"per_second": 1000, "burst_count": 1000},
        rc_joins={"local": {"per_second": 0.001, "burst_count": 3}},
        rc_joins_per_room={"per_second": 0.001, "burst_count": 4},
        rc_invites={
            "per_room": {"per_second": 0.001, "burst_count": 3},
            "per_user": {"per_second": 0.003, "burst_count": 5},
            "per_issuer": {"per_second": 0.3, "burst_count": 10},
        },
        rc_room_creation={"per_second": 0.001, "burst_count": 2},
        rc_media_create={"per_second": 0.001, "burst_count": 2},
        rc_presence={"per_user": {"per_second": 0.1, "burst_count": 1}},
        rc_admin_redaction={"per_second": 0.001, "burst_count": 1},
    )
    with running_server(config) as s:
        yield s
        close_all()
    assert "Traceback" not in s.log_text(), s.log_text()


def _limited(r: httpx.Response) -> None:
    assert err(r) == (429, "M_LIMIT_EXCEEDED"), r.text
    assert r.json()["retry_after_ms"] > 0
    # The Retry-After header (spec v1.10), in whole seconds, rounded up.
    assert int(r.headers["Retry-After"]) == max(1, -(-r.json()["retry_after_ms"] // 1000))


def test_room_creation_is_limited(limited: RunningServer) -> None:
    alice = User(limited, "creator")
    alice.create()
    alice.create()
    before = alice.ok("/joined_rooms")["joined_rooms"]
    _limited(alice.http.post(f"{V3}/createRoom", json={}))
    assert alice.ok("/joined_rooms")["joined_rooms"] == before


def test_joins_are_limited_per_user_and_per_room(limited: RunningServer) -> None:
    owner = User(limited, "jowner")
    rooms = [owner.create(preset="public_chat") for _ in range(2)]
    joiner = User(limited, "joiner")
    for room in rooms:
        joiner.join(room)
    joiner.post(f"/rooms/{rooms[0]}/leave")
    joiner.join(rooms[0])  # the third join
    joiner.post(f"/rooms/{rooms[0]}/leave")
    _limited(joiner.post(f"/rooms/{rooms[0]}/join"))  # rc_joins.local: burst 3
    # A join written as a member state event is a join too.
    member_path = f"{V3}/rooms/{rooms[0]}/state/m.room.member/{quote(joiner.user_id)}"
    _limited(joiner.http.put(member_path, json={"membership": "join"}))
    assert rooms[0] not in joiner.ok("/joined_rooms")["joined_rooms"]
    # A profile change of someone joined already is not a join.
    r = joiner.http.put(
        f"{V3}/rooms/{rooms[1]}/state/m.room.member/{quote(joiner.user_id)}",
        json={"membership": "join", "displayname": "J"},
    )
    assert r.status_code == 200, r.text

    # rc_joins_per_room (burst 4): the creator's join and three others fill the room.
    owner = User(limited, "jowner2")  # rc_room_creation has a burst of 2
    third = owner.create(preset="public_chat")
    for i in range(3):
        User(limited, f"crowd{i}").join(third)
    late = User(limited, "late")
    _limited(late.post(f"/rooms/{third}/join"))
    assert late.user_id not in owner.ok(f"/rooms/{third}/joined_members")["joined"]


def test_invites_are_limited(limited: RunningServer) -> None:
    alice = User(limited, "inviter")
    room = alice.create()
    guests = [User(limited, f"guest{i}") for i in range(4)]
    for g in guests[:3]:
        r = alice.post(f"/rooms/{room}/invite", {"user_id": g.user_id})
        assert r.status_code == 200, r.text
    _limited(alice.post(f"/rooms/{room}/invite", {"user_id": guests[3].user_id}))
    state_path = f"{V3}/rooms/{room}/state/m.room.member/{quote(guests[3].user_id)}"
    _limited(alice.http.put(state_path, json={"membership": "invite"}))
    members = alice.ok(f"/rooms/{room}/members")["chunk"]
    assert guests[3].user_id not in {m["state_key"] for m in members}
    # createRoom with more invites than the per-room burst is refused outright.
    r = alice.http.post(f"{V3}/createRoom", json={"invite": [g.user_id for g in guests]})
    assert err(r) == (400, "M_UNKNOWN"), r.text


def test_media_ids_and_presence_are_limited(limited: RunningServer) -> None:
    user = User(limited, "mediauser")
    for _ in range(2):
        assert user.http.post("/_matrix/media/v1/create").status_code == 200
    _limited(user.http.post("/_matrix/media/v1/create"))
    path = f"{V3}/presence/{quote(user.user_id)}/status"
    assert user.http.put(path, json={"presence": "unavailable"}).status_code == 200
    _limited(user.http.put(path, json={"presence": "online", "status_msg": "no"}))
    status = user.ok(f"/presence/{quote(user.user_id)}/status")
    assert status["presence"] == "unavailable"
    assert "status_msg" not in status


def test_moderator_redactions_use_rc_admin_redaction(limited: RunningServer) -> None:
    mod, member = User(limited, "moderator"), User(limited, "member")
    room = mod.create(preset="public_chat")
    member.join(room)
    msgs = [member.text(room, f"m{i}") for i in range(2)]

    def redact(event_id: str, txn: str) -> httpx.Response:
        return mod.http.put(f"{V3}/rooms/{room}/redact/{quote(event_id)}/{txn}", json={})

    assert redact(msgs[0], "r0").status_code == 200
    _limited(redact(msgs[1], "r1"))  # burst 1
    assert mod.ok(f"/rooms/{room}/event/{quote(msgs[1])}")["content"]["body"] == "m1"
    # Their own redactions count under rc_message (generous here).
    own = [mod.text(room, f"o{i}") for i in range(3)]
    for i, event_id in enumerate(own):
        assert redact(event_id, f"o{i}").status_code == 200
