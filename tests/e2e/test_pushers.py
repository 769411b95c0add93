"""Pushers API and delivery to a push gateway, through the real server.

The push gateway is a small HTTP server in this process on 127.0.0.1, which the
servers here allow with ``ip_range_whitelist`` (the default blacklist blocks it).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.harness import RunningServer, make_config, running_server

V3 = "/_matrix/client/v3"
NOTIFY = "/_matrix/push/v1/notify"
LOOPBACK_ALLOWED = ["127.0.0.1/32", "::1/128"]
_txns = itertools.count(1)
_keys = itertools.count(1)


class Gateway:
    """Records every /notify body; answers from a per-pushkey script, then 200."""

    def __init__(self) -> None:
        self.received: list[dict[str, object]] = []
        self.script: dict[str, list[tuple[int, dict[str, object]]]] = {}
        self.cond = threading.Condition()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                body = json.loads(raw)
                pushkey = body["notification"]["devices"][0]["pushkey"]
                with gateway.cond:
                    gateway.received.append({"path": self.path, **body})
                    steps = gateway.script.get(pushkey)
                    status, answer = steps.pop(0) if steps else (200, {"rejected": []})
                    gateway.cond.notify_all()
                out = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{NOTIFY}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def for_key(self, pushkey: str, badges: bool = False) -> list[dict[str, object]]:
        """The notifications about events for ``pushkey`` (``badges``: the badge-only
        updates instead)."""
        with self.cond:
            return [
                r["notification"]
                for r in self.received
                if r["notification"]["devices"][0]["pushkey"] == pushkey  # type: ignore[index]
                and ("event_id" not in r["notification"]) == badges
            ]

    def wait_for(
        self, pushkey: str, count: int, timeout: float = 15.0, badges: bool = False
    ) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.for_key(pushkey, badges)) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{count} notification(s) for {pushkey}: {self.received}"
                self.cond.wait(left)
            return self.for_key(pushkey, badges)

    def wait_event(self, pushkey: str, event_id: str, timeout: float = 15.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [n for n in self.for_key(pushkey) if n.get("event_id") == event_id]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                assert left > 0, f"{event_id} for {pushkey}: {self.received}"
                self.cond.wait(left)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    g = Gateway()
    yield g
    g.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = make_config(
        tmp_path_factory.mktemp("pushers"),
        rc_message={"per_second": 1000, "burst_count": 1000},
        ip_range_whitelist=LOOPBACK_ALLOWED,
    )
    with running_server(config) as s:
        yield s
    assert "Traceback" not in s.log_text(), s.log_text()


@pytest.fixture
def c(server: RunningServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def _auth(user: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {user['access_token']}"}


def _error(r: httpx.Response, status: int, errcode: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["errcode"] == errcode, r.text


def _pusher(url: str, pushkey: str, **extra: object) -> dict[str, object]:
    body: dict[str, object] = {
        "kind": "http",
        "app_id": "org.example.app.android",
        "pushkey": pushkey,
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "lang": "en",
        "data": {"url": url},
    }
    body.update(extra)
    return body


def _set(c: httpx.Client, user: dict[str, str], body: dict[str, object]) -> httpx.Response:
    return c.post(f"{V3}/pushers/set", headers=_auth(user), json=body)


def _list(c: httpx.Client, user: dict[str, str]) -> list[dict[str, object]]:
    r = c.get(f"{V3}/pushers", headers=_auth(user))
    assert r.status_code == 200, r.text
    return list(r.json()["pushers"])


def _key() -> str:
    return f"pushkey-{next(_keys)}"


def _room(
    c: httpx.Client, server: RunningServer, creator: dict[str, str], *others: dict[str, str]
) -> str:
    r = c.post(
        f"{V3}/createRoom",
        headers=_auth(creator),
        json={
            "preset": "private_chat",
            "name": "Mission Control",
            "invite": [o["user_id"] for o in others],
        },
    )
    assert r.status_code == 200, r.text
    room = str(r.json()["room_id"])
    for other in others:
        assert c.post(f"{V3}/rooms/{room}/join", headers=_auth(other)).status_code == 200
    return room


def _send(c: httpx.Client, user: dict[str, str], room: str, body: str) -> str:
    r = c.put(
        f"{V3}/rooms/{room}/send/m.room.message/t{next(_txns)}",
        headers=_auth(user),
        json={"msgtype": "m.text", "body": body},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["event_id"])


def _wait_no_pushers(c: httpx.Client, user: dict[str, str], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while _list(c, user):
        assert time.monotonic() < deadline, _list(c, user)
        time.sleep(0.05)


# --- the API ------------------------------------------------------------------------------


def test_set_list_update_and_remove(
    server: RunningServer, c: httpx.Client, gateway: Gateway, new_user: str
) -> None:
    user = server.register(new_user)
    assert _list(c, user) == []
    key = _key()
    body = _pusher(
        gateway.url, key, profile_tag="xyz", data={"url": gateway.url, "format": "event_id_only"}
    )
    r = _set(c, user, body)
    assert r.status_code == 200, r.text
    assert r.json() == {}
    assert _list(c, user) == [
        {
            "pushkey": key,
            "kind": "http",
            "app_id": "org.example.app.android",
            "app_display_name": "Example",
            "device_display_name": "Phone",
            "lang": "en",
            "data": {"url": gateway.url, "format": "event_id_only"},
            "profile_tag": "xyz",
        }
    ]
    # The same app_id and pushkey: updated, not added.
    assert _set(c, user, _pusher(gateway.url, key, lang="de")).status_code == 200
    (only,) = _list(c, user)
    assert only["lang"] == "de"
    assert "profile_tag" not in only
    # Another pushkey: a second pusher; r0 works too.
    other = _key()
    r = c.post(
        "/_matrix/client/r0/pushers/set", headers=_auth(user), json=_pusher(gateway.url, other)
    )
    assert r.status_code == 200, r.text
    assert {p["pushkey"] for p in _list(c, user)} == {key, other}
    # kind null deletes; deleting what does not exist is fine.
    removal = {"kind": None, "app_id": "org.example.app.android", "pushkey": key}
    assert _set(c, user, removal).status_code == 200
    assert [p["pushkey"] for p in _list(c, user)] == [other]
    assert _set(c, user, removal).status_code == 200
    assert [p["pushkey"] for p in _list(c, user)] == [other]


@pytest.mark.parametrize(
    ("change", "errcode"),
    [
        ({"kind": "__drop__"}, "M_MISSING_PARAM"),
        ({"app_id": "__drop__"}, "M_MISSING_PARAM"),
        ({"pushkey": "__drop__"}, "M_MISSING_PARAM"),
        ({"lang": "__drop__"}, "M_MISSING_PARAM"),
        ({"data": "__drop__"}, "M_MISSING_PARAM"),
        ({"app_display_name": None}, "M_MISSING_PARAM"),
        ({"device_display_name": "__drop__"}, "M_MISSING_PARAM"),
        ({"data": {}}, "M_MISSING_PARAM"),
        ({"kind": 3}, "M_BAD_JSON"),
        ({"app_id": ["x"]}, "M_BAD_JSON"),
        ({"pushkey": 12}, "M_BAD_JSON"),
        ({"lang": {}}, "M_BAD_JSON"),
        ({"profile_tag": 1}, "M_BAD_JSON"),
        ({"data": "https://x/_matrix/push/v1/notify"}, "M_BAD_JSON"),
        ({"data": {"url": 5}}, "M_BAD_JSON"),
        ({"data": {"url": "http://127.0.0.1/_matrix/push/v1/notify", "format": 1}}, "M_BAD_JSON"),
        ({"append": "yes"}, "M_BAD_JSON"),
        ({"kind": "email"}, "M_INVALID_PARAM"),
        ({"kind": "carrier-pigeon"}, "M_INVALID_PARAM"),
        ({"app_id": "a" * 65}, "M_INVALID_PARAM"),
        ({"pushkey": "é" * 257}, "M_INVALID_PARAM"),
        ({"data": {"url": "http://127.0.0.1/notify"}}, "M_INVALID_PARAM"),
        ({"data": {"url": "ftp://127.0.0.1/_matrix/push/v1/notify"}}, "M_INVALID_PARAM"),
        ({"data": {"url": "/_matrix/push/v1/notify"}}, "M_INVALID_PARAM"),
        ({"data": {"url": "http://[::1/_matrix/push/v1/notify"}}, "M_INVALID_PARAM"),
    ],
)
def test_set_errors_change_nothing(
    server: RunningServer,
    c: httpx.Client,
    gateway: Gateway,
    new_user: str,
    change: dict[str, object],
    errcode: str,
) -> None:
    user = server.register(new_user)
    body = _pusher(gateway.url, _key())
    for name, value in change.items():
        if value == "__drop__":
            del body[name]
        else:
            body[name] = value
    _error(_set(c, user, body), 400, errcode)
    assert _list(c, user) == []


def test_set_request_errors(
    server: RunningServer, c: httpx.Client, gateway: Gateway, new_user: str
) -> None:
    user = server.register(new_user)
    _error(c.get(f"{V3}/pushers"), 401, "M_MISSING_TOKEN")
    _error(c.post(f"{V3}/pushers/set", json=_pusher(gateway.url, _key())), 401, "M_MISSING_TOKEN")
    bad_token = {"Authorization": "Bearer nope"}
    _error(c.get(f"{V3}/pushers", headers=bad_token), 401, "M_UNKNOWN_TOKEN")
    r = c.post(f"{V3}/pushers/set", headers=_auth(user), content=b"{not json")
    _error(r, 400, "M_NOT_JSON")
    _error(c.post(f"{V3}/pushers/set", headers=_auth(user), json=[1]), 400, "M_BAD_JSON")
    _error(c.put(f"{V3}/pushers/set", headers=_auth(user), json={}), 405, "M_UNRECOGNIZED")
    assert _list(c, user) == []


def test_too_many_pushers(
    server: RunningServer, c: httpx.Client, gateway: Gateway, new_user: str
) -> None:
    user = server.register(new_user)
    for i in range(32):
        assert _set(c, user, _pusher(gateway.url, f"many-{new_user}-{i}")).status_code == 200
    _error(_set(c, user, _pusher(gateway.url, f"many-{new_user}-x")), 400, "M_INVALID_PARAM")
    # Updating one that exists is still fine.
    assert _set(c, user, _pusher(gateway.url, f"many-{new_user}-0")).status_code == 200
    assert len(_list(c, user)) == 32


def test_append_semantics(
    server: RunningServer, c: httpx.Client, gateway: Gateway, new_user: str
) -> None:
    a = server.register(new_user + "a")
    b = server.register(new_user + "b")
    d = server.register(new_user + "d")
    key = _key()
    assert _set(c, a, _pusher(gateway.url, key)).status_code == 200
    # append false (the default): another user's pusher with the same app and key goes.
    assert _set(c, b, _pusher(gateway.url, key)).status_code == 200
    assert _list(c, a) == []
    assert [p["pushkey"] for p in _list(c, b)] == [key]
    # append true: both stay.
    assert _set(c, d, _pusher(gateway.url, key, append=True)).status_code == 200
    assert [p["pushkey"] for p in _list(c, b)] == [key]
    assert [p["pushkey"] for p in _list(c, d)] == [key]
    # A different app_id with the same pushkey is another pusher.
    other_app = _pusher(gateway.url, key, app_id="org.example.other")
    assert _set(c, a, other_app).status_code == 200
    assert [p["pushkey"] for p in _list(c, b)] == [key]


def test_logout_and_deactivation_delete_pushers(
    server: RunningServer, c: httpx.Client, gateway: Gateway, new_user: str
) -> None:
    user = server.register(new_user)
    assert _set(c, user, _pusher(gateway.url, _key())).status_code == 200
    second = server.login(new_user).json()
    assert _set(c, second, _pusher(gateway.url, _key())).status_code == 200
    assert len(_list(c, user)) == 2
    # Logging out the second device deletes the pusher it set, not the other.
    assert c.post(f"{V3}/logout", headers=_auth(second)).status_code == 200
    assert len(_list(c, user)) == 1
    r = c.post(
        f"{V3}/account/deactivate",
        headers=_auth(user),
        json={
            "auth": {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": new_user},
                "password": "correct horse",
            }
        },
    )
    assert r.status_code == 200, r.text
    # The account's pushers went with its devices.
    path = Path(server.config["database"]["args"]["database"])  # type: ignore[index]
    with contextlib.closing(sqlite3.connect(path)) as conn:
        row = conn.execute("SELECT count(*) FROM pushers WHERE user_id = ?", (user["user_id"],))
        assert row.fetchone()[0] == 0


# --- delivery -----------------------------------------------------------------------------


def test_full_format_payload_and_counts(
    server: RunningServer, c: httpx.Client, gateway: Gateway, new_user: str
) -> None:
    a = server.register(new_user + "a")
    b = server.register(new_user + "b")
    c.put(
        f"{V3}/profile/{quote(a['user_id'])}/displayname",
        headers=_auth(a),
        json={"displayname": "Major Tom"},
    )
    key = _key()
    data = {"url": gateway.url, "custom": {"x": 1}}
    assert _set(c, b, _pusher(gateway.url, key, data=data)).status_code == 200
    room = _room(c, server, a, b)
    first = _send(c, a, room, "I'm floating")
    gateway.wait_event(key, first)  # counts are those when sent: one at a time
    second = _send(c, a, room, "in a most peculiar way")
    invite, n1, n2 = gateway.wait_for(key, 3)
    assert invite["user_is_target"] is True  # then b joined, which read it
    assert n1["event_id"] == first
    assert n2["event_id"] == second
    assert n1["room_id"] == room
    assert n1["type"] == "m.room.message"
    assert n1["sender"] == a["user_id"]
    assert n1["sender_display_name"] == "Major Tom"
    assert n1["room_name"] == "Mission Control"
    assert n1["content"] == {"msgtype": "m.text", "body": "I'm floating"}
    assert n1["counts"] == {"unread": 1}
    assert n2["counts"] == {"unread": 2}
    (device,) = n1["devices"]  # type: ignore[misc]
    assert device["app_id"] == "org.example.app.android"
    assert device["pushkey"] == key
    assert isinstance(device["pushkey_ts"], int)
    assert abs(device["pushkey_ts"] - time.time()) < 120  # seconds
    assert device["data"] == {"custom": {"x": 1}}  # without url
    # A two-member room: .m.rule.room_one_to_one (notify, sound), so high priority.
    assert device["tweaks"] == {"sound": "default"}
    assert n1["prio"] == "high"
    assert "user_is_target" not in n1
    with gateway.cond:
        paths = {r["path"] for r in gateway.received}
    assert paths == {NOTIFY}


def test_event_id_only_format_and_low_priority(
    server: RunningServer, c: httpx.Client, gateway: Gateway, new_user: str
) -> None:
    a = server.register(new_user + "a")
    b = server.register(new_user + "b")
    third = server.register(new_user + "c")
    key = _key()
    data = {"url": gateway.url, "format": "event_id_only"}
    assert _set(c, b, _pusher(gateway.url, key, data=data)).status_code == 200
    room = _room(c, server, a, b, third)  # three members: .m.rule.message, no sound
    event_id = _send(c, a, room, "hello")
    _invite, note = gateway.wait_for(key, 2)
    assert note == {
        "event_id": event_id,
        "room_id": room,
        "prio": "low",
        "counts": {"unread": 1},
        "devices": [
            {
                "app_id": "org.example.app.android",
                "pushkey": key,
                "pushkey_ts": note["devices"][0]["pushkey_ts"],  # type: ignore[index]
                "data": {"format": "event_id_only"},
                "tweaks": {},
            }
        ],
    }


def test_reading_sends_a_badge_update(
    server: RunningServer, c: httpx.Client, gateway: Gateway, new_user: str
) -> None:
    """A read receipt that lowers the unread count pushes the new count alone (as
    Synapse; SyTest 61push "Test that a message is pushed": the zero badge)."""
    a = server.register(new_user + "a")
    b = server.register(new_user + "b")
    third = server.register(new_user + "c")
    room = _room(c, server, a, b, third)
    key = _key()
    assert _set(c, b, _pusher(gateway.url, key)).status_code == 200
    first = _send(c, a, room, "one")
    second = _send(c, a, room, "two")
    gateway.wait_event(key, second)
    assert gateway.for_key(key, badges=True) == []
    receipt = f"{V3}/rooms/{room}/receipt/m.read/{quote(first)}"
    assert c.post(receipt, headers=_auth(b), json={}).status_code == 200
    (badge,) = gateway.wait_for(key, 1, badges=True)
    assert badge["counts"] == {"unread": 1}
    assert badge["prio"] == "low"
    (device,) = badge["devices"]  # type: ignore[misc]
    assert (device["pushkey"], device["tweaks"]) == (key, {})
    receipt = f"{V3}/rooms/{room}/receipt/m.read/{quote(second)}"
    assert c.post(receipt, headers=_auth(b), json={}).status_code == 200
    _, zero = gateway.wait_for(key, 2, badges=True)
    assert zero["counts"] == {"unread": 0}  # sent, though the spec omits zero counts
    # Reading again changes nothing: no update. A third user's receipt: none for b.
    assert c.post(receipt, headers=_auth(b), json={}).status_code == 200
    assert c.post(receipt, headers=_auth(third), json={}).status_code == 200
    marker = _send(c, third, room, "three")  # pushes queue in order: wait for this one
    gateway.wait_event(key, marker)
    assert len(gateway.for_key(key, badges=True)) == 2


def test_own_events_send_no_badge_update(
    server: RunningServer, c: httpx.Client, gateway: Gateway, new_user: str
) -> None:
    """A user's own join and messages reset their counts but push nothing: only a read
    receipt sends a badge update, as Synapse (SyTest 61push setup_push, whose gateway
    answers only the pushes it awaits: an extra one held up the pusher)."""
    a = server.register(new_user + "a")
    b = server.register(new_user + "b")
    key = _key()
    assert _set(c, b, _pusher(gateway.url, key)).status_code == 200
    r = c.post(f"{V3}/createRoom", headers=_auth(a), json={"preset": "public_chat"})
    room = r.json()["room_id"]
    assert c.post(f"{V3}/rooms/{room}/join", headers=_auth(b)).status_code == 200
    _send(c, b, room, "mine")
    _send(c, b, room, "mine too")
    marker = _send(c, a, room, "theirs")  # pushes queue in order: wait for this one
    gateway.wait_event(key, marker)
    assert gateway.for_key(key, badges=True) == []
    assert [n["event_id"] for n in gateway.for_key(key)] == [marker]


def test_room_named_by_canonical_alias(
    server: RunningServer, c: httpx.Client, gateway: Gateway, new_user: str
) -> None:
    """A room without a name: room_name is its canonical alias (as Synapse, SyTest 61push
    "Rooms with canonical alias are correctly named in pushed")."""
    a = server.register(new_user + "a")
    b = server.register(new_user + "b")
    key = _key()
    assert _set(c, b, _pusher(gateway.url, key)).status_code == 200
    r = c.post(
        f"{V3}/createRoom",
        headers=_auth(a),
        json={"preset": "public_chat", "room_alias_name": new_user},
    )
    room = r.json()["room_id"]
    assert c.post(f"{V3}/rooms/{room}/join", headers=_auth(b)).status_code == 200
    event_id = _send(c, a, room, "hi")
    note = gateway.wait_event(key, event_id)
    alias = f"#{new_user}:{server.server_name}"
    assert (note["room_name"], note["room_alias"]) == (alias, alias)


def test_invite_notifies_the_target(
    server: RunningServer, c: httpx.Client, gateway: Gateway, new_user: str
) -> None:
    a = server.register(new_user + "a")
    b = server.register(new_user + "b")
    key = _key()
    assert _set(c, b, _pusher(gateway.url, key)).status_code == 200
    r = c.post(f"{V3}/createRoom", headers=_auth(a), json={"invite": [b["user_id"]]})
    assert r.status_code == 200, r.text
    (note,) = gateway.wait_for(key, 1)
    assert note["type"] == "m.room.member"
    assert note["user_is_target"] is True
    assert note["membership"] == "invite"  # and the event ID as "id": as Synapse, SyTest
    assert note["id"] == note["event_id"]
    assert note["prio"] == "high"
    assert note["content"]["membership"] == "invite"  # type: ignore[index]


def test_nothing_for_own_messages_or_muted_rooms(
    server: RunningServer, c: httpx.Client, gateway: Gateway, new_user: str
) -> None:
    a = server.register(new_user + "a")
    b = server.register(new_user + "b")
    key = _key()
    assert _set(c, b, _pusher(gateway.url, key)).status_code == 200
    muted = _room(c, server, a, b)
    loud = _room(c, server, a, b)
    r = c.put(f"{V3}/pushrules/global/room/{quote(muted)}", headers=_auth(b), json={"actions": []})
    assert r.status_code == 200, r.text
    _send(c, b, loud, "my own message")
    _send(c, a, muted, "into the void")
    sentinel = _send(c, a, loud, "this one counts")
    # Delivery is in order per pusher: had the others been pushed, they came first.
    *invites, note = gateway.wait_for(key, 3)
    assert [n["type"] for n in invites] == ["m.room.member"] * 2
    assert note["event_id"] == sentinel
    time.sleep(0.3)
    assert len(gateway.for_key(key)) == 3


def test_retry_after_gateway_error(
    server: RunningServer, c: httpx.Client, gateway: Gateway, new_user: str
) -> None:
    a = server.register(new_user + "a")
    b = server.register(new_user + "b")
    key = _key()
    with gateway.cond:
        gateway.script[key] = [(500, {"errcode": "M_UNKNOWN"}), (503, {})]
    assert _set(c, b, _pusher(gateway.url, key)).status_code == 200
    started = time.monotonic()
    room = _room(c, server, a, b)
    tries = gateway.wait_for(key, 3, timeout=20.0)
    # The invite, tried three times: backoff 1 s, then 2 s.
    assert len({t["event_id"] for t in tries}) == 1
    assert time.monotonic() - started >= 2.5
    # Still a pusher (errors are not rejections), and later events go through.
    assert [p["pushkey"] for p in _list(c, b)] == [key]
    later = _send(c, a, room, "again")
    assert gateway.wait_for(key, 4)[-1]["event_id"] == later


def test_rejected_pushkey_deletes_the_pusher(
    server: RunningServer, c: httpx.Client, gateway: Gateway, new_user: str
) -> None:
    a = server.register(new_user + "a")
    b = server.register(new_user + "b")
    key = _key()
    keep = _key()
    with gateway.cond:
        gateway.script[key] = [(200, {"rejected": [key]})]
    assert _set(c, b, _pusher(gateway.url, key)).status_code == 200
    assert _set(c, b, _pusher(gateway.url, keep)).status_code == 200
    room = _room(c, server, a, b)  # the invite is pushed to both; one is rejected
    gateway.wait_for(key, 1)
    deadline = time.monotonic() + 10
    while len(_list(c, b)) != 1:
        assert time.monotonic() < deadline, _list(c, b)
        time.sleep(0.05)
    assert [p["pushkey"] for p in _list(c, b)] == [keep]
    two = _send(c, a, room, "two")
    gateway.wait_event(keep, two)
    assert len(gateway.for_key(key)) == 1


def test_unreachable_gateway_does_not_hurt(
    server: RunningServer, c: httpx.Client, new_user: str
) -> None:
    """A pusher pointing at a closed port: sending still works, nothing 500s."""
    a = server.register(new_user + "a")
    b = server.register(new_user + "b")
    room = _room(c, server, a, b)
    dead = "http://127.0.0.1:9" + NOTIFY
    assert _set(c, b, _pusher(dead, _key())).status_code == 200
    for i in range(5):
        _send(c, a, room, f"m{i}")
    r = c.get(f"{V3}/sync", headers=_auth(b))
    assert r.status_code == 200
    assert r.json()["rooms"]["join"][room]["unread_notifications"]["notification_count"] == 5


def test_pushers_survive_a_restart(tmp_path: Path, gateway: Gateway) -> None:
    config = make_config(tmp_path, ip_range_whitelist=LOOPBACK_ALLOWED)
    key = _key()
    with running_server(config) as s:
        a = s.register("alice")
        b = s.register("bob")
        with s.client() as c:
            room = _room(c, s, a, b)
            assert _set(c, b, _pusher(gateway.url, key)).status_code == 200
    with running_server(config) as s, s.client() as c:
        assert [p["pushkey"] for p in _list(c, b)] == [key]
        event_id = _send(c, a, room, "after restart")
        assert gateway.wait_event(key, event_id)["room_id"] == room
        assert "Traceback" not in s.log_text()


# --- the SSRF guard: without the whitelist, loopback gateways are never reached -------------


def _localhost_url(gateway: Gateway) -> str:
    return gateway.url.replace("127.0.0.1", "localhost")


def test_whitelisted_gateway_by_name(
    server: RunningServer, c: httpx.Client, gateway: Gateway, new_user: str
) -> None:
    a = server.register(new_user + "a")
    b = server.register(new_user + "b")
    key = _key()
    assert _set(c, b, _pusher(_localhost_url(gateway), key)).status_code == 200
    room = _room(c, server, a, b)
    event_id = _send(c, a, room, "by name")
    assert gateway.wait_event(key, event_id)["room_id"] == room


def test_default_blacklist_blocks_loopback_gateways(tmp_path: Path, gateway: Gateway) -> None:
    config = make_config(tmp_path, rc_message={"per_second": 1000, "burst_count": 1000})
    with running_server(config) as s, s.client() as c:
        a = s.register("alice")
        b = s.register("bob")
        # A literal blocked address is refused when set: it could never be delivered to.
        for url in (
            gateway.url,
            gateway.url.replace("127.0.0.1", "[::1]"),
            f"http://10.0.0.1{NOTIFY}",
            f"http://0.0.0.0:8080{NOTIFY}",
        ):
            _error(_set(c, b, _pusher(url, _key())), 400, "M_INVALID_PARAM")
        assert _list(c, b) == []
        # A name is accepted, and checked at delivery: localhost resolves to loopback.
        key = _key()
        assert _set(c, b, _pusher(_localhost_url(gateway), key)).status_code == 200
        room = _room(c, s, a, b)
        for i in range(3):
            _send(c, a, room, f"m{i}")
        deadline = time.monotonic() + 15
        while "pusher blocked" not in s.log_text():
            assert time.monotonic() < deadline, s.log_text()
            time.sleep(0.05)
        time.sleep(0.5)  # let every notification reach the guard
        r = c.get(f"{V3}/sync", headers=_auth(b))
        assert r.status_code == 200
        assert r.json()["rooms"]["join"][room]["unread_notifications"]["notification_count"] == 3
        assert [p["pushkey"] for p in _list(c, b)] == [key]  # kept: the whitelist may change
    assert gateway.for_key(key) == []
    log = s.log_text()
    assert log.count("pusher blocked") == 1, log  # one line per pusher, not per notification
    assert "retrying" not in log
    assert "Traceback" not in log
